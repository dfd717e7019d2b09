package server

import (
	"io"
	"log/slog"
	"net/http"
	"testing"
	"time"
)

// TestHTTPServerTimeouts checks that no connection is held without bound:
// idle keep-alives are closed, and headers, bodies and answers of requests
// outside the API's own deadlines have a limit.
func TestHTTPServerTimeouts(t *testing.T) {
	srv := newHTTPServer(http.NotFoundHandler(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	for name, d := range map[string]time.Duration{
		"IdleTimeout": srv.IdleTimeout, "ReadHeaderTimeout": srv.ReadHeaderTimeout,
		"ReadTimeout": srv.ReadTimeout, "WriteTimeout": srv.WriteTimeout,
	} {
		if d <= 0 {
			t.Errorf("%s is not set", name)
		}
	}
}
