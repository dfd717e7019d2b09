package main

import (
	"os"
	"runtime/pprof"
	"time"

	"github.com/spf13/cobra"

	"github.com/accord-saga/accord/internal/bench"
)

func newBenchCommand() *cobra.Command {
	var cfg bench.SagaConfig
	var asJSON bool
	var cpuProfile string
	var waiting int
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure Accord on this machine",
		Long: `Runs sagas against an engine in this process and reports throughput
(first start to last end), end-to-end and start-acknowledgement latency,
CPU per saga and peak memory, and — measured in the same run on the same
store — the store's batched append rate, so the figures read as ratios.

CPU and memory are the whole process's: engine, participant and load
generator together, so they are an upper bound for the server alone.

With --server URL it measures a running server instead, through the HTTP
API (start, then the wait long poll), with push participants on loopback in
this process (a server on a non-loopback address needs --push-allow 'http://127.0.0.1:*') or pull
workers of the Go SDK; CPU and memory are then the server's alone, read
from its /metrics, and the store's append rate is not measured.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cpuProfile != "" {
				f, err := os.Create(cpuProfile)
				if err != nil {
					return err
				}
				defer f.Close()
				if err := pprof.StartCPUProfile(f); err != nil {
					return err
				}
				defer pprof.StopCPUProfile()
			}
			if waiting > 0 {
				cfg.Sagas = waiting
				res, err := bench.RunWaiting(cmd.Context(), cfg)
				if res != nil {
					if werr := bench.WriteWaitingResult(os.Stdout, res, asJSON); werr != nil {
						return werr
					}
				}
				return err
			}
			run := bench.RunSaga
			if cfg.Server != "" {
				run = bench.RunRemote
			}
			res, err := run(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			return bench.WriteSagaResult(os.Stdout, res, asJSON)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Server, "server", "", "URL of a running server to measure, instead of an engine in this process")
	f.StringVar(&cfg.Workload, "workload", "transfer", "transfer (2 steps) or order (4 steps)")
	f.StringVar(&cfg.Mode, "mode", "push", "push (HTTP participant on loopback) or pull (workers polling task queues)")
	f.StringVar(&cfg.Store, "store", "sqlite", "sqlite or postgres")
	f.StringVar(&cfg.DatabaseURL, "database-url", "", "PostgreSQL URL (with --store postgres); the benchmark uses a schema of its own and drops it")
	f.StringVar(&cfg.Durability, "durability", "full", "SQLite durability: full (fsync before acknowledging) or normal (reported as such)")
	f.IntVar(&cfg.Sagas, "sagas", 2000, "sagas to measure")
	f.IntVar(&cfg.Concurrency, "concurrency", 50, "concurrent submitters")
	f.IntVar(&cfg.Warmup, "warmup", 200, "sagas run before measuring")
	f.IntVar(&cfg.Prefill, "prefill", 0, "sagas completed before the warm-up, to measure on a store with that much history")
	f.Float64Var(&cfg.FailRate, "fail-rate", 0, "share of sagas whose last step fails (they compensate)")
	f.IntVar(&cfg.Partitions, "partitions", 16, "partitions of the benchmark store")
	f.BoolVar(&asJSON, "json", false, "print one JSON object")
	f.IntVar(&waiting, "waiting", 0, "instead: start this many sagas that wait on a 1h timer, report memory, restart the engine and time the recovery of all of them")
	f.StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the run to this file (go tool pprof)")
	bindEnv(cmd)
	cmd.AddCommand(newBenchStorageCommand(), newBenchBusCommand())
	return cmd
}

func newBenchBusCommand() *cobra.Command {
	var cfg bench.BusConfig
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "bus",
		Short: "Event bus throughput: publish, and end-to-end delivery to consumer groups",
		Long: `Publishes messages through an engine and a bus in this process while
consumers of each group receive and ack them, durably, and reports publish
throughput and batch latency, acked deliveries per second, and end-to-end
latency from the publish's commit to a consumer's receipt.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			res, err := bench.RunBus(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			return bench.WriteBusResult(os.Stdout, res, asJSON)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Store, "store", "sqlite", "sqlite or postgres")
	f.StringVar(&cfg.DatabaseURL, "database-url", "", "PostgreSQL URL (with --store postgres); the benchmark uses a schema of its own and drops it")
	f.StringVar(&cfg.Durability, "durability", "full", "SQLite durability: full or normal")
	f.IntVar(&cfg.Partitions, "partitions", 16, "partitions of the benchmark store")
	f.IntVar(&cfg.Messages, "messages", 20000, "messages to publish")
	f.IntVar(&cfg.Batch, "batch", 10, "messages per publish request")
	f.IntVar(&cfg.Publishers, "publishers", 8, "concurrent publishers")
	f.IntVar(&cfg.Keys, "keys", 1000, "distinct message keys (0: keyless messages)")
	f.IntVar(&cfg.Groups, "groups", 1, "consumer groups, each receiving every message")
	f.IntVar(&cfg.Consumers, "consumers", 4, "concurrent consumers per group")
	f.BoolVar(&asJSON, "json", false, "print one JSON object")
	bindEnv(cmd)
	return cmd
}

func newBenchStorageCommand() *cobra.Command {
	var cfg bench.StorageConfig
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "storage",
		Short: "Append throughput of each storage backend, beside the disk's fsync rate",
		Long: `Measures the raw fsync rate of the disk, then how many commits per second
each backend makes with 1 and with 100 events per commit, from concurrent
writers, durably (fsync/commit before acknowledgement).

PostgreSQL is measured when --database-url is set; the benchmark works in a
schema of its own and drops it afterwards.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			rep, err := bench.RunStorage(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			return bench.WriteStorageReport(os.Stdout, rep, asJSON)
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&cfg.Backends, "store", nil, "backends to measure: sqlite, postgres (default sqlite, plus postgres with --database-url)")
	f.StringVar(&cfg.DatabaseURL, "database-url", "", "PostgreSQL URL")
	f.StringVar(&cfg.Dir, "dir", "", "directory for the SQLite store and the fsync probe (default a temporary directory)")
	f.DurationVar(&cfg.Duration, "duration", 3*time.Second, "length of each measurement")
	f.IntVar(&cfg.Writers, "writers", 16, "concurrent committers")
	f.IntVar(&cfg.Partitions, "partitions", 16, "partitions of the benchmark store")
	f.BoolVar(&asJSON, "json", false, "print JSON")
	bindEnv(cmd)
	return cmd
}
