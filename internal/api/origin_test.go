package api_test

import (
	"context"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/accord-saga/accord/internal/api"
)

// raw sends a request with exactly the headers given (the Host header as
// "Host"), and a body only if body is not empty.
func (b *testBundle) raw(t *testing.T, method, path, body string, headers ...string) *response {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, b.srv.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		if headers[i] == "Host" {
			req.Host = headers[i+1]
			continue
		}
		req.Header.Set(headers[i], headers[i+1])
	}
	return b.send(t, req)
}

// TestMediaTypeRequired checks that a body is taken only when it says it
// is JSON (or YAML, for a definition): a web page can send a body without
// a Content-Type, or as text/plain, to a loopback server without asking.
func TestMediaTypeRequired(t *testing.T) {
	t.Parallel()
	b := setup(t)
	if _, _, err := b.eng.RegisterDefinition(context.Background(), []byte(orderDef)); err != nil {
		t.Fatal(err)
	}
	start := `{"definition": "order", "input": {"total": 1}}`
	for _, ct := range []string{"", "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/yaml", "bogus"} {
		for _, path := range []string{"/v1/sagas", "/v1/topics/t/messages"} {
			r := b.raw(t, http.MethodPost, path, start, "Content-Type", ct)
			if p := r.problem(t); p.Status != http.StatusUnsupportedMediaType || p.Type != api.TypeUnsupportedMediaType {
				t.Fatalf("POST %s as %q: %+v", path, ct, p)
			}
		}
	}
	for _, ct := range []string{"", "text/plain", "application/x-www-form-urlencoded"} {
		r := b.raw(t, http.MethodPost, "/v1/definitions", orderDef, "Content-Type", ct)
		if p := r.problem(t); p.Status != http.StatusUnsupportedMediaType {
			t.Fatalf("definition as %q: %+v", ct, p)
		}
	}
	wantStatus(t, b.raw(t, http.MethodPost, "/v1/sagas", start, "Content-Type", "application/json; charset=utf-8"), http.StatusCreated)
	wantStatus(t, b.raw(t, http.MethodPost, "/v1/sagas", start, "Content-Type", "application/vnd.accord+json"), http.StatusCreated)
	for _, ct := range []string{"application/yaml", "text/yaml", "application/x-yaml"} {
		wantStatus(t, b.raw(t, http.MethodPost, "/v1/definitions", orderDef, "Content-Type", ct), http.StatusOK)
	}
	// A request without a body needs no Content-Type.
	r := b.raw(t, http.MethodPost, "/v1/sagas/nosuch/cancel", "")
	if p := r.problem(t); p.Status != http.StatusNotFound {
		t.Fatalf("bodyless cancel: %+v", p)
	}
}

// TestHostCheck checks that a server on loopback answers only to loopback
// names and the configured ones: DNS rebinding gives a web page a name of
// its own that resolves to 127.0.0.1, and the Host header still names it.
func TestHostCheck(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{apiConfig: func(c *api.Config) { c.Hosts = api.Hosts("127.0.0.1:7780", []string{"accord.internal"}) }})
	for _, host := range []string{"evil.example", "evil.example:7780", "127.0.0.1.evil.example", "localhostx"} {
		for _, path := range []string{"/v1/sagas", "/metrics", "/v1/openapi.json"} {
			p := b.raw(t, http.MethodGet, path, "", "Host", host).problem(t)
			if p.Status != http.StatusMisdirectedRequest || p.Type != api.TypeMisdirected {
				t.Fatalf("GET %s with Host %s: %+v", path, host, p)
			}
		}
	}
	for _, host := range []string{"localhost", "localhost:7780", "127.0.0.1:1", "[::1]:7780", "LOCALHOST", "accord.internal", "accord.internal:80"} {
		wantStatus(t, b.raw(t, http.MethodGet, "/v1/sagas", "", "Host", host), http.StatusOK)
	}
	// Probes pass whatever the name.
	wantStatus(t, b.raw(t, http.MethodGet, "/healthz", "", "Host", "10.1.2.3:7780"), http.StatusOK)

	if got := api.Hosts("0.0.0.0:7780", nil); len(got) != 0 {
		t.Fatalf("hosts of a public address: %v", got)
	}
	if got := api.Hosts("[::1]:0", nil); !slices.Contains(got, "localhost") {
		t.Fatalf("hosts of [::1]: %v", got)
	}
}

// TestCrossOrigin checks that a browser on another web origin cannot change
// state, even with a request that needs no body (a cancel), and gets CORS
// headers only when its origin is configured.
func TestCrossOrigin(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{apiConfig: func(c *api.Config) { c.CORSOrigins = []string{"https://ops.example"} }})
	p := b.raw(t, http.MethodPost, "/v1/sagas/nosuch/cancel", "", "Origin", "http://evil.example").problem(t)
	if p.Status != http.StatusForbidden || p.Type != api.TypeCrossOrigin {
		t.Fatalf("cross-site cancel: %+v", p)
	}
	p = b.raw(t, http.MethodOptions, "/v1/sagas", "", "Origin", "http://evil.example", "Access-Control-Request-Method", "POST").problem(t)
	if p.Status != http.StatusForbidden {
		t.Fatalf("preflight from another origin: %+v", p)
	}
	r := b.raw(t, http.MethodGet, "/v1/sagas", "", "Origin", "http://evil.example")
	if wantStatus(t, r, http.StatusOK); r.header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("CORS header for an unlisted origin: %v", r.header)
	}
	// The server's own origin (its UI, a same-origin page) passes.
	host := strings.TrimPrefix(b.srv.URL, "http://")
	if p := b.raw(t, http.MethodPost, "/v1/sagas/nosuch/cancel", "", "Origin", "http://"+host).problem(t); p.Status != http.StatusNotFound {
		t.Fatalf("same-origin cancel: %+v", p)
	}

	r = b.raw(t, http.MethodOptions, "/v1/sagas", "", "Origin", "https://ops.example", "Access-Control-Request-Method", "POST")
	wantStatus(t, r, http.StatusNoContent)
	if r.header.Get("Access-Control-Allow-Origin") != "https://ops.example" || !strings.Contains(r.header.Get("Access-Control-Allow-Headers"), "Content-Type") {
		t.Fatalf("preflight headers: %v", r.header)
	}
	r = b.raw(t, http.MethodPost, "/v1/sagas/nosuch/cancel", "", "Origin", "https://ops.example")
	if p := r.problem(t); p.Status != http.StatusNotFound || r.header.Get("Access-Control-Allow-Origin") != "https://ops.example" {
		t.Fatalf("allowed origin: %+v %v", p, r.header)
	}
}
