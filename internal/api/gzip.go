package api

import (
	"compress/gzip"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"
)

// gzipMinBytes is the size from which a response is compressed. Below it
// gzip's header and the CPU cost outweigh the bytes saved; most single
// resources stay under it, lists and saga logs do not.
const gzipMinBytes = 4 << 10

var gzipPool = sync.Pool{New: func() any {
	w, _ := gzip.NewWriterLevel(io.Discard, gzip.BestSpeed) // the level is valid
	return w
}}

// acceptsGzip reports whether the client takes gzip (a q of 0 refuses it).
func acceptsGzip(r *http.Request) bool {
	for part := range strings.SplitSeq(r.Header.Get("Accept-Encoding"), ",") {
		coding, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		if !strings.EqualFold(strings.TrimSpace(coding), "gzip") {
			continue
		}
		if q, ok := strings.CutPrefix(strings.TrimSpace(params), "q="); ok {
			if v, err := strconv.ParseFloat(q, 64); err == nil && v == 0 {
				return false
			}
		}
		return true
	}
	return false
}

// gzipWriter holds back the start of a response until it knows the body is
// large and compressible, then compresses it; small bodies, event streams
// and bodies of other types pass through unchanged.
type gzipWriter struct {
	w       http.ResponseWriter
	status  int
	buf     []byte
	gz      *gzip.Writer
	decided bool
}

func newGzipWriter(w http.ResponseWriter) *gzipWriter { return &gzipWriter{w: w} }

func (g *gzipWriter) Header() http.Header { return g.w.Header() }

func (g *gzipWriter) WriteHeader(code int) {
	if g.decided || g.status != 0 {
		return
	}
	g.status = code
	// Informational, empty and not-modified responses have no body to
	// hold back.
	if code < 200 || code == http.StatusNoContent || code == http.StatusNotModified || !compressible(g.w.Header()) {
		g.passThrough()
	}
}

func (g *gzipWriter) Write(b []byte) (int, error) {
	if g.status == 0 {
		g.WriteHeader(http.StatusOK)
	}
	if g.decided {
		if g.gz != nil {
			return g.gz.Write(b)
		}
		return g.w.Write(b)
	}
	g.buf = append(g.buf, b...)
	if len(g.buf) >= gzipMinBytes {
		g.compress()
	}
	return len(b), nil
}

// Flush sends what is held back, uncompressed if it is still small.
func (g *gzipWriter) Flush() {
	if !g.decided {
		if g.status == 0 {
			g.status = http.StatusOK
		}
		g.passThrough()
	}
	if g.gz != nil {
		_ = g.gz.Flush()
	}
	_ = http.NewResponseController(g.w).Flush()
}

// Unwrap lets http.ResponseController reach the connection.
func (g *gzipWriter) Unwrap() http.ResponseWriter { return g.w }

func (g *gzipWriter) passThrough() {
	g.decided = true
	g.w.WriteHeader(g.status)
	if len(g.buf) > 0 {
		_, _ = g.w.Write(g.buf)
		g.buf = nil
	}
}

func (g *gzipWriter) compress() {
	g.decided = true
	h := g.w.Header()
	h.Set("Content-Encoding", "gzip")
	h.Del("Content-Length")
	g.w.WriteHeader(g.status)
	g.gz = gzipPool.Get().(*gzip.Writer)
	g.gz.Reset(g.w)
	_, _ = g.gz.Write(g.buf)
	g.buf = nil
}

// finish ends the response once the handler has returned.
func (g *gzipWriter) finish() {
	if !g.decided {
		if g.status == 0 && len(g.buf) == 0 {
			return // nothing written: net/http sends its implicit 200
		}
		if g.status == 0 {
			g.status = http.StatusOK
		}
		g.passThrough()
	}
	if g.gz != nil {
		_ = g.gz.Close()
		g.gz.Reset(io.Discard)
		gzipPool.Put(g.gz)
		g.gz = nil
	}
}

// compressible reports whether a response of these headers is worth
// compressing: JSON and YAML documents that are not already encoded.
func compressible(h http.Header) bool {
	if h.Get("Content-Encoding") != "" {
		return false
	}
	mt, _, err := mime.ParseMediaType(h.Get("Content-Type"))
	if err != nil {
		return false
	}
	return mt == "application/json" || strings.HasSuffix(mt, "+json") || strings.Contains(mt, "yaml")
}
