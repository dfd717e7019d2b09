package api

import (
	"mime"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// A web page the operator visits can send requests to a server on
// loopback: simple cross-site POSTs (no preflight), and, through DNS
// rebinding, reads under a name the attacker controls. Three checks stop
// them, each cheap and done before anything else:
//
//   - the Host check: with Config.Hosts set, a request naming another host
//     is refused (421), which defeats DNS rebinding;
//   - the media type check: a /v1 body must say it is JSON (or YAML for a
//     definition), which no simple cross-site request can;
//   - the origin check: a request that changes state and carries a browser's
//     Origin header must come from the server's own origin or from one of
//     Config.CORSOrigins (403), which stops bodyless cross-site POSTs.
//
// CORS headers are sent only for Config.CORSOrigins.

// LoopbackHosts are the host names a server listening on a loopback
// address answers to, besides those configured.
var LoopbackHosts = []string{"localhost", "127.0.0.1", "::1"}

// Hosts returns the Host names a server listening on addr answers to: on a
// loopback address the loopback names and extra, elsewhere extra alone
// (none: every name). It is Config.Hosts for the server.
func Hosts(addr string, extra []string) []string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	ip := net.ParseIP(host)
	if host == "localhost" || (ip != nil && ip.IsLoopback()) {
		return append(slices.Clone(LoopbackHosts), extra...)
	}
	return slices.Clone(extra)
}

// checkHost refuses a request whose Host is not one Config.Hosts names.
// Health probes pass: they reveal nothing, and orchestrators probe by IP.
func (s *server) checkHost(r *http.Request) *Problem {
	if len(s.cfg.Hosts) == 0 || r.URL.Path == "/healthz" || r.URL.Path == "/readyz" {
		return nil
	}
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.Trim(host, "[]"), ".")
	for _, allowed := range s.cfg.Hosts {
		if strings.EqualFold(host, strings.Trim(allowed, "[]")) {
			return nil
		}
	}
	return newProblem(http.StatusMisdirectedRequest, TypeMisdirected,
		"this server does not answer to the host name "+quoteShort(r.Host)+"; add it to --allowed-hosts to allow it",
		ProblemDetail{Location: "header.Host", Message: "not an allowed host", Value: echoable(r.Host)})
}

// corsAllowed reports whether origin may call the API from a browser.
func (s *server) corsAllowed(origin string) bool {
	return slices.Contains(s.cfg.CORSOrigins, "*") || slices.Contains(s.cfg.CORSOrigins, strings.TrimSuffix(origin, "/"))
}

// sameOrigin reports whether a browser's Origin names the host the
// request was sent to.
func sameOrigin(origin string, r *http.Request) bool {
	u, err := url.Parse(origin)
	return err == nil && u.Host != "" && strings.EqualFold(u.Host, r.Host)
}

// cors sets the CORS headers for an allowed origin, answers preflights and
// refuses a state-changing request from another origin. It reports whether
// it answered the request.
func (s *server) cors(w http.ResponseWriter, r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return false
	}
	allowed := s.corsAllowed(origin)
	if allowed {
		h := w.Header()
		h.Set("Access-Control-Allow-Origin", origin)
		h.Add("Vary", "Origin")
		h.Set("Access-Control-Expose-Headers", "ETag, Location, Retry-After")
	}
	preflight := r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != ""
	switch {
	case preflight && allowed:
		h := w.Header()
		h.Set("Access-Control-Allow-Methods", "GET, HEAD, POST, PUT, DELETE")
		h.Set("Access-Control-Allow-Headers", "Content-Type, Accept, Idempotency-Key, If-Match, If-None-Match, Last-Event-ID")
		h.Set("Access-Control-Max-Age", "600")
		w.WriteHeader(http.StatusNoContent)
		return true
	case allowed || sameOrigin(origin, r):
		return false
	case preflight, !safeMethod(r.Method):
		writeProblem(w, r, newProblem(http.StatusForbidden, TypeCrossOrigin,
			"requests from the web origin "+quoteShort(origin)+" are not allowed; list it in --cors-origins to allow it",
			ProblemDetail{Location: "header.Origin", Message: "not an allowed origin", Value: echoable(origin)}))
		return true
	}
	return false
}

func safeMethod(m string) bool {
	return m == http.MethodGet || m == http.MethodHead || m == http.MethodOptions
}

// jsonMediaType reports whether mt is JSON: application/json or a
// structured +json type.
func jsonMediaType(mt string) bool {
	return mt == "application/json" || (strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json"))
}

// checkMediaType refuses a /v1 request body that does not say it is JSON
// (or, for a definition, YAML): a body without a Content-Type is not taken
// as JSON, as a browser sends such bodies cross-site without asking. A
// request without a body needs no Content-Type.
func checkMediaType(r *http.Request) *Problem {
	if r.ContentLength == 0 || safeMethod(r.Method) {
		return nil
	}
	want := "application/json"
	definitions := r.Method == http.MethodPost && r.URL.Path == "/v1/definitions"
	if definitions {
		want = "application/json, application/yaml or text/yaml"
	}
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		return newProblem(http.StatusUnsupportedMediaType, TypeUnsupportedMediaType,
			"the request has a body but no Content-Type; send "+want,
			ProblemDetail{Location: "header.Content-Type", Message: "missing"})
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err == nil && (jsonMediaType(mt) || (definitions && yamlTypes[mt])) {
		return nil
	}
	return newProblem(http.StatusUnsupportedMediaType, TypeUnsupportedMediaType,
		"the body is sent as "+quoteShort(ct)+"; send "+want,
		ProblemDetail{Location: "header.Content-Type", Message: "unsupported media type", Value: echoable(ct)})
}

// quoteShort quotes a header value for a message, cut to a readable length.
func quoteShort(s string) string {
	if len(s) > maxEchoedValue {
		s = s[:maxEchoedValue] + "…"
	}
	return `"` + strings.ToValidUTF8(s, "?") + `"`
}
