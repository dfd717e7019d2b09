package main

import (
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/accord-saga/accord/internal/bench"
)

func newBenchCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure Accord on this machine",
	}
	cmd.AddCommand(newBenchStorageCommand())
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
