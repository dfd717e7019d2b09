package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/accord-saga/accord/internal/redact"
	"github.com/accord-saga/accord/internal/server"
)

// secretFile is a --X-file flag: the value of --X, read from a file (a
// mounted secret) so that it is not on the command line or in the
// environment.
type secretFile struct {
	flag string  // the flag it stands for
	dst  *string // that flag's value
	path string
}

// resolve reads the file, if one is given, into the flag's value.
func (s *secretFile) resolve() error {
	if s.path == "" {
		return nil
	}
	if *s.dst != "" {
		return fmt.Errorf("--%s and --%s-file are both set; give one", s.flag, s.flag)
	}
	b, err := os.ReadFile(s.path)
	if err != nil {
		return fmt.Errorf("--%s-file: %w", s.flag, err)
	}
	*s.dst = strings.TrimRight(string(b), "\r\n")
	if *s.dst == "" {
		return fmt.Errorf("--%s-file %s is empty", s.flag, s.path)
	}
	return nil
}

func newServerCommand() *cobra.Command {
	cfg := server.DefaultConfig()
	cfg.Version = version
	secretFiles := []*secretFile{
		{flag: "database-url", dst: &cfg.DatabaseURL},
		{flag: "otlp-endpoint", dst: &cfg.OTLPEndpoint},
	}
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run the Accord server",
		Long: `Run the Accord server.

By default it keeps everything in an embedded SQLite store under --data.
With --database-url it uses PostgreSQL instead, and several servers may
share one database, splitting its partitions between them.

Every flag can also be set with the environment variable shown beside it.
Secrets can be read from files: --database-url-file and --otlp-endpoint-file
(ACCORD_DATABASE_URL_FILE, ACCORD_OTLP_ENDPOINT_FILE) name a file that holds
the value. Passwords and API keys are masked in every log line.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			for _, sf := range secretFiles {
				if err := sf.resolve(); err != nil {
					return &exitError{code: 2, err: err}
				}
			}
			if err := cfg.Validate(); err != nil {
				return &exitError{code: 2, err: redact.Error(err, cfg.Secrets())}
			}
			return redact.Error(server.Run(cmd.Context(), cfg), cfg.Secrets())
		},
	}
	f := cmd.Flags()
	for _, sf := range secretFiles {
		f.StringVar(&sf.path, sf.flag+"-file", "", "file that holds --"+sf.flag+", which then stays out of the process list and the environment")
	}
	f.StringVar(&cfg.Addr, "addr", cfg.Addr, "HTTP listen address")
	f.StringVar(&cfg.DataDir, "data", cfg.DataDir, "directory of the embedded store (ignored with --database-url)")
	f.StringVar(&cfg.DatabaseURL, "database-url", cfg.DatabaseURL, "PostgreSQL URL; empty uses the embedded store")
	f.StringVar(&cfg.DatabaseSchema, "database-schema", cfg.DatabaseSchema, "PostgreSQL schema that holds Accord's tables")
	f.IntVar(&cfg.Partitions, "partitions", cfg.Partitions, "partition count of a new store (an existing store keeps its own)")
	f.StringVar(&cfg.Durability, "durability", cfg.Durability, `embedded store durability: "full" (fsync before every acknowledgement) or "normal" (faster; a power loss may lose the last acknowledged writes)`)
	f.StringVar(&cfg.NodeID, "node-id", cfg.NodeID, "this node's name in partition leases (default: host name and pid with PostgreSQL, \"local\" embedded)")
	f.DurationVar(&cfg.LeaseTTL, "lease-ttl", cfg.LeaseTTL, "partition lease time to live; a dead node's partitions move after about this long")
	f.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", cfg.ShutdownTimeout, "how long a graceful shutdown may take before in-flight work is abandoned to recovery")
	f.Int64Var(&cfg.MaxBodyBytes, "max-body-bytes", cfg.MaxBodyBytes, "largest API request body accepted (413 beyond)")
	f.IntVar(&cfg.MaxInFlight, "max-in-flight", cfg.MaxInFlight, "API requests served at once; beyond, 503 with Retry-After at once")
	f.DurationVar(&cfg.Retention, "retention", cfg.Retention, "how long a finished saga and its log are kept")
	f.DurationVar(&cfg.IdempotencyTTL, "idempotency-ttl", cfg.IdempotencyTTL, "how long a saga start's idempotency key is remembered")
	f.DurationVar(&cfg.BusStallAfter, "bus-stall-after", cfg.BusStallAfter, "how long a bus message may stay unfinished by a consumer group before its flow is reported as stalled")
	f.IntVar(&cfg.MaxTopics, "max-topics", cfg.MaxTopics, "the most bus topics; creating one more is refused (422)")
	f.IntVar(&cfg.MaxGroups, "max-groups", cfg.MaxGroups, "the most bus consumer groups over all topics; creating one more is refused (422)")
	f.StringSliceVar(&cfg.PushAllow, "push-allow", cfg.PushAllow, `endpoints push steps and webhooks may call: URL patterns like http://127.0.0.1:* or CIDRs like 10.0.0.0/8; "*" allows all (default: loopback targets when --addr is a loopback address, none otherwise)`)
	f.IntVar(&cfg.PushWorkers, "push-workers", cfg.PushWorkers, "concurrent push calls at most")
	f.IntVar(&cfg.PushBreakerFailures, "push-breaker-failures", cfg.PushBreakerFailures, "consecutive failures that open an endpoint's circuit breaker")
	f.DurationVar(&cfg.PushBreakerOpen, "push-breaker-open", cfg.PushBreakerOpen, "how long an open breaker rejects calls before a half-open probe")
	f.IntVar(&cfg.PushBulkhead, "push-bulkhead", cfg.PushBulkhead, "concurrent calls per endpoint at most (bulkhead)")
	f.DurationVar(&cfg.PushBulkheadWait, "push-bulkhead-wait", cfg.PushBulkheadWait, "how long a call waits for a bulkhead slot")
	f.StringSliceVar(&cfg.AllowedHosts, "allowed-hosts", cfg.AllowedHosts, "host names the API answers to besides localhost, 127.0.0.1 and ::1 (on a loopback --addr those alone by default; elsewhere an empty list allows any); other Host headers get 421")
	f.StringSliceVar(&cfg.CORSOrigins, "cors-origins", cfg.CORSOrigins, `web origins browsers may call the API from, like https://ops.example.com, or "*" (default none)`)
	f.StringVar(&cfg.OTLPEndpoint, "otlp-endpoint", cfg.OTLPEndpoint, "OTLP/HTTP collector to export traces to: http(s)://host:port[/path] (path default /v1/traces) or host:port; empty turns tracing off (OTEL_EXPORTER_OTLP_* variables set headers, timeout, compression, certificates)")
	f.BoolVar(&cfg.OTLPInsecure, "otlp-insecure", cfg.OTLPInsecure, "export to a host:port --otlp-endpoint without TLS")
	f.Float64Var(&cfg.TraceSampleRatio, "trace-sample-ratio", cfg.TraceSampleRatio, "share of sagas traced, in (0, 1]; decided per saga, so a saga is traced whole or not at all")
	f.StringVar(&cfg.LogLevel, "log-level", cfg.LogLevel, "debug, info, warn or error")
	f.StringVar(&cfg.LogFormat, "log-format", cfg.LogFormat, "text or json")
	bindEnv(cmd)
	return cmd
}
