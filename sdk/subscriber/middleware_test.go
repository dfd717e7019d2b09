package subscriber

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/sony/gobreaker/v2"
)

var errFlaky = errors.New("flaky")

func TestRetry(t *testing.T) {
	ctx := context.Background()
	calls := 0
	h := Retry(RetryOptions{MaxRetries: 3, InitialInterval: time.Millisecond})(func(context.Context, *Message) error {
		calls++
		if calls < 3 {
			return errFlaky
		}
		return nil
	})
	if err := h(ctx, &Message{}); err != nil || calls != 3 {
		t.Fatalf("err %v after %d calls; want success after 3", err, calls)
	}

	calls = 0
	h = Retry(RetryOptions{MaxRetries: 2, InitialInterval: time.Millisecond})(func(context.Context, *Message) error {
		calls++
		return errFlaky
	})
	if err := h(ctx, &Message{}); !errors.Is(err, errFlaky) || calls != 3 {
		t.Fatalf("err %v after %d calls; want errFlaky after 3", err, calls)
	}

	calls = 0
	h = Retry(RetryOptions{InitialInterval: time.Millisecond})(func(context.Context, *Message) error {
		calls++
		return Permanent(errFlaky)
	})
	if err := h(ctx, &Message{}); !IsPermanent(err) || calls != 1 {
		t.Fatalf("permanent: err %v after %d calls; want no retry", err, calls)
	}

	// A done context ends the waits.
	cctx, cancel := context.WithCancel(ctx)
	calls = 0
	h = Retry(RetryOptions{MaxRetries: 100, InitialInterval: time.Hour})(func(context.Context, *Message) error {
		calls++
		cancel()
		return errFlaky
	})
	if err := h(cctx, &Message{}); !errors.Is(err, errFlaky) || calls != 1 {
		t.Fatalf("cancelled: err %v after %d calls", err, calls)
	}
}

func TestTimeout(t *testing.T) {
	h := Timeout(10 * time.Millisecond)(func(ctx context.Context, _ *Message) error {
		<-ctx.Done()
		return ctx.Err()
	})
	if err := h(context.Background(), &Message{}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err %v, want DeadlineExceeded", err)
	}
}

func TestCircuitBreaker(t *testing.T) {
	ctx := context.Background()
	calls := 0
	fail := true
	h := CircuitBreaker(gobreaker.Settings{
		Timeout:     time.Hour,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= 3 },
	})(func(context.Context, *Message) error {
		calls++
		if fail {
			return errFlaky
		}
		return nil
	})
	// Permanent errors are the message's fault, not the dependency's.
	perm := CircuitBreaker(gobreaker.Settings{ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= 1 }})(
		func(context.Context, *Message) error { return Permanent(errFlaky) })
	for range 3 {
		if err := perm(ctx, &Message{}); !IsPermanent(err) {
			t.Fatalf("permanent: %v", err)
		}
	}
	for range 3 {
		if err := h(ctx, &Message{}); !errors.Is(err, errFlaky) {
			t.Fatalf("err %v, want errFlaky", err)
		}
	}
	fail = false
	// Open for an hour: the message is held until its context ends, then
	// nacked for after the breaker's timeout, without a call.
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	err := h(short, &Message{})
	if !errors.Is(err, ErrBreakerOpen) || !errors.Is(err, gobreaker.ErrOpenState) || calls != 3 {
		t.Fatalf("err %v after %d calls; want ErrBreakerOpen without a call", err, calls)
	}
	if d := delayOf(err); d != time.Hour {
		t.Fatalf("delay %v, want the breaker's timeout", d)
	}

	// Open for 100ms: the message is held, then goes through the trial.
	calls = 0
	fail = true
	quick := CircuitBreaker(gobreaker.Settings{
		Timeout:     100 * time.Millisecond,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= 1 },
	})(func(context.Context, *Message) error {
		calls++
		if fail {
			return errFlaky
		}
		return nil
	})
	if err := quick(ctx, &Message{}); !errors.Is(err, errFlaky) {
		t.Fatalf("err %v, want errFlaky", err)
	}
	fail = false
	held := time.Now()
	if err := quick(ctx, &Message{}); err != nil || calls != 2 {
		t.Fatalf("err %v after %d calls; want the held message to succeed at the trial", err, calls)
	}
	if d := time.Since(held); d < 50*time.Millisecond {
		t.Fatalf("held %v: the breaker was open, the call should have waited", d)
	}
}

func TestRecoverer(t *testing.T) {
	h := Recoverer(func(context.Context, *Message) error { panic("boom") })
	err := h(context.Background(), &Message{})
	var p *PanicError
	if !errors.As(err, &p) || p.Value != "boom" || len(p.Stack) == 0 || err.Error() != "panic: boom" {
		t.Fatalf("err %v", err)
	}
}

func TestCorrelationID(t *testing.T) {
	var got string
	h := Chain(func(ctx context.Context, _ *Message) error {
		got = CorrelationIDFrom(ctx)
		return nil
	}, Recoverer, CorrelationID)
	if err := h(context.Background(), &Message{CorrelationID: "flow-7"}); err != nil || got != "flow-7" {
		t.Fatalf("got %q, %v", got, err)
	}
	if id := CorrelationIDFrom(context.Background()); id != "" {
		t.Fatalf("empty context carries %q", id)
	}
}

// Middleware order: the first is the outermost.
func TestChainOrder(t *testing.T) {
	var trace []string
	mw := func(name string) Middleware {
		return func(h Handler) Handler {
			return func(ctx context.Context, m *Message) error {
				trace = append(trace, name)
				return h(ctx, m)
			}
		}
	}
	h := Chain(func(context.Context, *Message) error { trace = append(trace, "h"); return nil }, mw("a"), mw("b"))
	_ = h(context.Background(), &Message{})
	if len(trace) != 3 || trace[0] != "a" || trace[1] != "b" || trace[2] != "h" {
		t.Fatalf("trace %v", trace)
	}
}

// A panicking handler behind Recoverer is nacked, and the subscriber
// lives on.
func TestRecovererInSubscriber(t *testing.T) {
	src := newFakeSource()
	start(t, src, func(_ context.Context, m *Message) error {
		if m.Key == "panic" {
			panic("boom")
		}
		return nil
	}, Options{Middleware: []Middleware{Recoverer}})
	p := src.push(1, func(m *Message) { m.Key = "panic" })[0]
	ok := src.push(1, nil)[0]
	got := answers(t, src, 2)
	if a := got[p]; a.ack || a.reason != "panic: boom" {
		t.Errorf("panic: %+v", a)
	}
	if !got[ok].ack {
		t.Errorf("after the panic: %+v", got[ok])
	}
}
