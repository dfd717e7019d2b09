package server

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/accord-saga/accord/internal/engine"
	"github.com/accord-saga/accord/sdk/client"
)

// runServer runs Run on a free loopback port until the returned stop is
// called, and returns a client once the server is ready and the channel
// Run's error arrives on.
func runServer(t *testing.T, cfg Config) (*client.Client, context.CancelFunc, <-chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Addr = ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg) }()
	t.Cleanup(cancel)
	for deadline := time.Now().Add(30 * time.Second); ; {
		if res, err := http.Get("http://" + cfg.Addr + "/readyz"); err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case err := <-done:
			t.Fatalf("server: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("server not ready within 30s")
		}
	}
	c, err := client.New("http://" + cfg.Addr)
	if err != nil {
		t.Fatal(err)
	}
	return c, cancel, done
}

// TestShutdownStartsNoNewCall: once shutdown begins the server starts no
// call, while the calls in flight finish and their results are committed.
// A worker's long poll is open at the time, as in a busy server: it ends at
// once, empty, instead of holding the shutdown open while the server goes
// on calling.
func TestShutdownStartsNoNewCall(t *testing.T) {
	const sagas = 3
	var callsB atomic.Int64
	arrived := make(chan struct{}, sagas)
	release := make(chan struct{})
	calledB := make(chan struct{}, 64)
	participant := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/a":
			arrived <- struct{}{}
			select {
			case <-release:
			case <-r.Context().Done():
				return
			}
		case "/b":
			callsB.Add(1)
			calledB <- struct{}{}
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"done":true}`))
	}))
	defer participant.Close()

	cfg := DefaultConfig()
	cfg.DataDir, cfg.Partitions, cfg.LogLevel = t.TempDir(), 4, "error"
	cfg.PushAllow = []string{"http://127.0.0.1:*"}
	cfg.ShutdownTimeout = 20 * time.Second
	c, stop, done := runServer(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	def := fmt.Sprintf(`
name: two_calls
version: 1
steps:
  - name: a
    action: {http: %[1]q, name: do_a}
    compensation: {http: %[1]q, name: undo_a}
    attempt_timeout: 1m
  - name: b
    action: {http: %[2]q, name: do_b}
    compensation: {http: %[2]q, name: undo_b}
    attempt_timeout: 1m
`, participant.URL+"/a", participant.URL+"/b")
	if _, _, err := c.RegisterDefinition(ctx, []byte(def), "application/yaml"); err != nil {
		t.Fatal(err)
	}
	type polled struct {
		tasks []client.Task
		err   error
	}
	poll := make(chan polled, 1)
	go func() {
		tasks, err := c.Poll(ctx, "idle", client.PollOptions{Max: 1, Visibility: time.Minute, Wait: time.Minute})
		poll <- polled{tasks, err}
	}()
	var ids []string
	for range sagas {
		s, err := c.StartSaga(ctx, client.StartRequest{Definition: "two_calls", Input: map[string]int{"n": 1}})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, s.ID)
	}
	for range sagas {
		<-arrived // every saga's call to a is in flight
	}

	stop()
	// The server stops listening once it has stopped starting new work.
	runErr := make(chan error, 1)
	for deadline := time.Now().Add(30 * time.Second); ; {
		conn, err := net.Dial("tcp", c.BaseURL()[len("http://"):])
		if err != nil {
			break
		}
		conn.Close()
		if time.Now().After(deadline) {
			t.Fatal("the server still listens 30s after shutdown began")
		}
		select {
		case err := <-done:
			runErr <- err // gone already: nothing was in flight to wait for
		case <-time.After(5 * time.Millisecond):
			continue
		}
		break
	}
	close(release)
	select {
	case err := <-runErr:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-calledB:
		t.Fatal("a call to b started after shutdown began")
	case <-ctx.Done():
		t.Fatal("the server did not stop")
	}
	if n := callsB.Load(); n != 0 {
		t.Fatalf("%d calls to b started after shutdown began", n)
	}
	if p := <-poll; p.err != nil || len(p.tasks) != 0 {
		t.Errorf("the poll open at shutdown: %d tasks, %v; want none, no error", len(p.tasks), p.err)
	}

	// The calls in flight finished and their results are durable; b's
	// attempt is recorded, for the next start to call.
	store, err := OpenStore(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	eng, err := engine.New(engine.Config{Store: store})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		s, err := eng.GetSaga(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if a, b := s.View.Steps[0], s.View.Steps[1]; a.Status != "succeeded" || b.Attempts != 1 {
			t.Errorf("saga %s: a %s, b %s with %d attempts; want a succeeded, b's first attempt recorded", id, a.Status, b.Status, b.Attempts)
		}
	}
}
