package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/accord-saga/accord/sdk/client"
)

// TestParticipantLinkFaults (figure line "T6-link") puts the proxy between
// Accord and the participant and, under load, resets its connections,
// blackholes it, or slows it past the attempt timeout, at random. Calls
// are lost before or after the effect, and attempts end with their outcome
// unknown; every saga must still end as planned with every effect once and
// every applied (or unknown) step compensated in reverse order.
func TestParticipantLinkFaults(t *testing.T) {
	t.Parallel()
	sagas, faultFor := 150, 6*time.Second
	if full() {
		sagas, faultFor = 2000, 60*time.Second
	}
	seed := seed(t)
	rng := rand.New(rand.NewPCG(seed, 61))
	dir := t.TempDir()
	p, err := NewParticipant(filepath.Join(dir, "ledger.db"), ParticipantConfig{
		Latency: time.Millisecond, LatencyJitter: 2 * time.Millisecond, Seed: seed})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	pu, err := url.Parse(p.URL())
	if err != nil {
		t.Fatal(err)
	}
	px, err := NewProxy(pu.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { px.Close() })
	srv := startServer(t, filepath.Join(dir, "accord"), "--push-breaker-failures", "100000")
	c := srv.client(t)
	ctx := context.Background()
	const attemptTimeout = time.Second
	def := definition("link", "http://"+px.Addr(), 3, "{initial_interval: 20ms, max_interval: 300ms, max_attempts: 1000}")
	def = strings.ReplaceAll(def, "attempt_timeout: 3s", "attempt_timeout: 1s")
	if _, _, err := c.RegisterDefinition(ctx, []byte(def), "application/yaml"); err != nil {
		t.Fatal(err)
	}

	plans := make([]Expect, sagas)
	for i := range plans {
		plans[i].Steps = stepNames(3)
		if rng.IntN(10) < 4 {
			plans[i].FailAt = plans[i].Steps[rng.IntN(3)]
		}
	}
	begin := time.Now()
	var wg sync.WaitGroup
	work := make(chan int)
	errs := make(chan error, sagas)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				res, err := c.StartSaga(ctx, client.StartRequest{Definition: "link", Input: map[string]string{"fail_at": plans[i].FailAt}})
				if err != nil {
					errs <- fmt.Errorf("start %d: %w", i, err)
					continue
				}
				plans[i].ID = res.ID
			}
		}()
	}
	go func() {
		for i := range sagas {
			if d := time.Until(begin.Add(faultFor * time.Duration(i) / time.Duration(sagas))); d > 0 {
				<-time.After(d) // pacing the load over the faults
			}
			work <- i
		}
		close(work)
	}()

	// The faults, at random until faultFor has passed and every saga has
	// started: on a busy machine the starts may lag behind their pace,
	// and faults with no calls under way would test nothing.
	allStarted := make(chan struct{})
	go func() { wg.Wait(); close(allStarted) }()
	var resets, blackholes, slowdowns int
	for time.Since(begin) < faultFor || !closed(allStarted) {
		<-time.After(time.Duration(100+rng.IntN(400)) * time.Millisecond) // the random moment of the next fault
		switch rng.IntN(3) {
		case 0:
			resets++
			px.Reset()
		case 1:
			blackholes++
			px.SetBlackhole(true)
			<-time.After(attemptTimeout + 500*time.Millisecond) // the blackhole's length: past the attempt timeout
			px.SetBlackhole(false)
			px.Reset() // the connections it swallowed
		case 2:
			slowdowns++
			px.SetLatency(attemptTimeout + 200*time.Millisecond)
			<-time.After(attemptTimeout) // the slowdown's length
			px.SetLatency(0)
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	faultsEnded := time.Now()
	ids := make([]string, sagas)
	for i := range plans {
		ids[i] = plans[i].ID
	}
	wctx, cancel := context.WithDeadline(ctx, faultsEnded.Add(5*time.Minute)) // a last guard
	defer cancel()
	_ = waitTerminal(wctx, c, ids)
	drain := time.Since(faultsEnded)

	ledger, err := p.Ledger(ctx)
	if err != nil {
		t.Fatal(err)
	}
	res := Check(ctx, c, ledger, plans)
	timedOut := 0
	for _, id := range ids {
		events, err := allEvents(ctx, c, id)
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range events {
			if strings.HasSuffix(ev.Type, ".timed_out") {
				timedOut++
			}
		}
	}
	report(t, fmt.Sprintf("T6-link seed=%d sagas=%d completed=%d compensated=%d resets=%d blackholes=%d slowdowns=%d attempts_timed_out=%d lost=%d duplicated=%d stuck=%d redeliveries=%d drain_ms=%d",
		seed, res.Sagas, res.Completed, res.Compensated, resets, blackholes, slowdowns, timedOut, res.Lost, res.Duplicated, res.Stuck,
		res.Redeliveries, drain.Milliseconds()), res)
	if timedOut == 0 {
		t.Errorf("no attempt timed out: the faults did not reach the participant's link")
	}
}
