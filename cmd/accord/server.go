package main

import (
	"github.com/spf13/cobra"

	"github.com/accord-saga/accord/internal/server"
)

func newServerCommand() *cobra.Command {
	cfg := server.DefaultConfig()
	cfg.Version = version
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run the Accord server",
		Long: `Run the Accord server.

By default it keeps everything in an embedded SQLite store under --data.
With --database-url it uses PostgreSQL instead, and several servers may
share one database, splitting its partitions between them.

Every flag can also be set with the environment variable shown beside it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := cfg.Validate(); err != nil {
				return &exitError{code: 2, err: err}
			}
			return server.Run(cmd.Context(), cfg)
		},
	}
	f := cmd.Flags()
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
	f.StringSliceVar(&cfg.PushAllow, "push-allow", cfg.PushAllow, `endpoints push steps may call: URL patterns like http://127.0.0.1:* or CIDRs like 10.0.0.0/8; "*" allows all (default none)`)
	f.IntVar(&cfg.PushWorkers, "push-workers", cfg.PushWorkers, "concurrent push calls at most")
	f.IntVar(&cfg.PushBreakerFailures, "push-breaker-failures", cfg.PushBreakerFailures, "consecutive failures that open an endpoint's circuit breaker")
	f.DurationVar(&cfg.PushBreakerOpen, "push-breaker-open", cfg.PushBreakerOpen, "how long an open breaker rejects calls before a half-open probe")
	f.IntVar(&cfg.PushBulkhead, "push-bulkhead", cfg.PushBulkhead, "concurrent calls per endpoint at most (bulkhead)")
	f.DurationVar(&cfg.PushBulkheadWait, "push-bulkhead-wait", cfg.PushBulkheadWait, "how long a call waits for a bulkhead slot")
	f.StringVar(&cfg.OTLPEndpoint, "otlp-endpoint", cfg.OTLPEndpoint, "OTLP/HTTP collector to export traces to: http(s)://host:port[/path] (path default /v1/traces) or host:port; empty turns tracing off (OTEL_EXPORTER_OTLP_* variables set headers, timeout, compression, certificates)")
	f.BoolVar(&cfg.OTLPInsecure, "otlp-insecure", cfg.OTLPInsecure, "export to a host:port --otlp-endpoint without TLS")
	f.Float64Var(&cfg.TraceSampleRatio, "trace-sample-ratio", cfg.TraceSampleRatio, "share of sagas traced, in (0, 1]; decided per saga, so a saga is traced whole or not at all")
	f.StringVar(&cfg.LogLevel, "log-level", cfg.LogLevel, "debug, info, warn or error")
	f.StringVar(&cfg.LogFormat, "log-format", cfg.LogFormat, "text or json")
	bindEnv(cmd)
	return cmd
}
