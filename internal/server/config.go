package server

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/accord-saga/accord/internal/bus"
	"github.com/accord-saga/accord/internal/redact"
	"github.com/accord-saga/accord/internal/storage"
)

// Config is the whole configuration of a server. DefaultConfig fills every
// field; the command line and ACCORD_* variables override it.
type Config struct {
	// Addr is the HTTP listen address. Default 127.0.0.1:7780.
	Addr string
	// DataDir holds the embedded SQLite store. Default "accord-data".
	DataDir string
	// DatabaseURL selects PostgreSQL instead of the embedded store.
	DatabaseURL string
	// DatabaseSchema is the PostgreSQL schema. Default "accord".
	DatabaseSchema string
	// Partitions is the partition count of a new store. Default 64.
	Partitions int
	// Durability of the embedded store: "full" (default) or "normal".
	Durability string
	// NodeID names this node in partition leases. Default "local" embedded,
	// host name and process id with PostgreSQL.
	NodeID string
	// LeaseTTL is how long a partition lease lasts unless renewed.
	// Default 10s.
	LeaseTTL time.Duration
	// ShutdownTimeout bounds a graceful shutdown. Default 30s.
	ShutdownTimeout time.Duration
	// Retention is how long a finished saga is kept. Default 30 days.
	Retention time.Duration
	// IdempotencyTTL is how long a start's idempotency key is remembered.
	// Default 24h.
	IdempotencyTTL time.Duration
	// BusStallAfter is how long a bus message may stay unfinished by a
	// consumer group before its flow is reported as stalled. Default 5m.
	BusStallAfter time.Duration
	// MaxTopics and MaxGroups cap the bus's topics and consumer groups
	// (over all topics); a creation past a cap is refused with 422.
	// Defaults 1,000 and 10,000.
	MaxTopics, MaxGroups int
	// PushAllow lists the HTTP endpoints push steps and webhooks may
	// call: URL patterns such as http://127.0.0.1:* or CIDRs such as
	// 10.0.0.0/8; "*" allows every target. Default (empty): on a loopback
	// Addr, LoopbackPushAllow; on any other, none, so push steps fail with
	// target_not_allowed until the operator allows their endpoints. See
	// EffectivePushAllow.
	PushAllow []string
	// PushWorkers bounds concurrent push calls. Default 64.
	PushWorkers int
	// PushBreakerFailures opens an endpoint's circuit breaker after this many
	// consecutive failures. Default 20.
	PushBreakerFailures int
	// PushBreakerOpen is how long an open breaker rejects calls before a
	// half-open probe. Default 5s.
	PushBreakerOpen time.Duration
	// PushBulkhead caps concurrent calls per endpoint. Default 32.
	PushBulkhead int
	// PushBulkheadWait is how long a call waits for a bulkhead slot.
	// Default 1s.
	PushBulkheadWait time.Duration
	// MaxBodyBytes caps an API request body. Default 1 MiB.
	MaxBodyBytes int64
	// MaxInFlight caps API requests served at once; beyond it the server
	// answers 503 with Retry-After at once (fail fast). Default 1024.
	MaxInFlight int
	// AllowedHosts lists host names (no port) the API answers to besides
	// the loopback names; a request naming another host is refused with
	// 421. On a loopback Addr the loopback names are always allowed; on
	// another address an empty list allows every name. Default empty.
	AllowedHosts []string
	// CORSOrigins lists the web origins (scheme://host[:port], or "*")
	// browsers may call the API from. Default none.
	CORSOrigins []string
	// OTLPEndpoint is the OTLP/HTTP collector spans are exported to: a URL
	// (http://host:4318; the path defaults to /v1/traces) or host:port
	// (TLS unless OTLPInsecure). Default empty: tracing off.
	OTLPEndpoint string
	// OTLPInsecure exports to a host:port endpoint without TLS. Default
	// false.
	OTLPInsecure bool
	// TraceSampleRatio is the share of sagas traced, in (0, 1]. Default 1.
	TraceSampleRatio float64
	// Version is the binary's version, sent as accord/VERSION in the
	// User-Agent of push calls. Set by the command, not a flag.
	Version string
	// LogLevel is debug, info (default), warn or error.
	LogLevel string
	// LogFormat is text (default) or json.
	LogFormat string
}

// LoopbackPushAllow is the push allowlist of a server that listens on a
// loopback address and is given none: participants on the same machine.
// A server reachable from other machines allows nothing by default, since
// a definition registered through it could otherwise make it call its own
// host's services.
var LoopbackPushAllow = []string{"http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"}

// EffectivePushAllow returns the push allowlist in force, and whether it is
// the loopback default: PushAllow when it is given; otherwise
// LoopbackPushAllow when Addr is a loopback address (127.0.0.0/8, ::1 or
// localhost); otherwise none.
func (c *Config) EffectivePushAllow() (allow []string, loopbackDefault bool) {
	if len(c.PushAllow) > 0 {
		return c.PushAllow, false
	}
	if loopbackAddr(c.Addr) {
		return append([]string(nil), LoopbackPushAllow...), true
	}
	return nil, false
}

// loopbackAddr reports whether a listen address accepts connections from
// this machine only. An empty host (every interface) does not.
func loopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

// DefaultConfig returns the defaults documented on Config.
func DefaultConfig() Config {
	return Config{
		Addr:                "127.0.0.1:7780",
		DataDir:             "accord-data",
		DatabaseSchema:      "accord",
		Partitions:          storage.DefaultPartitions,
		Durability:          "full",
		LeaseTTL:            10 * time.Second,
		ShutdownTimeout:     30 * time.Second,
		MaxBodyBytes:        1 << 20,
		MaxInFlight:         1024,
		TraceSampleRatio:    1,
		Retention:           30 * 24 * time.Hour,
		IdempotencyTTL:      24 * time.Hour,
		BusStallAfter:       5 * time.Minute,
		MaxTopics:           bus.DefaultMaxTopics,
		MaxGroups:           bus.DefaultMaxGroups,
		PushWorkers:         64,
		PushBreakerFailures: 20,
		PushBreakerOpen:     5 * time.Second,
		PushBulkhead:        32,
		PushBulkheadWait:    time.Second,
		LogLevel:            "info",
		LogFormat:           "text",
	}
}

// Validate reports the first bad setting, naming its flag.
func (c *Config) Validate() error {
	var errs []error
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		errs = append(errs, fmt.Errorf("--addr %q: %w", c.Addr, err))
	}
	if c.DatabaseURL == "" && strings.TrimSpace(c.DataDir) == "" {
		errs = append(errs, errors.New("--data must not be empty"))
	}
	if c.DatabaseURL != "" {
		u, err := url.Parse(c.DatabaseURL)
		if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
			errs = append(errs, fmt.Errorf("--database-url: want postgres://user@host:port/db, got %q", redact.URL(c.DatabaseURL)))
		}
	}
	if c.Partitions < 1 || c.Partitions > storage.MaxPartitions {
		errs = append(errs, fmt.Errorf("--partitions %d: must be 1..%d", c.Partitions, storage.MaxPartitions))
	}
	if c.Durability != "full" && c.Durability != "normal" {
		errs = append(errs, fmt.Errorf("--durability %q: must be full or normal", c.Durability))
	}
	if c.LeaseTTL < time.Second {
		errs = append(errs, fmt.Errorf("--lease-ttl %s: must be at least 1s", c.LeaseTTL))
	}
	if c.ShutdownTimeout <= 0 {
		errs = append(errs, fmt.Errorf("--shutdown-timeout %s: must be positive", c.ShutdownTimeout))
	}
	if c.MaxBodyBytes < 1<<10 || c.MaxInFlight < 1 {
		errs = append(errs, fmt.Errorf("--max-body-bytes must be at least 1024 and --max-in-flight at least 1"))
	}
	if c.MaxTopics < 1 || c.MaxGroups < 1 {
		errs = append(errs, fmt.Errorf("--max-topics and --max-groups must be at least 1"))
	}
	if c.BusStallAfter < time.Second {
		return fmt.Errorf("--bus-stall-after must be at least 1s, got %s", c.BusStallAfter)
	}
	if c.Retention < time.Minute || c.IdempotencyTTL < time.Minute {
		errs = append(errs, fmt.Errorf("--retention and --idempotency-ttl must be at least 1m"))
	}
	if c.PushWorkers < 1 || c.PushBulkhead < 1 || c.PushBreakerFailures < 1 {
		errs = append(errs, fmt.Errorf("--push-workers, --push-bulkhead and --push-breaker-failures must be at least 1"))
	}
	if c.PushBreakerOpen <= 0 || c.PushBulkheadWait < 0 {
		errs = append(errs, fmt.Errorf("--push-breaker-open must be positive and --push-bulkhead-wait not negative"))
	}
	for _, h := range c.AllowedHosts {
		if h == "" || strings.ContainsAny(h, "/: ") && net.ParseIP(strings.Trim(h, "[]")) == nil {
			errs = append(errs, fmt.Errorf("--allowed-hosts %q: want a host name or IP address without port", h))
		}
	}
	for _, o := range c.CORSOrigins {
		if u, err := url.Parse(o); o != "*" && (err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || strings.Trim(u.Path, "/") != "") {
			errs = append(errs, fmt.Errorf("--cors-origins %q: want scheme://host[:port] or *", o))
		}
	}
	if c.OTLPEndpoint != "" {
		if _, err := otlpOptions(c.OTLPEndpoint, c.OTLPInsecure); err != nil {
			errs = append(errs, err)
		}
	}
	if !(c.TraceSampleRatio > 0 && c.TraceSampleRatio <= 1) {
		errs = append(errs, fmt.Errorf("--trace-sample-ratio %g: must be in (0, 1]", c.TraceSampleRatio))
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("--log-level %q: must be debug, info, warn or error", c.LogLevel))
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		errs = append(errs, fmt.Errorf("--log-format %q: must be text or json", c.LogFormat))
	}
	return errors.Join(errs...)
}

// Secrets returns the secret values the configuration holds: the database
// password, secret parameters of the database and OTLP URLs, and the OTLP
// headers (OTEL_EXPORTER_OTLP_HEADERS, which usually carry an API key).
// The server's log masks them wherever they appear.
func (c *Config) Secrets() []string {
	out := append(redact.Secrets(c.DatabaseURL), redact.Secrets(c.OTLPEndpoint)...)
	for _, name := range []string{"OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS"} {
		for _, kv := range strings.Split(os.Getenv(name), ",") {
			if _, v, ok := strings.Cut(kv, "="); ok && len(strings.TrimSpace(v)) >= 3 {
				out = append(out, strings.TrimSpace(v))
			}
		}
	}
	return out
}
