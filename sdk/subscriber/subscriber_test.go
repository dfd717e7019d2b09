package subscriber

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// wait bounds every wait of these tests: generous, for a loaded CI host.
const wait = 30 * time.Second

func start(t *testing.T, src *fakeSource, h Handler, opts Options) *Subscriber {
	t.Helper()
	opts.Wait = cmpOr(opts.Wait, 50*time.Millisecond)
	s := newSubscriber(src, "t", "g", h, opts)
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		if err := s.Stop(ctx); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
	return s
}

func cmpOr(d, def time.Duration) time.Duration {
	if d != 0 {
		return d
	}
	return def
}

// answers collects n answers, by message id.
func answers(t *testing.T, src *fakeSource, n int) map[string]answer {
	t.Helper()
	out := map[string]answer{}
	timeout := time.After(wait)
	for len(out) < n {
		select {
		case a := <-src.answers:
			if _, dup := out[a.id]; dup {
				t.Fatalf("message %s answered twice", a.id)
			}
			out[a.id] = a
		case <-timeout:
			t.Fatalf("%d of %d answers within %v", len(out), n, wait)
		}
	}
	return out
}

func TestAckNackAndDeadLetter(t *testing.T) {
	src := newFakeSource()
	errBad := errors.New("bad input")
	start(t, src, func(ctx context.Context, m *Message) error {
		switch m.Key {
		case "fail":
			return errors.New("database down")
		case "permanent":
			return Permanent(errBad)
		case "later":
			return Delay(errors.New("not yet"), 5*time.Second)
		case "long":
			return errors.New(strings.Repeat("é", MaxReason))
		}
		return nil
	}, Options{Concurrency: 3})
	keys := []string{"ok", "fail", "permanent", "later", "long"}
	ids := map[string]string{}
	for _, k := range keys {
		ids[k] = src.push(1, func(m *Message) { m.Key = k })[0]
	}
	got := answers(t, src, len(keys))
	if a := got[ids["ok"]]; !a.ack {
		t.Errorf("ok: %+v, want an ack", a)
	}
	if a := got[ids["fail"]]; a.ack || a.dead || a.reason != "database down" || a.delay != 0 {
		t.Errorf("fail: %+v, want a nack with the error as reason", a)
	}
	if a := got[ids["permanent"]]; a.ack || !a.dead || a.reason != "bad input" {
		t.Errorf("permanent: %+v, want a dead letter", a)
	}
	if a := got[ids["later"]]; a.ack || a.delay != 5*time.Second {
		t.Errorf("later: %+v, want a nack with a 5s delay", a)
	}
	if a := got[ids["long"]]; len(a.reason) > MaxReason || len(a.reason) < MaxReason-1 || !strings.HasPrefix(a.reason, "éé") {
		t.Errorf("long: reason of %d bytes, want it cut to %d", len(a.reason), MaxReason)
	}
}

// The subscriber runs Concurrency handlers at once, never more.
func TestConcurrency(t *testing.T) {
	const n = 4
	src := newFakeSource()
	var running, peak atomic.Int32
	all := make(chan struct{})
	var reached atomic.Bool
	start(t, src, func(ctx context.Context, m *Message) error {
		r := running.Add(1)
		defer running.Add(-1)
		for {
			p := peak.Load()
			if r <= p || peak.CompareAndSwap(p, r) {
				break
			}
		}
		if r == n && reached.CompareAndSwap(false, true) {
			close(all)
		}
		select {
		case <-all:
		case <-ctx.Done():
			return ctx.Err()
		}
		return nil
	}, Options{Concurrency: n, Max: 2})
	src.push(3*n, nil)
	got := answers(t, src, 3*n)
	for id, a := range got {
		if !a.ack {
			t.Errorf("%s: %+v", id, a)
		}
	}
	if p := peak.Load(); p != n {
		t.Errorf("peak concurrency %d, want %d", p, n)
	}
}

// A long handler's claim is extended while it runs; a lost claim cancels
// it, and its message gets no answer.
func TestHeartbeats(t *testing.T) {
	src := newFakeSource()
	release := make(chan struct{})
	causes := make(chan error, 1)
	start(t, src, func(ctx context.Context, m *Message) error {
		if m.Key == "lost" {
			<-ctx.Done()
			causes <- context.Cause(ctx)
			return ctx.Err()
		}
		<-release
		return nil
	}, Options{HeartbeatEvery: 5 * time.Millisecond})
	id := src.push(1, nil)[0]
	for range 3 {
		select {
		case got := <-src.hbNotify:
			if got != id {
				t.Fatalf("heartbeat for %s", got)
			}
		case <-time.After(wait):
			t.Fatal("no heartbeat")
		}
	}
	close(release)
	if a := answers(t, src, 1)[id]; !a.ack {
		t.Fatalf("%+v, want an ack", a)
	}
	src.mu.Lock()
	src.hbErr = ErrReceiptLost
	src.mu.Unlock()
	src.push(1, func(m *Message) { m.Key = "lost" })
	select {
	case cause := <-causes:
		if !errors.Is(cause, ErrReceiptLost) {
			t.Fatalf("cause %v, want ErrReceiptLost", cause)
		}
	case <-time.After(wait):
		t.Fatal("handler not cancelled")
	}
	select {
	case a := <-src.answers:
		// Stop (at cleanup) waits for the handler, so an answer would
		// be here by then; check once more below.
		t.Fatalf("answer %+v for a message whose claim was lost", a)
	default:
	}
	t.Cleanup(func() {
		select {
		case a := <-src.answers:
			t.Errorf("answer %+v for a message whose claim was lost", a)
		default:
		}
	})
}

// Stop stops receiving at once, lets running handlers finish, answers
// their messages, and leaves no goroutine behind.
func TestGracefulStop(t *testing.T) {
	src := newFakeSource()
	started := make(chan string, 10)
	release := make(chan struct{})
	s := newSubscriber(src, "t", "g", func(ctx context.Context, m *Message) error {
		started <- m.ID
		<-release
		return nil
	}, Options{Concurrency: 3, Wait: time.Minute}) // a slot free: a receive waits
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	ids := src.push(2, nil)
	for range 2 {
		select {
		case <-started:
		case <-time.After(wait):
			t.Fatal("handlers did not start")
		}
	}
	stopped := make(chan error, 1)
	go func() { stopped <- s.Stop(context.Background()) }()
	// The outstanding long poll is abandoned at once; Stop then waits for
	// the handlers.
	select {
	case <-src.recvCancelled:
	case <-time.After(wait):
		t.Fatal("Stop did not end the receive")
	}
	select {
	case err := <-stopped:
		t.Fatalf("Stop returned (%v) while handlers run", err)
	case <-time.After(50 * time.Millisecond): // would have returned by now
	}
	close(release)
	select {
	case err := <-stopped:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(wait):
		t.Fatal("Stop did not return")
	}
	got := answers(t, src, 2)
	for _, id := range ids {
		if !got[id].ack {
			t.Errorf("%s: %+v, want an ack", id, got[id])
		}
	}
	// Nothing is received after Stop.
	src.push(1, nil)
	select {
	case id := <-started:
		t.Fatalf("%s handled after Stop", id)
	default:
	}
	if err := s.Start(context.Background()); err == nil {
		t.Error("a stopped subscriber started again")
	}
}

// When Stop's context ends first, running handlers are cancelled and
// their messages nacked.
func TestStopDeadline(t *testing.T) {
	src := newFakeSource()
	started := make(chan struct{}, 1)
	s := newSubscriber(src, "t", "g", func(ctx context.Context, m *Message) error {
		started <- struct{}{}
		<-ctx.Done()
		return ctx.Err()
	}, Options{Wait: time.Minute})
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	id := src.push(1, nil)[0]
	select {
	case <-started:
	case <-time.After(wait):
		t.Fatal("handler did not start")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Stop(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Stop = %v, want context.Canceled", err)
	}
	a := answers(t, src, 1)[id]
	if a.ack || a.dead || !strings.Contains(a.reason, "stopped") {
		t.Fatalf("%+v, want a nack for the stop", a)
	}
}

func TestRun(t *testing.T) {
	src := newFakeSource()
	s := newSubscriber(src, "t", "g", func(context.Context, *Message) error { return nil }, Options{Wait: time.Minute})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, wait) }()
	id := src.push(1, nil)[0]
	if a := answers(t, src, 1)[id]; !a.ack {
		t.Fatalf("%+v", a)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(wait):
		t.Fatal("Run did not return")
	}
}

// Stop may be called before Start, and more than once.
func TestStopTwice(t *testing.T) {
	ctx := context.Background()
	s := newSubscriber(newFakeSource(), "t", "g", func(context.Context, *Message) error { return nil }, Options{})
	if err := s.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(ctx); err == nil {
		t.Fatal("a stopped subscriber started")
	}
	s = newSubscriber(newFakeSource(), "t", "g", func(context.Context, *Message) error { return nil }, Options{Wait: time.Minute})
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 2)
	for range 2 {
		go func() { errs <- s.Stop(ctx) }()
	}
	for range 2 {
		select {
		case err := <-errs:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(wait):
			t.Fatal("Stop did not return")
		}
	}
}
