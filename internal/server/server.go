package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/accord-saga/accord/internal/api"
	"github.com/accord-saga/accord/internal/buildinfo"
	"github.com/accord-saga/accord/internal/bus"
	"github.com/accord-saga/accord/internal/dispatch"
	"github.com/accord-saga/accord/internal/engine"
	"github.com/accord-saga/accord/internal/redact"
)

// Run serves until ctx is cancelled, then shuts down gracefully.
//
// It takes the listen address before it opens the store, so that a server
// that cannot listen fails without touching a store another server may be
// running on; and the embedded store refuses a second server outright.
func Run(ctx context.Context, cfg Config) error {
	log := newLogger(cfg)
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("--addr %s: %w", cfg.Addr, err)
	}
	defer ln.Close() // unless Serve took it; closing it twice is harmless
	store, err := OpenStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer func() {
		if err := store.Close(); err != nil {
			log.Error("close store", "err", err)
		}
	}()
	info := store.Info()
	log.Info("store open", append(dataLocation(cfg), "backend", info.Backend, "partitions", info.Partitions,
		"schema_version", info.SchemaVersion, "version", cfg.Version)...)

	nodeID := cfg.NodeID
	if nodeID == "" {
		nodeID = "local"
		if cfg.DatabaseURL != "" {
			host, _ := os.Hostname()
			nodeID = fmt.Sprintf("%s-%d", host, os.Getpid())
		}
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		buildinfo.Collector(buildinfo.Read(), info.SchemaVersion))
	// The dispatcher reports results to the engine, and the engine hands
	// tasks to the dispatcher: the closure breaks the cycle.
	var eng *engine.Engine
	allow := logPushAllow(log, cfg, ln.Addr().String())
	push, err := dispatch.New(dispatch.Config{
		Complete: func(ctx context.Context, r engine.Result) error {
			return eng.CompleteTask(ctx, r)
		},
		Version:  cfg.Version,
		Allow:    allow,
		Workers:  cfg.PushWorkers,
		Breaker:  dispatch.BreakerConfig{ConsecutiveFailures: uint32(cfg.PushBreakerFailures), OpenTimeout: cfg.PushBreakerOpen},
		Bulkhead: dispatch.BulkheadConfig{MaxConcurrent: cfg.PushBulkhead, MaxWait: cfg.PushBulkheadWait},
		Logger:   log,
	})
	if err != nil {
		return fmt.Errorf("push dispatch: %w", err)
	}
	reg.MustRegister(pushCollector{push: push})
	tracer, err := newTracer(ctx, cfg, log)
	if err != nil {
		return err
	}
	var engTracer engine.Tracer // stays a nil interface when tracing is off
	if tracer != nil {
		engTracer = tracer
		// Deferred before the engine's Stop, so it runs after it: the
		// spans of the last commits are exported too.
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
			defer cancel()
			if err := tracer.Shutdown(sctx); err != nil {
				log.Warn("stop tracing", "err", err)
			}
		}()
		log.Info("tracing on", "otlp_endpoint", redact.URL(cfg.OTLPEndpoint), "sample_ratio", cfg.TraceSampleRatio)
	}
	// The engine tells the bus when a commit published to a topic, so that
	// waiting receivers wake at once; the bus publishes through the engine.
	var b *bus.Bus
	eng, err = engine.New(engine.Config{Store: store, NodeID: nodeID, LeaseTTL: cfg.LeaseTTL, Logger: log, Push: push, Registerer: reg,
		Retention: cfg.Retention, IdempotencyTTL: cfg.IdempotencyTTL, CheckTarget: push.CheckURL, Tracer: engTracer,
		OnPublish: func(topic string) { b.Notify(topic) }})
	if err != nil {
		return err
	}
	b, err = bus.New(bus.Config{Store: store, Publisher: eng, Sagas: eng, Webhooks: push, CheckURL: push.CheckURL,
		StallAfter: cfg.BusStallAfter, MaxTopics: cfg.MaxTopics, MaxGroups: cfg.MaxGroups, Logger: log, Registerer: reg})
	if err != nil {
		return err
	}
	if err := eng.Start(ctx); err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
		defer cancel()
		if err := eng.Stop(sctx); err != nil {
			log.Error("stop engine", "err", err)
		}
	}()
	// Deferred after the engine's Stop, so it runs first at shutdown:
	// calls in flight finish and report to a running engine.
	if err := push.Start(context.WithoutCancel(ctx)); err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
		defer cancel()
		if err := push.Stop(sctx); err != nil {
			log.Warn("stop push dispatch", "err", err)
		}
	}()
	log.Info("engine started", "node", nodeID, "partitions_owned", eng.OwnedPartitions())
	// Deferred after push's Stop, so it runs before it: webhook runners
	// finish their calls while the dispatcher still serves them.
	if err := b.Start(ctx); err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
		defer cancel()
		if err := b.Stop(sctx); err != nil {
			log.Warn("stop bus", "err", err)
		}
	}()

	handler := api.New(api.Config{
		Engine:       eng,
		Bus:          b,
		Store:        store,
		Logger:       log,
		MaxBodyBytes: cfg.MaxBodyBytes,
		MaxInFlight:  cfg.MaxInFlight,
		Hosts:        api.Hosts(cfg.Addr, cfg.AllowedHosts),
		CORSOrigins:  cfg.CORSOrigins,
		Breakers:     func() any { return map[string]any{"breakers": push.Breakers()} },
		Gatherer:     reg,
		Readiness: map[string]api.ReadinessCheck{
			"partitions": func(context.Context) error {
				if n := eng.OwnedPartitions(); n == 0 {
					return fmt.Errorf("0/%d owned", eng.Partitions())
				}
				return nil
			},
			"storage": func(ctx context.Context) error {
				_, err := store.Now(ctx)
				return err
			},
		},
	})
	srv := newHTTPServer(handler, log)
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	log.Info("accord server listening", "addr", ln.Addr().String(), "url", "http://"+ln.Addr().String())

	select {
	case err := <-serveErr:
		return fmt.Errorf("http server: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down: no new work; calls and requests in flight finish", "timeout", cfg.ShutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	// Start nothing new, at once: the engine dispatches no attempt and
	// hands no task to a poll, the dispatcher starts no call, and the bus
	// delivers no message. The engine still records results, so the calls
	// in flight, and the requests of workers reporting theirs, finish and
	// report, within the one timeout.
	eng.Quiesce()
	push.Quiesce()
	busStopped := make(chan error, 1)
	go func() { busStopped <- b.Stop(sctx) }()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Warn("http shutdown: requests cut off at the timeout", "err", err)
		_ = srv.Close()
	}
	<-serveErr
	if err := push.Stop(sctx); err != nil {
		log.Warn("stop push dispatch", "err", err)
	}
	if err := <-busStopped; err != nil {
		log.Warn("stop bus", "err", err)
	}
	// The deferred stops follow: the engine commits its last batches and
	// releases its leases, then the store closes.
	log.Info("stopped")
	return nil
}

// logPushAllow returns the push allowlist in force for a server listening
// on addr, and says in the log what it allows and why.
func logPushAllow(log *slog.Logger, cfg Config, addr string) []string {
	cfg.Addr = addr
	allow, loopback := cfg.EffectivePushAllow()
	switch {
	case loopback:
		log.Info("push targets allowed: loopback only (the default on a loopback address; --push-allow replaces it)", "push_allow", strings.Join(allow, ","))
	case len(allow) > 0:
		log.Info("push targets allowed", "push_allow", strings.Join(allow, ","))
	default:
		log.Warn("push targets allowed: none (the default on a non-loopback address); push steps and webhooks fail with target_not_allowed until --push-allow lists their endpoints")
	}
	return allow
}

// newHTTPServer returns the API's HTTP server. Its timeouts bound what a
// client can hold: headers must arrive within 10s, a keep-alive connection
// idle for 2 minutes is closed, and a request that is not an API call
// (metrics) has a minute to be read and two to be answered. The API sets
// each request's deadlines itself (a long poll or watch outlasts these).
func newHTTPServer(handler http.Handler, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       time.Minute,
		WriteTimeout:      2 * time.Minute,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}

func newLogger(cfg Config) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.LogLevel)) // validated in Config.Validate
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler = slog.NewTextHandler(os.Stderr, opts)
	if cfg.LogFormat == "json" {
		h = slog.NewJSONHandler(os.Stderr, opts)
	}
	return slog.New(redact.NewHandler(h, cfg.Secrets()))
}
