package api

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Config wires the handlers to the rest of the server.
type Config struct {
	// Readiness checks, by name; /readyz is 200 only when all pass.
	Readiness map[string]ReadinessCheck
	// Gatherer serves /metrics. Default prometheus.DefaultGatherer.
	Gatherer prometheus.Gatherer
}

// New returns the server's HTTP handler.
func New(cfg Config) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", handleHealthz)
	mux.HandleFunc("GET /readyz", handleReadyz(cfg.Readiness))
	g := cfg.Gatherer
	if g == nil {
		g = prometheus.DefaultGatherer
	}
	mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
	return mux
}
