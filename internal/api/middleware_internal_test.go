package api

import (
	"bytes"
	"cmp"
	"compress/gzip"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func testServer(cfg Config) *server {
	cfg.MaxInFlight = max(cfg.MaxInFlight, 1)
	cfg.MaxLongPolls = max(cfg.MaxLongPolls, 1)
	if cfg.RequestTimeout == 0 {
		cfg.RequestTimeout = time.Minute
	}
	cfg.BodyTimeout = cmp.Or(cfg.BodyTimeout, time.Minute)
	cfg.MaxBodyBytes = cmp.Or(cfg.MaxBodyBytes, DefaultMaxBodyBytes)
	return &server{cfg: cfg, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
}

func decodeProblem(t *testing.T, rec *httptest.ResponseRecorder) Problem {
	t.Helper()
	if ct := rec.Header().Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("content type %q: %s", ct, rec.Body)
	}
	var p Problem
	if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil {
		t.Fatalf("decode %s: %v", rec.Body, err)
	}
	return p
}

// TestInFlightLimit fills the in-flight slots and checks that the next
// request is refused at once with a 503 that says when to retry, while
// health probes still answer.
func TestInFlightLimit(t *testing.T) {
	for _, c := range []struct{ name, blocked, next string }{
		{"normal", "/v1/sagas", "/v1/definitions"},
		{"long poll", "/v1/sagas/x/wait", "/v1/queues/q/tasks:poll"},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := testServer(Config{MaxInFlight: 1, MaxLongPolls: 1})
			entered, release := make(chan struct{}), make(chan struct{})
			h := s.middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == c.blocked {
					close(entered)
					<-release
				}
				w.WriteHeader(http.StatusNoContent)
			}))
			done := make(chan int)
			go func() {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, c.blocked, nil))
				done <- rec.Code
			}()
			<-entered

			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, c.next, nil))
			if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") != "1" {
				t.Fatalf("status %d, Retry-After %q", rec.Code, rec.Header().Get("Retry-After"))
			}
			if p := decodeProblem(t, rec); p.Type != TypeOverloaded {
				t.Fatalf("problem %+v", p)
			}
			rec = httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/healthz", nil))
			if rec.Code != http.StatusNoContent {
				t.Fatalf("health probe refused: %d", rec.Code)
			}

			close(release)
			if code := <-done; code != http.StatusNoContent {
				t.Fatalf("blocked request: %d", code)
			}
			rec = httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, c.next, nil))
			if rec.Code != http.StatusNoContent {
				t.Fatalf("after release: %d", rec.Code)
			}
		})
	}
}

func TestPanicIsAProblem(t *testing.T) {
	s := testServer(Config{})
	h := s.middleware(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic("bug") }))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/v1/sagas", nil))
	if rec.Code != http.StatusInternalServerError {
		t.Fatalf("status %d", rec.Code)
	}
	if p := decodeProblem(t, rec); p.Type != TypeInternal {
		t.Fatalf("problem %+v", p)
	}
}

func TestRequestTimeout(t *testing.T) {
	s := testServer(Config{RequestTimeout: time.Millisecond})
	var deadline time.Time
	h := s.middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		deadline, _ = r.Context().Deadline()
	}))
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/v1/sagas", nil))
	if deadline.IsZero() {
		t.Fatal("a /v1 request has no deadline")
	}
	deadline = time.Time{}
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/v1/sagas/x/wait", nil))
	if !deadline.IsZero() {
		t.Fatal("a long poll got the request timeout")
	}
}

func TestGzip(t *testing.T) {
	s := testServer(Config{})
	big := `{"items":"` + strings.Repeat("saga ", 4000) + `"}`
	h := s.middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body := `{"small":true}`
		switch r.URL.Path {
		case "/v1/big":
			body = big
		case "/v1/stream":
			w.Header().Set("Content-Type", "text/event-stream")
			w.WriteHeader(http.StatusOK)
			_, _ = io.WriteString(w, "data: "+big+"\n\n")
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		// Written in pieces, as encoders do.
		for chunk := range slicesOf(body, 1000) {
			_, _ = io.WriteString(w, chunk)
		}
	}))
	get := func(path, accept string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodGet, path, nil)
		if accept != "" {
			req.Header.Set("Accept-Encoding", accept)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}

	rec := get("/v1/big", "br, gzip;q=0.8")
	if rec.Header().Get("Content-Encoding") != "gzip" {
		t.Fatalf("a large JSON body was not compressed: %v", rec.Header())
	}
	zr, err := gzip.NewReader(rec.Body)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := io.ReadAll(zr)
	if err != nil || string(plain) != big {
		t.Fatalf("decompressed %d bytes, err %v", len(plain), err)
	}
	if rec.Body.Len() >= len(big)/4 {
		t.Fatalf("compressed to %d of %d bytes", rec.Body.Len(), len(big))
	}
	for _, c := range []struct{ path, accept string }{
		{"/v1/small", "gzip"}, {"/v1/big", ""}, {"/v1/big", "gzip;q=0"}, {"/v1/stream", "gzip"},
	} {
		rec := get(c.path, c.accept)
		if rec.Header().Get("Content-Encoding") != "" {
			t.Fatalf("%s with Accept-Encoding %q was compressed", c.path, c.accept)
		}
		if !bytes.Contains(rec.Body.Bytes(), []byte("saga")) && c.path != "/v1/small" {
			t.Fatalf("%s: body %.100s", c.path, rec.Body)
		}
	}
}

func slicesOf(s string, n int) func(func(string) bool) {
	return func(yield func(string) bool) {
		for len(s) > 0 {
			k := min(n, len(s))
			if !yield(s[:k]) {
				return
			}
			s = s[k:]
		}
	}
}
