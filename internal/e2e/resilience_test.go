package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/accord-saga/accord/sdk/client"
)

// flaky is a push participant that answers 503 while down, and counts the
// requests that reach it and the most it served at once.
type flaky struct {
	down     atomic.Bool
	delay    time.Duration
	hits     atomic.Int64
	downHits atomic.Int64
	inFlight atomic.Int64
	peak     atomic.Int64
}

func (f *flaky) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.hits.Add(1)
	n := f.inFlight.Add(1)
	defer f.inFlight.Add(-1)
	for {
		p := f.peak.Load()
		if n <= p || f.peak.CompareAndSwap(p, n) {
			break
		}
	}
	if f.down.Load() {
		f.downHits.Add(1)
		http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
		return
	}
	if f.delay > 0 {
		time.Sleep(f.delay) // a slow participant
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte(`{"ok":true}`))
}

func flakyDefinition(name, url string) string {
	return fmt.Sprintf(`name: %s
version: 1
steps:
  - name: call
    action: {http: %q, name: call}
    compensation: {http: %q, name: undo}
    attempt_timeout: 5s
    retry: {initial_interval: 50ms, max_interval: 300ms, max_attempts: 200, jitter: 0.5}
`, name, url, url)
}

func startMany(t *testing.T, c *client.Client, def string, n int) []string {
	t.Helper()
	ids := make([]string, n)
	for i := range ids {
		res, err := c.StartSaga(context.Background(), client.StartRequest{Definition: def, Input: map[string]int{"i": i}})
		if err != nil {
			t.Fatalf("start %d: %v", i, err)
		}
		ids[i] = res.ID
	}
	return ids
}

func waitAll(t *testing.T, c *client.Client, ids []string, want string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	for _, id := range ids {
		s, err := c.WaitSaga(ctx, id)
		if err != nil {
			t.Fatalf("wait %s: %v", id, err)
		}
		if s.Status != want {
			t.Fatalf("saga %s: %s, want %s", id, s.Status, want)
		}
	}
}

// breakerState reads an endpoint's breaker state from /v1/breakers.
func breakerState(t *testing.T, base string) string {
	t.Helper()
	resp, err := http.Get(base + "/v1/breakers")
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
	for _, b := range body.Breakers {
		return b.State
	}
	return ""
}

// TestBreakerOpensWhileParticipantIsDown: a participant answers 503 for a
// while. Its breaker opens, calls to it fall to the half-open probes, the
// sagas wait, and every one finishes once it recovers.
func TestBreakerOpensWhileParticipantIsDown(t *testing.T) {
	t.Parallel()
	f := &flaky{}
	f.down.Store(true)
	url := pushServer(t, f)
	srv := startServer(t, t.TempDir(), "--push-breaker-failures", "5", "--push-breaker-open", "500ms")
	c := srv.client(t)
	if _, _, err := c.RegisterDefinition(context.Background(), []byte(flakyDefinition("flaky", url+"/call")), "application/yaml"); err != nil {
		t.Fatal(err)
	}
	outageStart := time.Now()
	ids := startMany(t, c, "flaky", 20)
	deadline := time.Now().Add(2 * time.Minute) // a last guard
	for s := breakerState(t, srv.url); s != "open" && s != "half-open"; s = breakerState(t, srv.url) {
		if time.Now().After(deadline) {
			t.Fatal("the breaker never opened")
		}
		time.Sleep(20 * time.Millisecond) // polling the breaker
	}
	// Two seconds of outage with the breaker in charge: 20 sagas retry
	// every 50-300 ms, so they make well over a hundred attempts, but only
	// half-open probes (one per 500 ms) reach the participant.
	time.Sleep(2 * time.Second) // the outage's length
	reached := f.downHits.Load()
	outage := time.Since(outageStart)
	attempts := 0
	for _, id := range ids {
		s, err := c.GetSaga(context.Background(), id)
		if err != nil {
			t.Fatalf("get %s: %v", id, err)
		}
		attempts += s.Steps[0].Attempts
	}
	f.down.Store(false)
	waitAll(t, c, ids, client.StatusCompleted)
	t.Logf("breaker: %d attempts during the outage, %d reached the participant", attempts, reached)
	// Before the breaker opened, up to 5 failures plus the calls already in
	// flight reached it (at most 20, one per saga); after, one probe per
	// open period of the outage so far (which a busy machine stretches),
	// plus one for the period under way.
	if limit := int64(5 + 20 + outage/(500*time.Millisecond) + 1); reached > limit {
		t.Fatalf("%d calls reached the participant while it was down, want at most %d", reached, limit)
	}
	if int64(attempts) <= reached {
		t.Fatalf("%d attempts, %d reached the participant: the breaker rejected none", attempts, reached)
	}
	if s := breakerState(t, srv.url); s != "closed" {
		t.Fatalf("breaker %s after recovery, want closed", s)
	}
}

// TestBulkheadCapsConcurrency: a slow participant behind a bulkhead of 2
// is never called more than twice at once; calls that find it full wait,
// then are retried, and every saga finishes. The server's goroutine count
// stays bounded throughout.
func TestBulkheadCapsConcurrency(t *testing.T) {
	t.Parallel()
	f := &flaky{delay: 50 * time.Millisecond}
	url := pushServer(t, f)
	srv := startServer(t, t.TempDir(), "--push-bulkhead", "2", "--push-bulkhead-wait", "30ms")
	c := srv.client(t)
	if _, _, err := c.RegisterDefinition(context.Background(), []byte(flakyDefinition("slow", url+"/call")), "application/yaml"); err != nil {
		t.Fatal(err)
	}
	var peakGoroutines atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			if n := goroutines(t, srv.url); n > peakGoroutines.Load() {
				peakGoroutines.Store(n)
			}
		}
	}()
	ids := startMany(t, c, "slow", 40)
	waitAll(t, c, ids, client.StatusCompleted)
	close(stop)
	wg.Wait()
	t.Logf("bulkhead: peak %d calls at once, %d requests, peak %d goroutines", f.peak.Load(), f.hits.Load(), peakGoroutines.Load())
	if p := f.peak.Load(); p > 2 {
		t.Fatalf("the participant served %d calls at once behind a bulkhead of 2", p)
	}
	// 64 push workers, 4 partition loops and the HTTP server's own: a few
	// hundred at most whatever the number of sagas.
	if g := peakGoroutines.Load(); g == 0 || g > 300 {
		t.Fatalf("peak goroutines %d, want a bounded number (0 < n <= 300)", g)
	}
}

// goroutines reads go_goroutines from the server's /metrics.
func goroutines(t *testing.T, base string) int64 {
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_goroutines "); ok {
			n, _ := strconv.ParseFloat(v, 64)
			return int64(n)
		}
	}
	return 0
}
