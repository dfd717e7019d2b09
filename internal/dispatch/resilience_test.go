package dispatch

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/accord-saga/accord/internal/engine"
)

// transitions records breaker state changes.
type transitions struct {
	mu  sync.Mutex
	all []string
}

func (tr *transitions) add(_, from, to string) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.all = append(tr.all, from+"->"+to)
}

func (tr *transitions) list() []string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return slices.Clone(tr.all)
}

func TestBreakerOpensRejectsProbesAndCloses(t *testing.T) {
	t.Parallel()
	var healthy atomic.Bool
	probeIn := make(chan struct{}, 1)
	releaseProbe := make(chan struct{})
	var holdProbe atomic.Bool
	s, hits := server(t, func(w http.ResponseWriter, r *http.Request) {
		if holdProbe.Load() {
			probeIn <- struct{}{}
			select {
			case <-releaseProbe:
			case <-r.Context().Done():
				return
			}
		}
		if healthy.Load() {
			writeJSON(w, 200, `{"ok":true}`)
			return
		}
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	var tr transitions
	b := setup(t, func(c *Config) {
		c.Breaker = BreakerConfig{ConsecutiveFailures: 3, FailureRatio: -1, OpenTimeout: time.Second}
		c.OnBreakerChange = tr.add
	})
	ep := endpointOf(s)
	for i := range 3 {
		id := fmt.Sprintf("f%d", i)
		b.push.Dispatch(newTask(id, s.URL))
		if r := b.done.wait(t, id); r.ErrorCode != "http_503" || r.Outcome != OutcomeRetryable {
			t.Fatalf("call %d: %q %q", i, r.Outcome, r.ErrorCode)
		}
	}
	if st, _ := breakerOf(b.push, ep); st.State != "open" {
		t.Fatalf("breaker %+v, want open after 3 failures", st)
	}
	// Open: rejected at once, the participant sees nothing.
	for i := range 5 {
		id := fmt.Sprintf("o%d", i)
		b.push.Dispatch(newTask(id, s.URL))
		if r := b.done.wait(t, id); r.ErrorCode != CodeCircuitOpen || r.Outcome != OutcomeRetryable {
			t.Fatalf("open call %d: %q %q", i, r.Outcome, r.ErrorCode)
		}
	}
	if hits.Load() != 3 {
		t.Fatalf("%d hits, want 3: an open breaker must not reach the participant", hits.Load())
	}
	if st := b.push.Stats(); st.CircuitOpen != 5 {
		t.Errorf("circuit open count %d, want 5", st.CircuitOpen)
	}

	// After the open timeout: half-open lets one probe through; a second
	// call meanwhile is rejected.
	healthy.Store(true)
	holdProbe.Store(true)
	eventually(t, "half-open", func() bool {
		st, _ := breakerOf(b.push, ep)
		return st.State == "half-open"
	})
	b.push.Dispatch(newTask("probe", s.URL))
	<-probeIn
	holdProbe.Store(false)
	b.push.Dispatch(newTask("second", s.URL))
	if r := b.done.wait(t, "second"); r.ErrorCode != CodeCircuitOpen {
		t.Fatalf("second call during the probe: %q %q", r.Outcome, r.ErrorCode)
	}
	if hits.Load() != 4 {
		t.Fatalf("%d hits, want 4 (3 failures + 1 probe)", hits.Load())
	}
	close(releaseProbe)
	if r := b.done.wait(t, "probe"); r.Outcome != OutcomeSuccess {
		t.Fatalf("probe: %q %q", r.Outcome, r.ErrorCode)
	}
	if st, _ := breakerOf(b.push, ep); st.State != "closed" {
		t.Fatalf("breaker %+v, want closed after a successful probe", st)
	}
	b.push.Dispatch(newTask("after", s.URL))
	if r := b.done.wait(t, "after"); r.Outcome != OutcomeSuccess {
		t.Fatalf("after close: %q %q", r.Outcome, r.ErrorCode)
	}
	want := []string{"closed->open", "open->half-open", "half-open->closed"}
	if got := tr.list(); !slices.Equal(got, want) {
		t.Errorf("transitions %v, want %v", got, want)
	}
}

func TestBreakerHalfOpenFailureReopens(t *testing.T) {
	t.Parallel()
	s, hits := server(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusBadGateway)
	})
	var tr transitions
	b := setup(t, func(c *Config) {
		c.Breaker = BreakerConfig{ConsecutiveFailures: 2, FailureRatio: -1, OpenTimeout: time.Second}
		c.OnBreakerChange = tr.add
	})
	ep := endpointOf(s)
	for i := range 2 {
		id := fmt.Sprintf("f%d", i)
		b.push.Dispatch(newTask(id, s.URL))
		b.done.wait(t, id)
	}
	eventually(t, "half-open", func() bool {
		st, _ := breakerOf(b.push, ep)
		return st.State == "half-open"
	})
	b.push.Dispatch(newTask("probe", s.URL))
	if r := b.done.wait(t, "probe"); r.ErrorCode != "http_502" {
		t.Fatalf("probe: %q", r.ErrorCode)
	}
	if st, _ := breakerOf(b.push, ep); st.State != "open" {
		t.Fatalf("breaker %+v, want open after a failed probe", st)
	}
	if hits.Load() != 3 {
		t.Errorf("%d hits, want 3", hits.Load())
	}
	want := []string{"closed->open", "open->half-open", "half-open->open"}
	if got := tr.list(); !slices.Equal(got, want) {
		t.Errorf("transitions %v, want %v", got, want)
	}
}

func TestBreakerIgnoresBusinessFailures(t *testing.T) {
	t.Parallel()
	s, hits := server(t, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusConflict, `{"code":"insufficient_funds"}`)
	})
	b := setup(t, func(c *Config) {
		c.Breaker = BreakerConfig{ConsecutiveFailures: 2, MinRequests: 2, FailureRatio: 0.1}
	})
	for i := range 6 {
		id := fmt.Sprintf("b%d", i)
		b.push.Dispatch(newTask(id, s.URL))
		if r := b.done.wait(t, id); r.Outcome != OutcomeFailure || r.ErrorCode != "insufficient_funds" {
			t.Fatalf("call %d: %q %q", i, r.Outcome, r.ErrorCode)
		}
	}
	st, _ := breakerOf(b.push, endpointOf(s))
	if st.State != "closed" || st.Failures != 0 || st.Successes != 6 {
		t.Errorf("breaker %+v, want closed with 6 successes", st)
	}
	if hits.Load() != 6 {
		t.Errorf("%d hits", hits.Load())
	}
}

func TestBreakerFailureRatio(t *testing.T) {
	t.Parallel()
	var n atomic.Int64
	s, _ := server(t, func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1)%2 == 0 {
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		w.WriteHeader(204)
	})
	b := setup(t, func(c *Config) {
		c.Breaker = BreakerConfig{ConsecutiveFailures: 100, MinRequests: 4, FailureRatio: 0.5, Window: time.Minute}
	})
	ep := endpointOf(s)
	for i := range 4 {
		id := fmt.Sprintf("r%d", i)
		b.push.Dispatch(newTask(id, s.URL))
		b.done.wait(t, id)
		st, _ := breakerOf(b.push, ep)
		if wantOpen := i == 3; (st.State == "open") != wantOpen {
			t.Fatalf("after call %d: breaker %+v", i, st)
		}
	}
}

func TestBulkheadCapAndMaxWait(t *testing.T) {
	t.Parallel()
	var cur, peak atomic.Int64
	entered := make(chan struct{}, 16)
	release := make(chan struct{})
	s, hits := server(t, func(w http.ResponseWriter, r *http.Request) {
		c := cur.Add(1)
		defer cur.Add(-1)
		for {
			p := peak.Load()
			if c <= p || peak.CompareAndSwap(p, c) {
				break
			}
		}
		entered <- struct{}{}
		select {
		case <-release:
			w.WriteHeader(204)
		case <-r.Context().Done():
		}
	})
	b := setup(t, func(c *Config) {
		c.Workers = 10
		c.Bulkhead = BulkheadConfig{MaxConcurrent: 3, MaxWait: 100 * time.Millisecond}
	})
	for i := range 10 {
		b.push.Dispatch(newTask(fmt.Sprintf("k%d", i), s.URL))
	}
	for range 3 {
		<-entered
	}
	// Seven calls wait 100ms for a slot and give up.
	eventually(t, "seven bulkhead_full results", func() bool { return b.done.count() == 7 })
	for i := range 10 {
		if r, ok := b.done.get(fmt.Sprintf("k%d", i)); ok && (r.ErrorCode != CodeBulkheadFull || r.Outcome != OutcomeRetryable) {
			t.Fatalf("early result %+v", r)
		}
	}
	if st, _ := breakerOf(b.push, endpointOf(s)); st.InFlight != 3 || st.Waiting != 0 {
		t.Errorf("bulkhead state %+v, want 3 in flight", st)
	}
	close(release)
	eventually(t, "all results", func() bool { return b.done.count() == 10 })
	if peak.Load() != 3 || hits.Load() != 3 {
		t.Errorf("peak concurrency %d, hits %d; want 3 and 3", peak.Load(), hits.Load())
	}
	if st := b.push.Stats(); st.BulkheadFull != 7 || st.Success != 3 || st.Retryable != 7 {
		t.Errorf("stats %+v", st)
	}
}

func TestBulkheadCapUnderLoad(t *testing.T) {
	t.Parallel()
	var cur, peak atomic.Int64
	s, _ := server(t, func(w http.ResponseWriter, r *http.Request) {
		c := cur.Add(1)
		defer cur.Add(-1)
		for {
			p := peak.Load()
			if c <= p || peak.CompareAndSwap(p, c) {
				break
			}
		}
		w.WriteHeader(204)
	})
	b := setup(t, func(c *Config) {
		c.Workers = 24
		c.Bulkhead = BulkheadConfig{MaxConcurrent: 4, MaxWait: waitTimeout}
	})
	const n = 400
	for i := range n {
		task := newTask(fmt.Sprintf("l%d", i), s.URL)
		task.AttemptTimeoutMS = 0 // the default 30s: a busy machine is slow
		b.push.Dispatch(task)
	}
	for i := range n {
		if r := b.done.wait(t, fmt.Sprintf("l%d", i)); r.Outcome != OutcomeSuccess {
			t.Fatalf("task %d: %q %q", i, r.Outcome, r.ErrorCode)
		}
	}
	if p := peak.Load(); p > 4 || p < 1 {
		t.Errorf("peak concurrency %d, cap 4", p)
	}
}

// TestRequestFaultsLeaveBreakerClosed: requests that fail because of
// themselves (a header value the client will not send) say nothing about
// the endpoint. Forty of them leave a healthy endpoint's breaker closed,
// and an unrelated call still succeeds.
func TestRequestFaultsLeaveBreakerClosed(t *testing.T) {
	t.Parallel()
	s, hits := server(t, func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, `{"ok":true}`) })
	var tr transitions
	b := setup(t, func(c *Config) {
		c.Breaker = BreakerConfig{ConsecutiveFailures: 5, FailureRatio: -1, OpenTimeout: time.Minute}
		c.OnBreakerChange = tr.add
	})
	for i := range 40 {
		h := http.Header{}
		h.Set("Accord-Correlation-Id", fmt.Sprintf("c%d\r\nInjected: yes", i))
		status, retryable, err := b.push.Deliver(context.Background(), s.URL, h, []byte(`{}`), time.Second)
		if err == nil || retryable || status != 0 {
			t.Fatalf("delivery %d: status %d, retryable %v, err %v; want a final error", i, status, retryable, err)
		}
	}
	if hits.Load() != 0 {
		t.Fatalf("%d hits: a refused request must not reach the endpoint", hits.Load())
	}
	if st, _ := breakerOf(b.push, endpointOf(s)); st.State != "closed" || st.Failures != 0 {
		t.Fatalf("breaker %+v: request faults counted against the endpoint", st)
	}
	if got := tr.list(); len(got) != 0 {
		t.Fatalf("breaker changed state: %v", got)
	}
	b.push.Dispatch(newTask("unrelated", s.URL))
	if r := b.done.wait(t, "unrelated"); r.Outcome != OutcomeSuccess {
		t.Fatalf("unrelated call: %q %q %q", r.Outcome, r.ErrorCode, r.ErrorMessage)
	}
}

// TestPushRequestFaultIsTaskFailure: a push request the client refuses to
// send (here a propagated header with a line break) is a failure of the
// task, not of the endpoint.
func TestPushRequestFaultIsTaskFailure(t *testing.T) {
	t.Parallel()
	s, hits := server(t, func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, `{"ok":true}`) })
	b := setup(t, func(c *Config) {
		c.Breaker = BreakerConfig{ConsecutiveFailures: 3, FailureRatio: -1, OpenTimeout: time.Minute}
		c.Propagate = func(_ context.Context, t engine.Task, h http.Header) {
			if strings.HasPrefix(t.ID, "bad") {
				h.Set("Baggage", "a\nb")
			}
		}
	})
	for i := range 10 {
		id := fmt.Sprintf("bad%d", i)
		b.push.Dispatch(newTask(id, s.URL))
		if r := b.done.wait(t, id); r.Outcome != OutcomeFailure || r.ErrorCode != CodeInvalidTask {
			t.Fatalf("call %d: %q %q", i, r.Outcome, r.ErrorCode)
		}
	}
	if st, _ := breakerOf(b.push, endpointOf(s)); st.State != "closed" || st.Failures != 0 {
		t.Fatalf("breaker %+v: request faults counted against the endpoint", st)
	}
	b.push.Dispatch(newTask("good", s.URL))
	if r := b.done.wait(t, "good"); r.Outcome != OutcomeSuccess || hits.Load() != 1 {
		t.Fatalf("good call: %q %q, %d hits", r.Outcome, r.ErrorCode, hits.Load())
	}
}
