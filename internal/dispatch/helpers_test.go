package dispatch

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/accord-saga/accord/internal/engine"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// waitTimeout bounds every wait of these tests.
const waitTimeout = 15 * time.Second

// completer records results as the engine would, and lets tests wait for
// them.
type completer struct {
	mu      sync.Mutex
	results map[string]engine.Result
	calls   int
	changed chan struct{}
	err     error // returned by Complete when set
}

func newCompleter() *completer {
	return &completer{results: map[string]engine.Result{}, changed: make(chan struct{})}
}

func (c *completer) Complete(_ context.Context, r engine.Result) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls++
	c.results[r.TaskID] = r
	close(c.changed)
	c.changed = make(chan struct{})
	return c.err
}

// wait returns the result of task id, failing the test past waitTimeout.
func (c *completer) wait(t *testing.T, id string) engine.Result {
	t.Helper()
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	for {
		c.mu.Lock()
		r, ok := c.results[id]
		changed := c.changed
		c.mu.Unlock()
		if ok {
			return r
		}
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("no result for task %s within %s", id, waitTimeout)
		}
	}
}

func (c *completer) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls
}

func (c *completer) get(id string) (engine.Result, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r, ok := c.results[id]
	return r, ok
}

func newTask(id, url string) engine.Task {
	var t engine.Task
	t.ID = id
	t.ClaimToken = "claim-" + id
	t.Queue = engine.PushQueue
	t.Deliveries = 1
	t.SagaID = "saga-1"
	t.Partition = 3
	t.Epoch = 7
	t.Definition = "order"
	t.DefinitionVersion = 2
	t.Step = "reserve"
	t.Phase = "action"
	t.Attempt = 1
	t.URL = url
	t.IdempotencyKey = "idem-" + id
	t.AttemptTimeoutMS = 5000
	t.Input = json.RawMessage(`{"sku":"a-1","qty":2}`)
	return t
}

type bundle struct {
	push *Push
	done *completer
}

// setup builds and starts a dispatcher allowed to call loopback, with the
// given changes to its configuration; the test's cleanup stops it.
func setup(t *testing.T, change func(*Config)) *bundle {
	t.Helper()
	done := newCompleter()
	cfg := Config{
		Complete: done.Complete,
		Allow:    []string{"127.0.0.1/32"},
		Workers:  8,
		Logger:   slog.New(slog.DiscardHandler),
		Version:  "test",
	}
	if change != nil {
		change(&cfg)
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := p.Start(context.Background()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		if err := p.Stop(ctx); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
	return &bundle{push: p, done: done}
}

// server starts a loopback participant that counts its hits; Close runs at
// the test's cleanup (after the dispatcher's Stop, registered later).
func server(t *testing.T, h http.HandlerFunc) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var hits atomic.Int64
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		// Read the body first: the server notices a client that went away
		// (and cancels r.Context()) only once the body is consumed.
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		h(w, r)
	}))
	t.Cleanup(s.Close)
	return s, &hits
}

// eventually polls cond until it holds, failing the test past waitTimeout.
// For states that change without a signal (a breaker's open timeout).
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

func breakerOf(p *Push, endpoint string) (BreakerState, bool) {
	for _, b := range p.Breakers() {
		if b.Endpoint == endpoint {
			return b, true
		}
	}
	return BreakerState{}, false
}

// endpointOf is the breaker key of a test server.
func endpointOf(s *httptest.Server) string { return s.URL }

func writeJSON(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(body))
}
