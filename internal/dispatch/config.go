package dispatch

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/accord-saga/accord/internal/engine"
	"github.com/accord-saga/accord/internal/storage"
)

// Config configures a Push dispatcher. Zero fields take the documented
// defaults; negative durations and counts are refused by New.
type Config struct {
	// Complete records a call's result. Required; the server passes the
	// engine's CompleteTask. It is called from worker goroutines, at most
	// once per dispatched task, never for a task that was abandoned nor
	// for one whose outcome is unknown while its attempt has a timeout
	// (see Stats.Unknown): the engine's attempt timeout records those.
	Complete func(ctx context.Context, r engine.Result) error

	// Allow is the operator's allowlist of push targets (see Allowlist).
	// Empty refuses every push with code target_not_allowed; "*" allows
	// every target.
	Allow []string

	// Workers is the fixed number of goroutines performing calls. Default 64.
	Workers int
	// QueueSize bounds the tasks waiting for a worker. Default 4096. A task
	// dispatched while the queue is full is dropped: it stays claimed until
	// its claim expires, then it is delivered again.
	QueueSize int

	// DefaultAttemptTimeout applies to tasks that carry no attempt timeout.
	// Default 30s.
	DefaultAttemptTimeout time.Duration
	// MaxAttemptTimeout caps a task's attempt timeout. Default 15m.
	MaxAttemptTimeout time.Duration
	// PollInterval is the wait before calling again after a 202 Accepted
	// without a usable Retry-After. Default 1s.
	PollInterval time.Duration
	// MaxRetryAfter caps a 202 response's Retry-After. Default 30s.
	MaxRetryAfter time.Duration
	// MaxResponseBytes caps a response body. Default 1 MiB; at most the
	// engine's output limit (2 MiB).
	MaxResponseBytes int64
	// CompleteTimeout bounds one call of Complete. Default 10s.
	CompleteTimeout time.Duration

	// Breaker configures the circuit breaker of each endpoint.
	Breaker BreakerConfig
	// Bulkhead configures the concurrency cap of each endpoint.
	Bulkhead BulkheadConfig

	// TLS is the client TLS configuration (custom roots, client
	// certificates). Default: the system roots.
	TLS *tls.Config
	// DialTimeout bounds connection set-up. Default 5s.
	DialTimeout time.Duration
	// IdleConnTimeout closes keep-alive connections idle this long.
	// Default 90s.
	IdleConnTimeout time.Duration

	// Version goes into the User-Agent header, "accord/<Version>".
	// Default "dev".
	Version string
	// Propagate, if set, writes trace context into a call's headers (an
	// OpenTelemetry propagator's Inject). When it leaves no traceparent,
	// the task's is sent (set by the engine's tracer), else one with the
	// same derived ids, not sampled: the saga's trace id, so every call of
	// one saga shares it, and the attempt's span id as parent.
	Propagate func(ctx context.Context, t engine.Task, h http.Header)

	// OnBreakerChange, if set, is called when an endpoint's breaker changes
	// state ("closed", "open", "half-open"). It must not block.
	OnBreakerChange func(endpoint, from, to string)
	// Observe, if set, is called once per dispatched task when its handling
	// ends, with the endpoint (scheme://host:port, or "invalid" for a URL
	// that is not one), the outcome ("success", "failure", "retryable", or
	// "abandoned" when no result was reported) and the time from the start
	// of the call. It must not block.
	Observe func(endpoint, outcome string, d time.Duration)

	// Logger. Default slog.Default().
	Logger *slog.Logger
}

// BreakerConfig configures per-endpoint circuit breakers. Only transport
// errors, timeouts, 5xx and 429 responses count as failures.
type BreakerConfig struct {
	// ConsecutiveFailures opens the breaker after this many failures in a
	// row. Default 20.
	ConsecutiveFailures uint32
	// FailureRatio opens the breaker when failures/(failures+successes)
	// within Window reaches it, once MinRequests calls ended in the window.
	// Default 0.25. A negative value turns the ratio rule off.
	FailureRatio float64
	// MinRequests is the least number of ended calls in Window before the
	// ratio rule applies. Default 20.
	MinRequests uint32
	// Window is the rolling window of the ratio rule, kept in ten buckets.
	// Default 60s.
	Window time.Duration
	// OpenTimeout is how long an open breaker rejects calls before it lets
	// probes through (half-open). Default 5s.
	OpenTimeout time.Duration
	// HalfOpenProbes is how many calls a half-open breaker lets through;
	// that many successes close it, one failure opens it again. Default 1.
	HalfOpenProbes uint32
}

// BulkheadConfig configures per-endpoint concurrency caps.
type BulkheadConfig struct {
	// MaxConcurrent is the most calls in flight to one endpoint.
	// Default 32.
	MaxConcurrent int
	// MaxWait is how long a call waits for a free slot before it ends with
	// code bulkhead_full. Default 1s.
	MaxWait time.Duration
}

// Defaults of Config.
const (
	DefaultWorkers               = 64
	DefaultQueueSize             = 4096
	DefaultAttemptTimeout        = 30 * time.Second
	DefaultMaxAttemptTimeout     = 15 * time.Minute
	DefaultPollInterval          = time.Second
	DefaultMaxRetryAfter         = 30 * time.Second
	DefaultMaxResponseBytes      = 1 << 20
	DefaultCompleteTimeout       = 10 * time.Second
	DefaultDialTimeout           = 5 * time.Second
	DefaultIdleConnTimeout       = 90 * time.Second
	DefaultConsecutiveFailures   = 20
	DefaultFailureRatio          = 0.25
	DefaultMinRequests           = 20
	DefaultBreakerWindow         = 60 * time.Second
	DefaultOpenTimeout           = 5 * time.Second
	DefaultHalfOpenProbes        = 1
	DefaultBulkheadMaxConcurrent = 32
	DefaultBulkheadMaxWait       = time.Second

	// MaxResponseBytesLimit is the engine's limit on a step's output.
	MaxResponseBytesLimit = storage.MaxPayloadBytes / 2
	// MinPollInterval is the shortest wait between two calls of one
	// attempt answered 202, whatever Retry-After says: no tight loops.
	MinPollInterval = 100 * time.Millisecond
)

func (c *Config) withDefaults() Config {
	out := *c
	out.Workers = cmp.Or(out.Workers, DefaultWorkers)
	out.QueueSize = cmp.Or(out.QueueSize, DefaultQueueSize)
	out.DefaultAttemptTimeout = cmp.Or(out.DefaultAttemptTimeout, DefaultAttemptTimeout)
	out.MaxAttemptTimeout = cmp.Or(out.MaxAttemptTimeout, DefaultMaxAttemptTimeout)
	out.PollInterval = cmp.Or(out.PollInterval, DefaultPollInterval)
	out.MaxRetryAfter = cmp.Or(out.MaxRetryAfter, DefaultMaxRetryAfter)
	out.MaxResponseBytes = cmp.Or(out.MaxResponseBytes, DefaultMaxResponseBytes)
	out.CompleteTimeout = cmp.Or(out.CompleteTimeout, DefaultCompleteTimeout)
	out.DialTimeout = cmp.Or(out.DialTimeout, DefaultDialTimeout)
	out.IdleConnTimeout = cmp.Or(out.IdleConnTimeout, DefaultIdleConnTimeout)
	out.Version = cmp.Or(out.Version, "dev")
	out.Logger = cmp.Or(out.Logger, slog.Default())
	b := &out.Breaker
	b.ConsecutiveFailures = cmp.Or(b.ConsecutiveFailures, DefaultConsecutiveFailures)
	b.FailureRatio = cmp.Or(b.FailureRatio, DefaultFailureRatio)
	b.MinRequests = cmp.Or(b.MinRequests, DefaultMinRequests)
	b.Window = cmp.Or(b.Window, DefaultBreakerWindow)
	b.OpenTimeout = cmp.Or(b.OpenTimeout, DefaultOpenTimeout)
	b.HalfOpenProbes = cmp.Or(b.HalfOpenProbes, DefaultHalfOpenProbes)
	h := &out.Bulkhead
	h.MaxConcurrent = cmp.Or(h.MaxConcurrent, DefaultBulkheadMaxConcurrent)
	h.MaxWait = cmp.Or(h.MaxWait, DefaultBulkheadMaxWait)
	return out
}

// validate checks a configuration that has its defaults filled.
func (c *Config) validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("dispatch: config: "+format, args...))
	}
	if c.Complete == nil {
		bad("Complete is required")
	}
	if c.Workers < 1 || c.Workers > 100_000 {
		bad("Workers %d: must be 1..100000", c.Workers)
	}
	if c.QueueSize < 1 || c.QueueSize > 10_000_000 {
		bad("QueueSize %d: must be 1..10000000", c.QueueSize)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"DefaultAttemptTimeout", c.DefaultAttemptTimeout},
		{"MaxAttemptTimeout", c.MaxAttemptTimeout},
		{"PollInterval", c.PollInterval},
		{"MaxRetryAfter", c.MaxRetryAfter},
		{"CompleteTimeout", c.CompleteTimeout},
		{"DialTimeout", c.DialTimeout},
		{"IdleConnTimeout", c.IdleConnTimeout},
		{"Breaker.Window", c.Breaker.Window},
		{"Breaker.OpenTimeout", c.Breaker.OpenTimeout},
		{"Bulkhead.MaxWait", c.Bulkhead.MaxWait},
	} {
		if d.v < 0 {
			bad("%s %s: must not be negative", d.name, d.v)
		}
	}
	if c.MaxResponseBytes < 1 || c.MaxResponseBytes > MaxResponseBytesLimit {
		bad("MaxResponseBytes %d: must be 1..%d", c.MaxResponseBytes, MaxResponseBytesLimit)
	}
	if c.ratioOn() && c.Breaker.FailureRatio > 1 {
		bad("Breaker.FailureRatio %g: must be at most 1 (negative turns it off)", c.Breaker.FailureRatio)
	}
	if c.Bulkhead.MaxConcurrent < 1 {
		bad("Bulkhead.MaxConcurrent %d: must be at least 1", c.Bulkhead.MaxConcurrent)
	}
	return errors.Join(errs...)
}

// ratioOn reports whether the breaker's ratio rule is on.
func (c *Config) ratioOn() bool { return c.Breaker.FailureRatio > 0 }
