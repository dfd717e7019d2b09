package api

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strings"
	"time"
)

// middleware wraps the routes, outermost first: panic recovery, the debug
// request log, the host and origin checks (origin.go), the media type
// check, the body read (body.go), the in-flight limits, the request timeout
// and gzip. Health, readiness and metrics skip the limits and the timeout,
// so that probes answer under load.
func (s *server) middleware(next http.Handler) http.Handler {
	normal := make(chan struct{}, s.cfg.MaxInFlight)
	long := make(chan struct{}, s.cfg.MaxLongPolls)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		began := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				s.log.Error("panic serving request", "method", r.Method, "path", r.URL.Path, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
				if !sw.wroteHeader {
					writeProblem(sw, r, newProblem(http.StatusInternalServerError, TypeInternal, "the server failed; this is a bug"))
				}
			}
			if s.log.Enabled(r.Context(), slog.LevelDebug) {
				s.log.LogAttrs(r.Context(), slog.LevelDebug, "http request",
					slog.String("method", r.Method), slog.String("path", r.URL.Path),
					slog.Int("status", sw.status), slog.Int64("bytes", sw.bytes),
					slog.Duration("duration", time.Since(began)))
			}
		}()
		if p := s.checkHost(r); p != nil {
			writeProblem(sw, r, p)
			return
		}
		if s.cors(sw, r) {
			return
		}
		if !strings.HasPrefix(r.URL.Path, "/v1/") {
			next.ServeHTTP(sw, r)
			return
		}
		if p := cmp.Or(badRequestText(r), checkMediaType(r)); p != nil {
			writeProblem(sw, r, p)
			return
		}
		isLong := isLongPoll(r)
		// The body is read before a slot is taken: see readBody.
		if p := s.readBody(sw, r, isLong); p != nil {
			writeProblem(sw, r, p)
			return
		}
		sem := normal
		if isLong {
			sem = long
		}
		select {
		case sem <- struct{}{}:
			defer func() { <-sem }()
		default:
			writeProblem(sw, r, newProblem(http.StatusServiceUnavailable, TypeOverloaded,
				"too many requests in flight; retry after the Retry-After delay"))
			return
		}
		if !isLong {
			ctx, cancel := context.WithTimeout(r.Context(), s.cfg.RequestTimeout)
			defer cancel()
			r = r.WithContext(ctx)
		}
		w.Header().Add("Vary", "Accept-Encoding")
		if acceptsGzip(r) {
			gw := newGzipWriter(sw)
			defer gw.finish()
			next.ServeHTTP(gw, r)
			return
		}
		next.ServeHTTP(sw, r)
	})
}

// badRequestText refuses a request whose path, query or idempotency key is
// not UTF-8 or holds a control character (ident.Check): every name and id
// in them is compared with text columns and may travel in headers.
func badRequestText(r *http.Request) *Problem {
	if p := badName("path", r.URL.Path); p != nil {
		return p
	}
	for name, vs := range r.URL.Query() {
		for _, v := range vs {
			if p := badName("query", name+v); p != nil {
				return p
			}
		}
	}
	return badName("header.Idempotency-Key", r.Header.Get("Idempotency-Key"))
}

// isLongPoll reports whether a request may be held open for long: such
// requests have their own in-flight cap and bound their own duration.
func isLongPoll(r *http.Request) bool {
	p := r.URL.Path
	return strings.HasSuffix(p, "/tasks:poll") || strings.HasSuffix(p, "/wait") || strings.HasSuffix(p, "/watch") ||
		(strings.HasPrefix(p, "/v1/topics/") && strings.HasSuffix(p, "/receive"))
}

// routeProblems answers requests that match no route with a problem rather
// than the mux's plain-text 404 and 405.
func (s *server) routeProblems(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, pattern := mux.Handler(r); pattern != "" {
			mux.ServeHTTP(w, r)
			return
		}
		mux.ServeHTTP(&noRouteWriter{ResponseWriter: w, r: r}, r)
	})
}

// noRouteWriter turns the mux's 404 and 405 into problems; redirects (path
// cleaning) pass through.
type noRouteWriter struct {
	http.ResponseWriter
	r        *http.Request
	replaced bool
}

func (w *noRouteWriter) WriteHeader(code int) {
	switch code {
	case http.StatusNotFound:
		w.replaced = true
		writeProblem(w.ResponseWriter, w.r, newProblem(code, TypeNotFound, "no route for "+w.r.Method+" "+w.r.URL.Path))
	case http.StatusMethodNotAllowed:
		w.replaced = true
		writeProblem(w.ResponseWriter, w.r, newProblem(code, TypeMethodNotAllowed,
			fmt.Sprintf("%s is not allowed on %s; allowed: %s", w.r.Method, w.r.URL.Path, w.Header().Get("Allow"))))
	default:
		w.ResponseWriter.WriteHeader(code)
	}
}

func (w *noRouteWriter) Write(b []byte) (int, error) {
	if w.replaced {
		return len(b), nil
	}
	return w.ResponseWriter.Write(b)
}

// writeProblem sends a problem outside huma (middleware, unrouted paths).
func writeProblem(w http.ResponseWriter, r *http.Request, p *Problem) {
	h := w.Header()
	h.Del("X-Content-Type-Options")
	for k, vs := range p.headers {
		h[k] = vs
	}
	if p.Instance == "" {
		p.Instance = r.URL.Path
	}
	h.Set("Content-Type", "application/problem+json")
	w.WriteHeader(p.Status)
	if r.Method == http.MethodHead {
		return
	}
	_ = json.NewEncoder(w).Encode(p) // the client may be gone; nothing to do about it
}

// statusWriter remembers the status and size of a response, for the
// request log and for panic recovery.
type statusWriter struct {
	http.ResponseWriter
	status      int
	bytes       int64
	wroteHeader bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wroteHeader {
		w.status, w.wroteHeader = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if !w.wroteHeader {
		w.status, w.wroteHeader = http.StatusOK, true
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the connection (flushes and
// write deadlines of server-sent events).
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Flush passes flushes through, for writers that look for http.Flusher
// directly.
func (w *statusWriter) Flush() {
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}
