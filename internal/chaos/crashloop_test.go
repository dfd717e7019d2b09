package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/accord-saga/accord/sdk/client"
)

// TestT1CrashLoop is scenario T1: sagas of 3 to 6 steps, some with a
// planned business failure, run on the embedded store while the server is
// killed with SIGKILL at random intervals and restarted on the same data.
// Starts go through the SDK with idempotency keys and are re-sent after
// each restart until acknowledged. At the end: no acknowledged saga lost,
// none still running, no step result recorded twice, no effect applied
// twice, every compensated saga compensated in reverse order.
func TestT1CrashLoop(t *testing.T) {
	t.Parallel()
	sagas, kills, minGap, maxGap := 300, 8, 300*time.Millisecond, 1200*time.Millisecond
	if full() {
		sagas, kills, minGap, maxGap = 10000, 30, time.Second, 4*time.Second
	}
	// Starts are spread over the kills (and some restart time), so that
	// every restart finds work to do.
	rate := float64(sagas) / (float64(kills) * ((minGap+maxGap)/2 + 300*time.Millisecond).Seconds())
	seed := seed(t)
	rng := rand.New(rand.NewPCG(seed, 1))
	dir := t.TempDir()
	p, err := NewParticipant(filepath.Join(dir, "ledger.db"), ParticipantConfig{
		ErrorRate: 0.02, Latency: time.Millisecond, LatencyJitter: 4 * time.Millisecond, Seed: seed})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	srv := startServer(t, filepath.Join(dir, "accord"))
	ctx := context.Background()
	retry := "{initial_interval: 20ms, max_interval: 500ms, max_attempts: 100}"
	for n := 3; n <= 6; n++ {
		def := definition(fmt.Sprintf("t1_%d", n), p.URL(), n, retry)
		if _, _, err := srv.client(t).RegisterDefinition(ctx, []byte(def), "application/yaml"); err != nil {
			t.Fatal(err)
		}
	}

	// The plan: each saga's steps and planned failure, from the seed.
	plans := make([]Expect, sagas)
	keys := make([]string, sagas)
	for i := range plans {
		n := 3 + rng.IntN(4)
		plans[i].Steps = stepNames(n)
		if rng.IntN(10) < 3 {
			plans[i].FailAt = plans[i].Steps[rng.IntN(n)]
		}
		keys[i] = fmt.Sprintf("t1-%d-%d", seed, i)
	}

	// Starters: paced, each start re-sent until acknowledged.
	var acked sync.WaitGroup
	acked.Add(sagas)
	allAcked := make(chan struct{})
	go func() { acked.Wait(); close(allAcked) }()
	work := make(chan int)
	begin := time.Now()
	go func() {
		for i := range sagas {
			if d := time.Until(begin.Add(time.Duration(float64(i) / rate * float64(time.Second)))); d > 0 {
				<-time.After(d) // pacing the load
			}
			work <- i
		}
		close(work)
	}()
	var resends sync.Map
	for range 8 {
		go func() {
			for i := range work {
				for attempt := 0; ; attempt++ {
					url, _, moved := srv.current()
					if url == "" {
						<-moved
						continue
					}
					c, err := client.New(url, client.WithRetries(0), client.WithTimeout(5*time.Second))
					if err != nil {
						panic(err)
					}
					res, err := c.StartSaga(ctx, client.StartRequest{
						Definition: fmt.Sprintf("t1_%d", len(plans[i].Steps)), IdempotencyKey: keys[i],
						Input: map[string]string{"fail_at": plans[i].FailAt}})
					if err == nil {
						plans[i].ID = res.ID
						resends.Store(i, attempt)
						acked.Done()
						break
					}
					select { // the server is going down, or busy: wait for a change or back off
					case <-moved:
					case <-time.After(50 * time.Millisecond):
					}
				}
			}
		}()
	}

	// The killer: SIGKILL at random intervals, restart at once, and time
	// the restart until the participant sees the next call.
	var restartToProgress []time.Duration
	noProgress, idleRestarts, killed := 0, 0, 0
	var lastRestart time.Time
	for killed < kills || !closed(allAcked) {
		<-time.After(minGap + time.Duration(rng.Int64N(int64(maxGap-minGap)))) // the random interval between kills
		srv.kill()
		killed++
		calls := p.Calls()
		lastRestart = time.Now()
		if err := srv.start(); err != nil {
			t.Fatalf("restart %d: %v", killed, err)
		}
		if closed(allAcked) && idle(ctx, t, srv) {
			idleRestarts++ // nothing left to make progress on
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if err := p.WaitCalls(pctx, calls); err != nil {
			noProgress++
		} else {
			restartToProgress = append(restartToProgress, time.Since(lastRestart))
		}
		cancel()
	}
	<-allAcked

	// Every acknowledged saga ends after the last restart. The deadline is
	// a last guard: on a busy machine the drain has taken over a minute,
	// and the ledger read at its end then raced the sagas still running.
	c := srv.client(t)
	ids := make([]string, sagas)
	for i := range plans {
		ids[i] = plans[i].ID
	}
	wctx, cancel := context.WithDeadline(ctx, lastRestart.Add(5*time.Minute))
	defer cancel()
	_ = waitTerminal(wctx, c, ids)

	// A start sent again with its key names the same saga.
	resent := 0
	resends.Range(func(_, v any) bool { resent += v.(int); return true })
	for i, key := range keys {
		res, err := c.StartSaga(ctx, client.StartRequest{Definition: fmt.Sprintf("t1_%d", len(plans[i].Steps)),
			IdempotencyKey: key, Input: map[string]string{"fail_at": plans[i].FailAt}})
		if err != nil {
			t.Fatalf("start %s again: %v", key, err)
		}
		if res.ID != plans[i].ID || res.Created {
			t.Errorf("start %s again: saga %s (created %v), first acknowledged as %s", key, res.ID, res.Created, plans[i].ID)
		}
	}

	ledger, err := p.Ledger(ctx)
	if err != nil {
		t.Fatal(err)
	}
	res := Check(ctx, c, ledger, plans)
	report(t, fmt.Sprintf("T1 seed=%d sagas=%d completed=%d compensated=%d kills=%d lost=%d duplicated=%d stuck=%d redeliveries=%d start_resends=%d calls=%d restart_to_progress_p99_ms=%d no_progress_restarts=%d idle_restarts=%d elapsed_s=%.0f",
		seed, res.Sagas, res.Completed, res.Compensated, killed, res.Lost, res.Duplicated, res.Stuck, res.Redeliveries,
		resent, len(ledger), p99(restartToProgress).Milliseconds(), noProgress, idleRestarts, time.Since(begin).Seconds()), res)
}

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// idle reports whether no saga is running or compensating on the server.
func idle(ctx context.Context, t *testing.T, srv *server) bool {
	page, err := srv.client(t).ListSagas(ctx, client.ListOptions{
		Status: []string{client.StatusRunning, client.StatusCompensating}, Limit: 1})
	return err == nil && len(page.Items) == 0
}
