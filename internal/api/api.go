package api

import (
	"cmp"
	"context"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/danielgtaylor/huma/v2"
	"github.com/danielgtaylor/huma/v2/adapters/humago"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/accord-saga/accord/internal/bus"
	"github.com/accord-saga/accord/internal/engine"
	"github.com/accord-saga/accord/internal/storage"
)

// Store is the part of the store the API reads directly: definition
// records (with their registration times), listings and saga logs.
// storage.Driver satisfies it.
type Store interface {
	DefinitionGet(ctx context.Context, name string, version int) (storage.Definition, error)
	DefinitionList(ctx context.Context, params *storage.DefinitionListParams) ([]storage.Definition, error)
	StreamRead(ctx context.Context, params *storage.StreamReadParams) ([]storage.Event, error)
	Info() storage.Info
}

// Config wires the handlers to the rest of the server. Zero fields take the
// documented defaults.
type Config struct {
	// Readiness checks, by name; /readyz is 200 only when all pass.
	Readiness map[string]ReadinessCheck
	// Gatherer serves /metrics. Default prometheus.DefaultGatherer.
	Gatherer prometheus.Gatherer

	// Engine runs the sagas. Without Engine and Store only /healthz,
	// /readyz and /metrics are served.
	Engine *engine.Engine
	// Bus serves the event bus endpoints (/v1/topics, /v1/traces,
	// /v1/bus). Optional: without it they are not served.
	Bus *bus.Bus
	// Store is read for definition listings and saga logs.
	Store Store
	// Logger receives request logs at debug level and unexpected failures
	// at warn. Default slog.Default().
	Logger *slog.Logger
	// MaxBodyBytes caps a request body; a larger one is a 413. Default
	// 1 MiB.
	MaxBodyBytes int64
	// MaxInFlight caps the /v1 requests served at once, long polls apart;
	// beyond it a request is refused at once with 503 overloaded. Default
	// 1024.
	MaxInFlight int
	// MaxLongPolls caps the long polls (task polls, saga waits, watches and
	// bus receives) open at once, beyond which they are refused like
	// MaxInFlight. They have their own cap as each holds its slot for up
	// to a minute.
	// Default 4096.
	MaxLongPolls int
	// RequestTimeout bounds a /v1 request other than a long poll. Default
	// 30s.
	RequestTimeout time.Duration
	// BodyTimeout bounds the arrival of a request body, which is read
	// before the request takes an in-flight slot; a slower body is a 408.
	// Default 30s.
	BodyTimeout time.Duration
	// Hosts, if set, lists the host names (no port) requests may name in
	// their Host header; a request naming another is refused with 421,
	// which stops DNS rebinding. Health probes are exempt. Hosts returns
	// the list for a listen address. Default empty: any host.
	Hosts []string
	// CORSOrigins lists the web origins (scheme://host[:port], or "*")
	// that browsers may call the API from. A state-changing request
	// carrying an Origin header that is neither listed nor the server's own
	// is refused with 403. Default none.
	CORSOrigins []string
	// Breakers, if set, returns a JSON-able snapshot of the push circuit
	// breakers, served at GET /v1/breakers.
	Breakers func() any
}

// Defaults.
const (
	DefaultMaxBodyBytes   = 1 << 20
	DefaultMaxInFlight    = 1024
	DefaultMaxLongPolls   = 4096
	DefaultRequestTimeout = 30 * time.Second
	DefaultBodyTimeout    = 30 * time.Second
)

// logLevelUnavailable is the level of a request that failed for a reason
// other than its input (storage down): worth a line, not an alarm, as
// readiness and metrics report outages.
const logLevelUnavailable = slog.LevelWarn

func errAttr(err error) slog.Attr { return slog.String("err", err.Error()) }

// server holds the handlers' dependencies.
type server struct {
	cfg     Config
	eng     *engine.Engine
	store   Store
	log     *slog.Logger
	mux     *http.ServeMux
	api     huma.API
	defLock stripedLock

	// routes lists every /v1 method and pattern registered, for the test
	// that holds the OpenAPI document to the routes.
	routesMu sync.Mutex
	routes   []string
}

// New returns the server's HTTP handler.
func New(cfg Config) http.Handler {
	cfg.MaxBodyBytes = cmp.Or(cfg.MaxBodyBytes, DefaultMaxBodyBytes)
	cfg.MaxInFlight = cmp.Or(cfg.MaxInFlight, DefaultMaxInFlight)
	cfg.MaxLongPolls = cmp.Or(cfg.MaxLongPolls, DefaultMaxLongPolls)
	cfg.RequestTimeout = cmp.Or(cfg.RequestTimeout, DefaultRequestTimeout)
	cfg.BodyTimeout = cmp.Or(cfg.BodyTimeout, DefaultBodyTimeout)
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &server{cfg: cfg, eng: cfg.Engine, store: cfg.Store, log: cfg.Logger, mux: http.NewServeMux()}

	s.mux.HandleFunc("GET /healthz", handleHealthz)
	s.mux.HandleFunc("GET /readyz", handleReadyz(cfg.Readiness))
	g := cfg.Gatherer
	if g == nil {
		g = prometheus.DefaultGatherer
	}
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))

	if s.eng != nil && s.store != nil {
		s.api = huma.NewAPI(humaConfig(), &recordingAdapter{Adapter: humago.NewAdapter(s.mux, ""), s: s})
		s.registerDefinitions()
		s.registerSagas()
		s.registerWatch()
		s.registerTasks()
		s.registerSystem()
		if cfg.Bus != nil {
			s.registerBus()
		}
	}
	return &handler{Handler: s.middleware(s.routeProblems(s.mux)), s: s}
}

// handler is the API's http.Handler; it keeps its server for tests.
type handler struct {
	http.Handler
	s *server
}

func humaConfig() huma.Config {
	return huma.Config{
		OpenAPI: &huma.OpenAPI{
			OpenAPI: "3.1.0",
			Info: &huma.Info{
				Title:   "Accord API",
				Version: "1",
				Description: "Accord coordinates operations that span several services: saga definitions, " +
					"saga runs, and the task queues pull workers serve. Errors are RFC 9457 problem details " +
					"whose `type` is stable (urn:accord:problem:...).",
			},
			Components: &huma.Components{
				Schemas: huma.NewMapRegistry("#/components/schemas/", huma.DefaultSchemaNamer),
			},
		},
		OpenAPIPath:   "/v1/openapi",
		Formats:       huma.DefaultFormats,
		DefaultFormat: "application/json",
	}
}

// recordingAdapter registers routes on the mux and remembers them.
type recordingAdapter struct {
	huma.Adapter
	s *server
}

func (a *recordingAdapter) Handle(op *huma.Operation, handler func(huma.Context)) {
	a.s.routesMu.Lock()
	a.s.routes = append(a.s.routes, op.Method+" "+op.Path)
	a.s.routesMu.Unlock()
	a.Adapter.Handle(op, handler)
}

// operation fills the fields every operation shares: the body limit (huma
// refuses a body of exactly its limit, hence the +1), no body read timeout
// (the middleware has read the body already; huma's would be left on the
// connection and end a long poll early) and the documented errors.
func (s *server) operation(op huma.Operation, errs ...int) huma.Operation {
	op.MaxBodyBytes = s.cfg.MaxBodyBytes + 1
	op.BodyReadTimeout = -1
	op.Errors = append(op.Errors, errs...)
	op.Errors = append(op.Errors, http.StatusServiceUnavailable)
	return op
}

// stripedLock serializes definition registrations that carry If-Match per
// name, so that the check of the latest version and the registration are
// one step on this node.
type stripedLock struct {
	mu [64]sync.Mutex
}

func (l *stripedLock) lock(name string) func() {
	var h uint32 = 2166136261
	for i := 0; i < len(name); i++ {
		h = (h ^ uint32(name[i])) * 16777619
	}
	m := &l.mu[h%uint32(len(l.mu))]
	m.Lock()
	return m.Unlock
}
