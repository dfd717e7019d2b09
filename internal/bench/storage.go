package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/accord-saga/accord/internal/storage"
	"github.com/accord-saga/accord/internal/storage/postgres"
	"github.com/accord-saga/accord/internal/storage/sqlite"
)

// StorageConfig configures the storage benchmark.
type StorageConfig struct {
	// Backends to measure: "sqlite", "postgres". Default both if
	// DatabaseURL is set, else sqlite.
	Backends []string
	// Dir for the SQLite store and the fsync probe. Default a temporary
	// directory, removed afterwards.
	Dir string
	// DatabaseURL of PostgreSQL. The benchmark works in a schema of its own
	// and drops it afterwards.
	DatabaseURL string
	// Duration of each measurement. Default 3s.
	Duration time.Duration
	// Writers is the number of concurrent committers. Default 16.
	Writers int
	// Partitions of the store. Default 16.
	Partitions int
	// Durability of the SQLite store: "full" (default) or "normal".
	Durability string
}

// StorageResult is one measurement.
type StorageResult struct {
	Backend         string  `json:"backend"`
	EventsPerCommit int     `json:"events_per_commit"`
	Writers         int     `json:"writers"`
	Commits         int64   `json:"commits"`
	CommitsPerSec   float64 `json:"commits_per_sec"`
	EventsPerSec    float64 `json:"events_per_sec"`
	// RatioToFsync is commits per second over the disk's fsyncs per second.
	RatioToFsync float64 `json:"ratio_to_fsync"`
}

// StorageReport is the whole benchmark's outcome.
type StorageReport struct {
	FsyncsPerSec float64         `json:"fsyncs_per_sec"`
	Results      []StorageResult `json:"results"`
}

// RunStorage measures the disk's fsync rate, then append throughput with 1
// and with 100 events per commit on each backend.
func RunStorage(ctx context.Context, cfg StorageConfig) (*StorageReport, error) {
	if cfg.Duration <= 0 {
		cfg.Duration = 3 * time.Second
	}
	if cfg.Writers <= 0 {
		cfg.Writers = 16
	}
	if cfg.Partitions <= 0 {
		cfg.Partitions = 16
	}
	if len(cfg.Backends) == 0 {
		cfg.Backends = []string{"sqlite"}
		if cfg.DatabaseURL != "" {
			cfg.Backends = append(cfg.Backends, "postgres")
		}
	}
	if cfg.Dir == "" {
		dir, err := os.MkdirTemp("", "accord-bench-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		cfg.Dir = dir
	}
	rep := &StorageReport{}
	var err error
	rep.FsyncsPerSec, err = FsyncRate(cfg.Dir, min(cfg.Duration, 2*time.Second))
	if err != nil {
		return nil, err
	}
	for _, b := range cfg.Backends {
		for _, per := range []int{1, 100} {
			store, cleanup, err := openBenchStore(ctx, cfg, b)
			if err != nil {
				return nil, err
			}
			res, err := appendRate(ctx, store, cfg, per)
			cleanup()
			if err != nil {
				return nil, fmt.Errorf("bench %s: %w", b, err)
			}
			res.Backend = b
			res.RatioToFsync = res.CommitsPerSec / rep.FsyncsPerSec
			rep.Results = append(rep.Results, res)
		}
	}
	return rep, nil
}

// FsyncRate measures how many small write+fsync pairs per second the disk
// under dir completes: the ceiling for durable commits that are not batched.
func FsyncRate(dir string, d time.Duration) (float64, error) {
	f, err := os.CreateTemp(dir, "fsync-probe-")
	if err != nil {
		return 0, fmt.Errorf("fsync probe: %w", err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	buf := make([]byte, 4096)
	n := 0
	start := time.Now()
	for time.Since(start) < d {
		if _, err := f.WriteAt(buf, int64(n%256)*4096); err != nil {
			return 0, fmt.Errorf("fsync probe: %w", err)
		}
		if err := f.Sync(); err != nil {
			return 0, fmt.Errorf("fsync probe: %w", err)
		}
		n++
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

func openBenchStore(ctx context.Context, cfg StorageConfig, backend string) (storage.Driver, func(), error) {
	switch backend {
	case "sqlite":
		dir, err := os.MkdirTemp(cfg.Dir, "store-")
		if err != nil {
			return nil, nil, err
		}
		d, err := sqlite.Open(ctx, sqlite.Config{Path: filepath.Join(dir, "accord.db"), Partitions: cfg.Partitions, Synchronous: cfg.Durability})
		if err != nil {
			return nil, nil, err
		}
		return d, func() { _ = d.Close(); _ = os.RemoveAll(dir) }, nil
	case "postgres":
		if cfg.DatabaseURL == "" {
			return nil, nil, fmt.Errorf("bench: postgres needs a database URL")
		}
		schema := "accord_bench_" + storage.NewToken()[:12]
		d, err := postgres.Open(ctx, postgres.Config{URL: cfg.DatabaseURL, Schema: schema, Partitions: cfg.Partitions, MaxConns: int32(cfg.Writers)})
		if err != nil {
			return nil, nil, err
		}
		return d, func() {
			_ = d.Close()
			if err := DropSchema(context.Background(), cfg.DatabaseURL, schema); err != nil {
				fmt.Fprintf(os.Stderr, "bench: drop schema %s: %v\n", schema, err)
			}
		}, nil
	}
	return nil, nil, fmt.Errorf("bench: unknown backend %q (want sqlite or postgres)", backend)
}

// DropSchema removes a schema the benchmark created.
func DropSchema(ctx context.Context, url, schema string) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE")
	return err
}

// appendRate runs cfg.Writers committers, each appending perCommit events
// to streams of its own partitions, for cfg.Duration.
func appendRate(ctx context.Context, store storage.Driver, cfg StorageConfig, perCommit int) (StorageResult, error) {
	parts := store.Info().Partitions
	epochs := make([]int64, parts)
	for p := range parts {
		l, err := store.LeaseAcquire(ctx, &storage.LeaseAcquireParams{Partition: p, Owner: "bench", TTL: time.Hour})
		if err != nil {
			return StorageResult{}, err
		}
		epochs[p] = l.Epoch
	}
	payload := []byte(`{"order_id":"ord-000000","amount":4200,"currency":"EUR","note":"benchmark event of a typical size"}`)
	events := make([]storage.EventInput, perCommit)
	for i := range events {
		events[i] = storage.EventInput{Type: "bench.event", Data: payload}
	}
	var commits atomic.Int64
	var firstErr error
	var errOnce sync.Once
	deadline := time.Now().Add(cfg.Duration)
	var wg sync.WaitGroup
	start := time.Now()
	for w := range cfg.Writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := w % parts
			for n := 0; time.Now().Before(deadline); n++ {
				_, err := store.Commit(ctx, &storage.CommitParams{
					Partition: p, Epoch: epochs[p],
					Appends: []storage.StreamAppend{{Stream: fmt.Sprintf("bench/%d/%d", w, n), ExpectedVersion: storage.NoStream, Events: events}},
				})
				if err != nil {
					errOnce.Do(func() { firstErr = err })
					return
				}
				commits.Add(1)
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return StorageResult{}, firstErr
	}
	secs := time.Since(start).Seconds()
	c := commits.Load()
	return StorageResult{
		EventsPerCommit: perCommit, Writers: cfg.Writers, Commits: c,
		CommitsPerSec: float64(c) / secs, EventsPerSec: float64(c*int64(perCommit)) / secs,
	}, nil
}

// WriteStorageReport prints a report as a table, or as JSON.
func WriteStorageReport(w io.Writer, rep *StorageReport, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	fmt.Fprintf(w, "disk: %.0f fsyncs/s (4 KiB write + fsync, one at a time)\n\n", rep.FsyncsPerSec)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "backend\tevents/commit\twriters\tcommits/s\tevents/s\tcommits per fsync\t")
	for _, r := range rep.Results {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.0f\t%.0f\t%.2f\t\n", r.Backend, r.EventsPerCommit, r.Writers, r.CommitsPerSec, r.EventsPerSec, r.RatioToFsync)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w, strings.Repeat("-", 20))
	fmt.Fprintln(w, "commits per fsync > 1 means the store batches many commits into one disk flush (group commit).")
	return nil
}
