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
)

// Run serves until ctx is cancelled, then shuts down gracefully.
func Run(ctx context.Context, cfg Config) error {
	log := newLogger(cfg)
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
	log.Info("store open", "backend", info.Backend, "partitions", info.Partitions, "schema_version", info.SchemaVersion)

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
	push, err := dispatch.New(dispatch.Config{
		Complete: func(ctx context.Context, r engine.Result) error {
			if r.ErrorCode == dispatch.CodeTimeout {
				// The call timed out: the participant may or may not have
				// acted. That is not a failure to report but an unknown
				// outcome, which the attempt's own timeout records as such
				// (so the step is compensated if the saga rolls back).
				return nil
			}
			return eng.CompleteTask(ctx, r)
		},
		Version:  cfg.Version,
		Allow:    cfg.PushAllow,
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
		endpoint := cfg.OTLPEndpoint
		if strings.Contains(endpoint, "://") {
			endpoint = redactURL(endpoint)
		}
		log.Info("tracing on", "otlp_endpoint", endpoint, "sample_ratio", cfg.TraceSampleRatio)
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
		StallAfter: cfg.BusStallAfter, Logger: log, Registerer: reg})
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

	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("--addr %s: %w", cfg.Addr, err)
	}
	handler := api.New(api.Config{
		Engine:       eng,
		Bus:          b,
		Store:        store,
		Logger:       log,
		MaxBodyBytes: cfg.MaxBodyBytes,
		MaxInFlight:  cfg.MaxInFlight,
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
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	log.Info("accord server listening", "addr", ln.Addr().String(), "url", "http://"+ln.Addr().String())

	select {
	case err := <-serveErr:
		return fmt.Errorf("http server: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down", "timeout", cfg.ShutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Warn("http shutdown", "err", err)
	}
	<-serveErr
	log.Info("stopped")
	return nil
}

func newLogger(cfg Config) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.LogLevel)) // validated in Config.Validate
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}
