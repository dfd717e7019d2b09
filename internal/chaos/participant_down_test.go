package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/accord-saga/accord/sdk/client"
)

// TestT6FailingParticipant is scenario T6: a participant answers 503 for
// a while with sagas in flight. Its breaker opens; the calls that reach it
// during the outage stay within the breaker's budget; Accord's API never
// answers the test with a 5xx; every saga completes after recovery.
func TestT6FailingParticipant(t *testing.T) {
	t.Parallel()
	sagas, outage := 200, 5*time.Second
	if full() {
		sagas, outage = 1000, 60*time.Second
	}
	const (
		breakerFailures = 5
		breakerOpen     = time.Second
		bulkhead        = 8
	)
	seed := seed(t)
	rng := rand.New(rand.NewPCG(seed, 6))
	dir := t.TempDir()
	p, err := NewParticipant(filepath.Join(dir, "ledger.db"), ParticipantConfig{
		Latency: time.Millisecond, LatencyJitter: 2 * time.Millisecond, Seed: seed})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	srv := startServer(t, filepath.Join(dir, "accord"),
		"--push-breaker-failures", fmt.Sprint(breakerFailures), "--push-breaker-open", breakerOpen.String(),
		"--push-bulkhead", fmt.Sprint(bulkhead))
	counter := &fiveXX{next: http.DefaultTransport}
	hc := &http.Client{Transport: counter}
	c := srv.client(t, client.WithHTTPClient(hc))
	ctx := context.Background()
	retry := "{initial_interval: 100ms, max_interval: 1s, max_attempts: 10000, jitter: 0.5}"
	for n := 1; n <= 3; n++ {
		if _, _, err := c.RegisterDefinition(ctx, []byte(definition(fmt.Sprintf("t6_%d", n), p.URL(), n, retry)), "application/yaml"); err != nil {
			t.Fatal(err)
		}
	}

	// The outage begins before the sagas start, so every one meets it. It
	// lasts until the breaker has opened and at least outage has passed:
	// on a busy machine the starts alone may take longer than outage, and
	// an outage that ended before the breaker opened would test nothing.
	outageStart := time.Now()
	p.SetDown(true)
	plans := make([]Expect, sagas)
	var wg sync.WaitGroup
	work := make(chan int)
	errs := make(chan error, sagas)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				def := fmt.Sprintf("t6_%d", len(plans[i].Steps))
				res, err := c.StartSaga(ctx, client.StartRequest{Definition: def, Input: map[string]string{"fail_at": ""}})
				if err != nil {
					errs <- fmt.Errorf("start %d: %w", i, err)
					continue
				}
				plans[i].ID = res.ID
			}
		}()
	}
	for i := range plans {
		plans[i].Steps = stepNames(1 + rng.IntN(3))
	}
	for i := range plans {
		work <- i
	}
	close(work)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	started := time.Since(outageStart)

	// The breaker opens during the outage.
	var openedAfter time.Duration
	for {
		if s := breakerState(t, hc, c.BaseURL()); s == "open" || s == "half-open" {
			openedAfter = time.Since(outageStart)
			break
		}
		if time.Since(outageStart) > outage+2*time.Minute { // a last guard
			t.Fatalf("the breaker did not open in %v of outage", time.Since(outageStart))
		}
		<-time.After(20 * time.Millisecond) // poll the breaker
	}
	<-time.After(time.Until(outageStart.Add(outage))) // the rest of the outage
	p.SetDown(false)
	outageEnd := time.Now()
	outage = outageEnd.Sub(outageStart)

	// Every saga completes after recovery (the deadline is a last guard).
	ids := make([]string, sagas)
	for i := range plans {
		ids[i] = plans[i].ID
	}
	wctx, cancel := context.WithDeadline(ctx, outageEnd.Add(5*time.Minute))
	defer cancel()
	_ = waitTerminal(wctx, c, ids)
	recovered := time.Since(outageEnd)

	downCalls, err := p.CountOutcome(ctx, OutcomeDown, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	// The budget: the failures that open the breaker, the calls already
	// in flight then (at most the bulkhead), and one half-open probe per
	// open period of the outage, plus one for the period under way.
	budget := breakerFailures + bulkhead + int(outage/breakerOpen) + 1
	ledger, err := p.Ledger(ctx)
	if err != nil {
		t.Fatal(err)
	}
	res := Check(ctx, c, ledger, plans)
	attempts := 0
	for _, id := range ids {
		s, err := c.GetSaga(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		for _, st := range s.Steps {
			attempts += st.Attempts
		}
	}
	state := breakerState(t, hc, c.BaseURL())
	report(t, fmt.Sprintf("T6 seed=%d sagas=%d outage_s=%.1f completed=%d lost=%d duplicated=%d stuck=%d calls_during_outage=%d probe_budget=%d attempts=%d api_5xx=%d breaker_open_after_ms=%d all_done_after_recovery_ms=%d starts_took_ms=%d breaker_after=%s",
		seed, res.Sagas, outage.Seconds(), res.Completed, res.Lost, res.Duplicated, res.Stuck, downCalls, budget, attempts,
		counter.n.Load(), openedAfter.Milliseconds(), recovered.Milliseconds(), started.Milliseconds(), state), res)
	if downCalls > budget {
		t.Errorf("%d calls reached the participant during the outage, budget %d", downCalls, budget)
	}
	if n := counter.n.Load(); n > 0 {
		t.Errorf("Accord's API answered %d requests with a 5xx", n)
	}
	if state != "closed" {
		t.Errorf("breaker %s after recovery, want closed", state)
	}
}

// breakerState reads the breaker state of the only push endpoint from
// /v1/breakers ("" when there is none yet).
func breakerState(t *testing.T, hc *http.Client, base string) string {
	t.Helper()
	resp, err := hc.Get(base + "/v1/breakers")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Breakers []struct {
			Endpoint string `json:"endpoint"`
			State    string `json:"state"`
		} `json:"breakers"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /v1/breakers: %d %v", resp.StatusCode, err)
	}
	if len(body.Breakers) != 1 {
		if len(body.Breakers) > 1 {
			t.Fatalf("%d breakers, want one: %+v", len(body.Breakers), body.Breakers)
		}
		return ""
	}
	return body.Breakers[0].State
}
