package api

import "net/http"

// RoutesOf returns the /v1 routes a handler from New registered, as
// "METHOD /path", and a function that reports the pattern its mux routes a
// request to ("" when none).
func RoutesOf(h http.Handler) (routes []string, pattern func(*http.Request) string) {
	s := serverOf(h)
	s.routesMu.Lock()
	routes = append(routes, s.routes...)
	s.routesMu.Unlock()
	return routes, func(r *http.Request) string {
		_, p := s.mux.Handler(r)
		return p
	}
}

func serverOf(h http.Handler) *server { return h.(*handler).s }
