package api_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/accord-saga/accord/internal/api"
)

// specRoutes serve the OpenAPI document itself; they are not operations
// of the API and so are not described in it.
var specRoutes = []string{
	"GET /v1/openapi.json", "GET /v1/openapi.yaml", "GET /v1/openapi-3.0.json", "GET /v1/openapi-3.0.yaml",
}

// TestOpenAPIMatchesRoutes holds the published document to the routes: every
// documented operation is routed, and every routed /v1 operation is
// documented.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{apiConfig: func(c *api.Config) { c.Breakers = func() any { return map[string]string{} } }})
	r := b.do(t, http.MethodGet, "/v1/openapi.json", nil)
	wantStatus(t, r, http.StatusOK)
	var doc struct {
		OpenAPI string                                `json:"openapi"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	r.json(t, &doc)
	if doc.OpenAPI != "3.1.0" {
		t.Fatalf("openapi %q", doc.OpenAPI)
	}
	routes, pattern := api.RoutesOf(b.handler)

	param := regexp.MustCompile(`\{[^}]+\}`)
	var documented []string
	for path, ops := range doc.Paths {
		if !strings.HasPrefix(path, "/v1/") {
			t.Errorf("documented path %s is not under /v1/", path)
		}
		for method := range ops {
			switch method {
			case "get", "post", "put", "patch", "delete", "head", "options":
			default:
				continue
			}
			m := strings.ToUpper(method)
			documented = append(documented, m+" "+path)
			// A request to the documented path must reach a handler, not the
			// mux's 404 or 405.
			concrete := param.ReplaceAllString(path, "x")
			req := httptest.NewRequest(m, concrete, nil)
			if got := pattern(req); got != m+" "+path {
				t.Errorf("documented %s %s: routed to %q", m, path, got)
			}
			res := b.do(t, m, concrete, nil)
			if p := res.header.Get("Content-Type"); p == "application/problem+json" {
				prob := res.problem(t)
				if prob.Type == api.TypeMethodNotAllowed || (prob.Type == api.TypeNotFound && strings.HasPrefix(prob.Detail, "no route")) {
					t.Errorf("documented %s %s: %s", m, path, res.body)
				}
			}
		}
	}
	if len(documented) < 15 {
		t.Fatalf("only %d operations documented: %v", len(documented), documented)
	}
	for _, route := range routes {
		if slices.Contains(specRoutes, route) {
			continue
		}
		if !slices.Contains(documented, route) {
			t.Errorf("route %s is not documented", route)
		}
	}
	for _, op := range documented {
		if !slices.Contains(routes, op) {
			t.Errorf("documented %s is not a registered route", op)
		}
	}
}
