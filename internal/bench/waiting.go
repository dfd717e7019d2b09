package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/accord-saga/accord/internal/engine"
)

// WaitingResult is what the waiting benchmark reports: what N sagas parked
// on a long timer cost in memory, and how long a restart takes to recover
// them all.
type WaitingResult struct {
	Store              string  `json:"store"`
	Sagas              int     `json:"sagas"`
	StartSec           float64 `json:"start_sec"`
	StartsPerSec       float64 `json:"starts_per_sec"`
	RSSWaitingMB       float64 `json:"rss_waiting_mb"`
	RecoverSec         float64 `json:"recover_sec"`
	RecoveredSagas     int     `json:"recovered_sagas"`
	RSSAfterRecoveryMB float64 `json:"rss_after_recovery_mb"`
}

// waitingDef parks each saga on its first step: a pull task nobody serves,
// with an attempt timeout an hour away.
const waitingDef = `name: bench_waiting
version: 1
steps:
  - name: wait
    action: {queue: bench-nobody, name: wait}
    compensation: {queue: bench-nobody, name: unwait}
    attempt_timeout: 1h
`

// RunWaiting starts cfg.Sagas sagas that wait on a long timer, measures the
// process's memory, then stops the engine and starts a new one on the same
// store, timing how long it takes until every saga is back in memory with
// its timer armed.
func RunWaiting(ctx context.Context, cfg SagaConfig) (*WaitingResult, error) {
	store, cleanup, err := cfg.open(ctx, 100_000)
	if err != nil {
		return nil, err
	}
	defer cleanup()

	eng, err := engine.New(engine.Config{Store: store, Logger: cfg.Logger})
	if err != nil {
		return nil, err
	}
	if err := eng.Start(ctx); err != nil {
		return nil, err
	}
	if _, _, err := eng.RegisterDefinition(ctx, []byte(waitingDef)); err != nil {
		_ = eng.Stop(ctx)
		return nil, err
	}
	began := time.Now()
	var next atomic.Int64
	var firstErr error
	var errOnce sync.Once
	var wg sync.WaitGroup
	for range cfg.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(cfg.Sagas) {
				for {
					_, err := eng.StartSaga(ctx, engine.StartParams{Definition: "bench_waiting", Input: json.RawMessage(`{}`)})
					if err == engine.ErrOverloaded {
						time.Sleep(time.Millisecond)
						continue
					}
					if err != nil {
						errOnce.Do(func() { firstErr = err })
						return
					}
					break
				}
			}
		}()
	}
	wg.Wait()
	started := time.Since(began)
	if firstErr != nil {
		_ = eng.Stop(ctx)
		return nil, fmt.Errorf("bench: start: %w", firstErr)
	}
	res := &WaitingResult{Store: cfg.Store, Sagas: cfg.Sagas, StartSec: started.Seconds(), StartsPerSec: float64(cfg.Sagas) / started.Seconds()}
	res.RSSWaitingMB = currentRSSMB()
	if err := eng.Stop(ctx); err != nil {
		return nil, err
	}
	eng = nil
	runtime.GC()
	debug.FreeOSMemory()

	// The restart: a new engine takes every partition and reloads its
	// sagas from their snapshots before Start returns.
	eng2, err := engine.New(engine.Config{Store: store, Logger: cfg.Logger})
	if err != nil {
		return nil, err
	}
	began = time.Now()
	if err := eng2.Start(ctx); err != nil {
		return nil, err
	}
	res.RecoverSec = time.Since(began).Seconds()
	res.RecoveredSagas = eng2.ActiveSagas()
	runtime.GC()
	res.RSSAfterRecoveryMB = currentRSSMB()
	if err := eng2.Stop(ctx); err != nil {
		return nil, err
	}
	if res.RecoveredSagas != cfg.Sagas {
		return res, fmt.Errorf("bench: recovered %d sagas of %d", res.RecoveredSagas, cfg.Sagas)
	}
	return res, nil
}

// currentRSSMB reads the process's resident set from /proc (Linux).
func currentRSSMB() float64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, _ := strconv.ParseFloat(f[1], 64)
	return pages * float64(os.Getpagesize()) / (1 << 20)
}

// WriteWaitingResult prints a waiting benchmark's result.
func WriteWaitingResult(w io.Writer, r *WaitingResult, asJSON bool) error {
	if asJSON {
		return json.NewEncoder(w).Encode(r)
	}
	_, err := fmt.Fprintf(w, `waiting       %d sagas parked on a 1h timer (%s store)
started       in %.1f s (%.0f starts/s)
memory        %.0f MiB resident with all of them waiting
recovery      %.2f s for a new engine to take every partition and reload %d sagas
memory        %.0f MiB resident after recovery
`, r.Sagas, r.Store, r.StartSec, r.StartsPerSec, r.RSSWaitingMB, r.RecoverSec, r.RecoveredSagas, r.RSSAfterRecoveryMB)
	return err
}
