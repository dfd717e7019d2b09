package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/accord-saga/accord/internal/dispatch"
	"github.com/accord-saga/accord/internal/engine"
	"github.com/accord-saga/accord/internal/storage"
)

// SagaConfig configures a saga benchmark.
type SagaConfig struct {
	// Workload: "transfer" (2 steps) or "order" (4 steps). Default transfer.
	Workload string
	// Mode: "push" (an HTTP participant in this process, on loopback) or
	// "pull" (workers polling the engine's task queues). Default push.
	Mode string
	// Store: "sqlite" or "postgres". Default sqlite.
	Store string
	// DatabaseURL for postgres.
	DatabaseURL string
	// Dir for the SQLite store. Default a temporary directory.
	Dir string
	// Sagas to run and Concurrency of the submitters. Defaults 2000 and 50.
	Sagas       int
	Concurrency int
	// Warmup sagas run (and not measured) first. Default 200.
	Warmup int
	// Prefill sagas are run to completion before the warm-up, so that the
	// measurement runs on a store with that much history.
	Prefill int
	// FailRate is the share of sagas whose last step fails, so that they
	// compensate. Default 0.
	FailRate float64
	// Partitions of the store. Default 16.
	Partitions int
	// Durability "full" (default) or "normal" (SQLite only; reported).
	Durability string
	// Logger for the engine. Default discards.
	Logger *slog.Logger
	// Server, if set, is the URL of a running server to measure instead of
	// an engine in this process (RunRemote).
	Server string
}

// SagaResult is what a saga benchmark reports.
type SagaResult struct {
	Workload            string  `json:"workload"`
	Mode                string  `json:"mode"`
	Store               string  `json:"store"`
	Durability          string  `json:"durability"`
	Sagas               int     `json:"sagas"`
	Concurrency         int     `json:"concurrency"`
	Prefilled           int     `json:"prefilled"`
	Completed           int     `json:"completed"`
	Compensated         int     `json:"compensated"`
	Failed              int     `json:"failed"`
	SagasPerSec         float64 `json:"sagas_per_sec"`
	E2EP50ms            float64 `json:"e2e_p50_ms"`
	E2EP99ms            float64 `json:"e2e_p99_ms"`
	E2EP999ms           float64 `json:"e2e_p999_ms"`
	StartAckP99ms       float64 `json:"start_ack_p99_ms"`
	ServerCPUmsPerSaga  float64 `json:"server_cpu_ms_per_saga"`
	PeakRSSMB           float64 `json:"peak_rss_mb"`
	EventsPerSaga       float64 `json:"events_per_saga"`
	StorageEventsPerSec float64 `json:"storage_events_per_sec"`
	EfficiencyVsStorage float64 `json:"efficiency_vs_storage"`
	ElapsedSec          float64 `json:"elapsed_sec"`
}

// workloads maps a workload name to its definition; every step calls the
// same participant operation.
func workloadDef(name, target string) (string, int, error) {
	step := func(n string) string {
		return fmt.Sprintf("  - name: %s\n    action: {%s, name: %s}\n    compensation: {%s, name: undo_%s}\n    retry: {initial_interval: 20ms}\n", n, target, n, target, n)
	}
	switch name {
	case "transfer":
		return "name: bench_transfer\nversion: 1\nsteps:\n" + step("debit") + step("credit"), 2, nil
	case "order":
		return "name: bench_order\nversion: 1\nsteps:\n" + step("order") + step("payment") + step("inventory") + step("shipping"), 4, nil
	}
	return "", 0, fmt.Errorf("bench: unknown workload %q (want transfer or order)", name)
}

// RunSaga runs a saga benchmark against an engine in this process.
func RunSaga(ctx context.Context, cfg SagaConfig) (*SagaResult, error) {
	cfg.Workload = cmpOr(cfg.Workload, "transfer")
	cfg.Mode = cmpOr(cfg.Mode, "push")
	if cfg.Warmup < 0 {
		cfg.Warmup = 0
	} else if cfg.Warmup == 0 {
		cfg.Warmup = 200
	}
	store, cleanup, err := cfg.open(ctx, 2000)
	if err != nil {
		return nil, err
	}
	defer cleanup()

	handle := participant
	var push *dispatch.Push
	var eng *engine.Engine
	target := "queue: bench"
	if cfg.Mode == "push" {
		url, stop, err := pushParticipant()
		if err != nil {
			return nil, err
		}
		defer stop()
		target = "http: \"" + url + "\""
		push, err = dispatch.New(dispatch.Config{
			Complete: func(ctx context.Context, r engine.Result) error { return eng.CompleteTask(ctx, r) },
			Allow:    []string{"http://127.0.0.1:*"},
			Logger:   cfg.Logger,
		})
		if err != nil {
			return nil, err
		}
	} else if cfg.Mode != "pull" {
		return nil, fmt.Errorf("bench: unknown mode %q (want push or pull)", cfg.Mode)
	}
	def, steps, err := workloadDef(cfg.Workload, target)
	if err != nil {
		return nil, err
	}
	var finished sync.Map // saga id -> chan struct{}
	ecfg := engine.Config{Store: store, Logger: cfg.Logger, OnFinish: func(id, status string) {
		if ch, ok := finished.Load(id); ok {
			ch.(chan string) <- status
		}
	}}
	if push != nil {
		ecfg.Push = push
	}
	eng, err = engine.New(ecfg)
	if err != nil {
		return nil, err
	}
	if err := eng.Start(ctx); err != nil {
		return nil, err
	}
	defer eng.Stop(context.Background())
	if push != nil {
		if err := push.Start(context.WithoutCancel(ctx)); err != nil {
			return nil, err
		}
		defer push.Stop(context.Background())
	}
	if _, _, err := eng.RegisterDefinition(ctx, []byte(def)); err != nil {
		return nil, err
	}
	wctx, stopWorkers := context.WithCancel(ctx)
	defer stopWorkers()
	var wg sync.WaitGroup
	if cfg.Mode == "pull" {
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				pullWorker(wctx, eng, handle)
			}()
		}
	}
	defName := map[string]string{"transfer": "bench_transfer", "order": "bench_order"}[cfg.Workload]

	run := func(n int, measure bool) (ack, e2e []time.Duration, statuses map[string]int, err error) {
		var next atomic.Int64
		var mu sync.Mutex
		statuses = map[string]int{}
		var firstErr error
		var swg sync.WaitGroup
		for range cfg.Concurrency {
			swg.Add(1)
			go func() {
				defer swg.Done()
				rng := rand.New(rand.NewPCG(rand.Uint64(), 0))
				for next.Add(1) <= int64(n) {
					done := make(chan string, 1)
					began := time.Now()
					var res engine.StartResult
					var err error
					input := json.RawMessage(`{"amount":100,"fail":false}`)
					if rng.Float64() < cfg.FailRate {
						input = json.RawMessage(`{"amount":100,"fail":true}`)
					}
					for {
						res, err = eng.StartSaga(ctx, engine.StartParams{Definition: defName, Input: input})
						if err != engine.ErrOverloaded {
							break
						}
						time.Sleep(time.Millisecond)
					}
					acked := time.Since(began)
					if err != nil {
						mu.Lock()
						if firstErr == nil {
							firstErr = err
						}
						mu.Unlock()
						return
					}
					// A saga that ends before this registration is caught
					// by the status check below.
					finished.Store(res.SagaID, done)
					var status string
					select {
					case status = <-done:
					case <-time.After(50 * time.Millisecond):
						s, err := eng.Wait(ctx, res.SagaID)
						if err != nil {
							mu.Lock()
							if firstErr == nil {
								firstErr = err
							}
							mu.Unlock()
							return
						}
						status = s.Status
					}
					finished.Delete(res.SagaID)
					elapsed := time.Since(began)
					mu.Lock()
					ack = append(ack, acked)
					e2e = append(e2e, elapsed)
					statuses[status]++
					mu.Unlock()
				}
			}()
		}
		swg.Wait()
		return ack, e2e, statuses, firstErr
	}
	if cfg.Prefill > 0 {
		if _, _, _, err := run(cfg.Prefill, false); err != nil {
			return nil, fmt.Errorf("bench prefill: %w", err)
		}
	}
	if cfg.Warmup > 0 {
		if _, _, _, err := run(cfg.Warmup, false); err != nil {
			return nil, fmt.Errorf("bench warmup: %w", err)
		}
	}
	cpu0 := cpuTime()
	began := time.Now()
	ack, e2e, statuses, err := run(cfg.Sagas, true)
	elapsed := time.Since(began)
	cpu := cpuTime() - cpu0
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	stopWorkers()
	wg.Wait()

	res := &SagaResult{
		Workload: cfg.Workload, Mode: cfg.Mode, Store: cfg.Store, Durability: cfg.Durability,
		Sagas: cfg.Sagas, Concurrency: cfg.Concurrency, Prefilled: cfg.Prefill,
		Completed: statuses["completed"], Compensated: statuses["compensated"],
		Failed:      cfg.Sagas - statuses["completed"] - statuses["compensated"],
		SagasPerSec: float64(cfg.Sagas) / elapsed.Seconds(),
		E2EP50ms:    pct(e2e, 0.50), E2EP99ms: pct(e2e, 0.99), E2EP999ms: pct(e2e, 0.999),
		StartAckP99ms:      pct(ack, 0.99),
		ServerCPUmsPerSaga: float64(cpu.Microseconds()) / 1000 / float64(cfg.Sagas),
		PeakRSSMB:          peakRSSMB(),
		ElapsedSec:         elapsed.Seconds(),
	}
	// Events per saga: a successful saga's log (started, scheduled and
	// succeeded per step, completed).
	res.EventsPerSaga = float64(2 + 2*steps)
	// The storage limit on the same store, measured now, after the run,
	// once the engine has released its partition leases.
	if push != nil {
		_ = push.Stop(ctx)
	}
	if err := eng.Stop(ctx); err != nil {
		return nil, err
	}
	sres, err := appendRate(ctx, store, StorageConfig{Writers: 16, Duration: 2 * time.Second}, 100)
	if err == nil {
		res.StorageEventsPerSec = sres.EventsPerSec
		res.EfficiencyVsStorage = res.SagasPerSec * res.EventsPerSaga / sres.EventsPerSec
	}
	return res, nil
}

// open fills the defaults shared by the saga benchmarks (defaultSagas for
// Sagas) and opens a fresh store for them; cleanup closes it and removes
// what the benchmark created.
func (cfg *SagaConfig) open(ctx context.Context, defaultSagas int) (storage.Driver, func(), error) {
	cfg.Store = cmpOr(cfg.Store, "sqlite")
	cfg.Durability = cmpOr(cfg.Durability, "full")
	if cfg.Sagas <= 0 {
		cfg.Sagas = defaultSagas
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 50
	}
	if cfg.Partitions <= 0 {
		cfg.Partitions = 16
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	removeDir := func() {}
	if cfg.Dir == "" {
		dir, err := os.MkdirTemp("", "accord-bench-")
		if err != nil {
			return nil, nil, err
		}
		removeDir = func() { _ = os.RemoveAll(dir) }
		cfg.Dir = dir
	}
	scfg := StorageConfig{Dir: cfg.Dir, DatabaseURL: cfg.DatabaseURL, Partitions: cfg.Partitions, Durability: cfg.Durability}
	store, cleanup, err := openBenchStore(ctx, scfg, cfg.Store)
	if err != nil {
		removeDir()
		return nil, nil, err
	}
	return store, func() { cleanup(); removeDir() }, nil
}

// pullWorker serves the bench queue through the engine's task API.
func pullWorker(ctx context.Context, eng *engine.Engine, handle func(step, phase string, input []byte) string) {
	for ctx.Err() == nil {
		tasks, err := eng.PollTasks(ctx, engine.PollParams{Queue: "bench", Max: 32, Visibility: 30 * time.Second, Wait: time.Second})
		if err != nil {
			return
		}
		for _, t := range tasks {
			r := engine.Result{TaskID: t.ID, ClaimToken: t.ClaimToken, Outcome: handle(t.Step, t.Phase, t.Input)}
			if r.Outcome == "failure" {
				r.ErrorCode = "declined"
			}
			_ = eng.CompleteTask(ctx, r)
		}
	}
}

func pct(d []time.Duration, p float64) float64 {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(float64(len(s)-1) * p)
	return float64(s[i].Microseconds()) / 1000
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func peakRSSMB() float64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return float64(ru.Maxrss) / 1024 // Linux reports KiB
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// WriteSagaResult prints a saga benchmark's result as a table or JSON.
func WriteSagaResult(w io.Writer, r *SagaResult, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(w)
		return enc.Encode(r)
	}
	if r.Prefilled > 0 {
		if _, err := fmt.Fprintf(w, "history       %d sagas completed before measuring\n", r.Prefilled); err != nil {
			return err
		}
	}
	_, err := fmt.Fprintf(w, `workload      %s (%s, %s store, durability %s)
sagas         %d with %d concurrent submitters: %d completed, %d compensated, %d other
throughput    %.0f sagas/s (%.2f s)
end to end    p50 %.2f ms   p99 %.2f ms   p99.9 %.2f ms
start ack     p99 %.2f ms
cpu           %.3f ms per saga (whole process)
memory        %.0f MiB peak RSS
storage       %.0f events/s batched append limit; sagas use %.0f%% of it (%.0f events per saga)
`, r.Workload, r.Mode, r.Store, r.Durability, r.Sagas, r.Concurrency, r.Completed, r.Compensated, r.Failed,
		r.SagasPerSec, r.ElapsedSec, r.E2EP50ms, r.E2EP99ms, r.E2EP999ms, r.StartAckP99ms,
		r.ServerCPUmsPerSaga, r.PeakRSSMB, r.StorageEventsPerSec, 100*r.EfficiencyVsStorage, r.EventsPerSaga)
	return err
}
