package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/accord-saga/accord/sdk/client"
	"github.com/accord-saga/accord/sdk/worker"
)

// participant answers the benchmark's steps: every call succeeds at once,
// but the last step fails for sagas whose input says so.
func participant(step, phase string, input []byte) (outcome string) {
	if phase == "action" && (step == "credit" || step == "shipping") && strings.Contains(string(input), `"fail":true`) {
		return "failure"
	}
	return "success"
}

// pushParticipant serves participant over the push protocol on loopback.
func pushParticipant() (url string, stop func(), err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if participant(r.Header.Get("Accord-Step"), r.Header.Get("Accord-Phase"), body) == "failure" {
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(http.StatusUnprocessableEntity)
			_, _ = w.Write([]byte(`{"type":"about:blank","title":"declined","code":"declined"}`))
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"ok":true}`))
	})}
	go func() { _ = srv.Serve(ln) }()
	return "http://" + ln.Addr().String() + "/step", func() { _ = srv.Close() }, nil
}

// RunRemote runs a saga benchmark against a running server (cfg.Server):
// starts through the HTTP API and waits for each saga's end with the
// API's long poll; push participants on loopback in this process (a
// server on a non-loopback address must allow http://127.0.0.1:* in
// --push-allow) or pull workers of
// the Go SDK. Server CPU and memory are read from the server's own
// /metrics (process_cpu_seconds_total, process_resident_memory_bytes), so
// they are the server's alone; the store's append limit is not measured.
func RunRemote(ctx context.Context, cfg SagaConfig) (*SagaResult, error) {
	cfg.Workload = cmpOr(cfg.Workload, "transfer")
	cfg.Mode = cmpOr(cfg.Mode, "push")
	cfg.Sagas = cmpInt(cfg.Sagas, 2000)
	cfg.Concurrency = cmpInt(cfg.Concurrency, 50)
	if cfg.Warmup < 0 {
		cfg.Warmup = 0
	} else if cfg.Warmup == 0 {
		cfg.Warmup = 200
	}
	c, err := client.New(cfg.Server, client.WithTimeout(30*time.Second))
	if err != nil {
		return nil, err
	}
	// Names of this run's own, so that runs against one server do not
	// share a queue or a definition.
	run := strconv.FormatUint(rand.Uint64()%1_000_000, 10)
	var target string
	wctx, stopWorkers := context.WithCancel(ctx)
	defer stopWorkers()
	var workers sync.WaitGroup
	switch cfg.Mode {
	case "push":
		url, stop, err := pushParticipant()
		if err != nil {
			return nil, err
		}
		defer stop()
		target = `http: "` + url + `"`
	case "pull":
		queue := "bench_" + run
		target = "queue: " + queue
		w := worker.New(c, worker.Options{Concurrency: 64, PollWait: time.Second, GracePeriod: 5 * time.Second})
		handler := func(ctx context.Context, t *worker.Task) (any, error) {
			if participant(t.Step, t.Phase, t.Input) == "failure" {
				return nil, worker.Failure("declined", "declined")
			}
			return map[string]bool{"ok": true}, nil
		}
		for _, op := range []string{"debit", "credit", "order", "payment", "inventory", "shipping"} {
			w.Handle(queue, op, handler)
			w.Handle(queue, "undo_"+op, handler)
		}
		workers.Add(1)
		go func() { defer workers.Done(); _ = w.Run(wctx) }()
	default:
		return nil, fmt.Errorf("bench: unknown mode %q (want push or pull)", cfg.Mode)
	}
	def, steps, err := workloadDef(cfg.Workload, target)
	if err != nil {
		return nil, err
	}
	defName := map[string]string{"transfer": "bench_transfer", "order": "bench_order"}[cfg.Workload] + "_" + run
	def = strings.Replace(def, "name: bench_"+cfg.Workload+"\n", "name: "+defName+"\n", 1)
	if _, _, err := c.RegisterDefinition(ctx, []byte(def), "application/yaml"); err != nil {
		return nil, fmt.Errorf("bench: register the definition: %w", err)
	}

	runN := func(n int) (ack, e2e []time.Duration, statuses map[string]int, err error) {
		var next atomic.Int64
		var mu sync.Mutex
		statuses = map[string]int{}
		var firstErr error
		var wg sync.WaitGroup
		for range cfg.Concurrency {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(rand.Uint64(), 0))
				for next.Add(1) <= int64(n) {
					input := json.RawMessage(`{"amount":100,"fail":false}`)
					if rng.Float64() < cfg.FailRate {
						input = json.RawMessage(`{"amount":100,"fail":true}`)
					}
					began := time.Now()
					res, err := c.StartSaga(ctx, client.StartRequest{Definition: defName, Input: input})
					acked := time.Since(began)
					var s *client.Saga
					if err == nil {
						s, err = c.WaitSaga(ctx, res.ID)
					}
					elapsed := time.Since(began)
					mu.Lock()
					if err != nil {
						if firstErr == nil {
							firstErr = err
						}
						mu.Unlock()
						return
					}
					ack = append(ack, acked)
					e2e = append(e2e, elapsed)
					statuses[s.Status]++
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		return ack, e2e, statuses, firstErr
	}
	if cfg.Warmup > 0 {
		if _, _, _, err := runN(cfg.Warmup); err != nil {
			return nil, fmt.Errorf("bench warmup: %w", err)
		}
	}
	cpu0, _, err := serverProcess(ctx, cfg.Server)
	if err != nil {
		return nil, err
	}
	began := time.Now()
	ack, e2e, statuses, err := runN(cfg.Sagas)
	elapsed := time.Since(began)
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	cpu1, rss, err := serverProcess(ctx, cfg.Server)
	if err != nil {
		return nil, err
	}
	stopWorkers()
	workers.Wait()
	return &SagaResult{
		Workload: cfg.Workload, Mode: cfg.Mode, Store: "server " + cfg.Server, Durability: "the server's",
		Sagas: cfg.Sagas, Concurrency: cfg.Concurrency,
		Completed: statuses["completed"], Compensated: statuses["compensated"],
		Failed:      cfg.Sagas - statuses["completed"] - statuses["compensated"],
		SagasPerSec: float64(cfg.Sagas) / elapsed.Seconds(),
		E2EP50ms:    pct(e2e, 0.50), E2EP99ms: pct(e2e, 0.99), E2EP999ms: pct(e2e, 0.999),
		StartAckP99ms:      pct(ack, 0.99),
		ServerCPUmsPerSaga: (cpu1 - cpu0) * 1000 / float64(cfg.Sagas),
		PeakRSSMB:          rss / (1 << 20),
		EventsPerSaga:      float64(2 + 2*steps),
		ElapsedSec:         elapsed.Seconds(),
	}, nil
}

// serverProcess reads the server's CPU seconds and resident memory (bytes)
// from its /metrics.
func serverProcess(ctx context.Context, base string) (cpuSec, rssBytes float64, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(base, "/")+"/metrics", nil)
	if err != nil {
		return 0, 0, err
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, 0, fmt.Errorf("bench: read the server's metrics: %w", err)
	}
	defer res.Body.Close()
	found := 0
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			continue
		}
		switch name {
		case "process_cpu_seconds_total":
			cpuSec = v
			found++
		case "process_resident_memory_bytes":
			rssBytes = v
			found++
		}
	}
	if err := sc.Err(); err != nil {
		return 0, 0, fmt.Errorf("bench: read the server's metrics: %w", err)
	}
	if found < 2 {
		return 0, 0, fmt.Errorf("bench: the server's /metrics has no process_cpu_seconds_total or process_resident_memory_bytes")
	}
	return cpuSec, rssBytes, nil
}
