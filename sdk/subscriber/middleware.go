package subscriber

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime/debug"
	"time"

	"github.com/sony/gobreaker/v2"
)

// RetryOptions configure Retry. Zero fields take the defaults.
type RetryOptions struct {
	// MaxRetries is how often a failed handler runs again before the
	// error is returned (and the message nacked). Default 3.
	MaxRetries int
	// InitialInterval is the first wait; each next one is Multiplier
	// times longer, at most MaxInterval, with up to 20% jitter. Default
	// 100ms, 2, 10s.
	InitialInterval time.Duration
	Multiplier      float64
	MaxInterval     time.Duration
}

// Retry runs a failed handler again in the process, with backoff, before
// its error reaches the subscriber: a transient failure costs no delivery
// attempt. Permanent errors, and a context that is done, end the retries.
func Retry(opts RetryOptions) Middleware {
	opts.MaxRetries = cmp.Or(max(opts.MaxRetries, 0), 3)
	opts.InitialInterval = cmp.Or(max(opts.InitialInterval, 0), 100*time.Millisecond)
	opts.Multiplier = cmp.Or(max(opts.Multiplier, 0), 2)
	opts.MaxInterval = max(cmp.Or(max(opts.MaxInterval, 0), 10*time.Second), opts.InitialInterval)
	return func(h Handler) Handler {
		return func(ctx context.Context, m *Message) error {
			wait := opts.InitialInterval
			for retry := 0; ; retry++ {
				err := h(ctx, m)
				if err == nil || IsPermanent(err) || retry == opts.MaxRetries {
					return err
				}
				d := wait - time.Duration(rand.Int64N(int64(wait)/5+1))
				t := time.NewTimer(d)
				select {
				case <-ctx.Done():
					t.Stop()
					return err
				case <-t.C:
				}
				wait = min(time.Duration(float64(wait)*opts.Multiplier), opts.MaxInterval)
			}
		}
	}
}

// Timeout bounds a handler's run: its context is cancelled after d. The
// handler must honour its context for the bound to hold.
func Timeout(d time.Duration) Middleware {
	return func(h Handler) Handler {
		return func(ctx context.Context, m *Message) error {
			ctx, cancel := context.WithTimeout(ctx, d)
			defer cancel()
			return h(ctx, m)
		}
	}
}

// ErrBreakerOpen wraps the error of a message refused by CircuitBreaker.
var ErrBreakerOpen = errors.New("subscriber: circuit breaker open")

// CircuitBreaker stops calling a failing dependency: the handler runs
// through a github.com/sony/gobreaker/v2 breaker with settings st. While
// the breaker is open, a message is held rather than refused: the
// middleware waits, trying again every second or so, until the breaker lets
// a trial through (after st.Timeout, default 60s) — the subscriber's
// heartbeats keep the message claimed meanwhile, so an outage does not
// spend its deliveries, and the held messages fill the subscriber's
// concurrency, which pauses receiving. If ctx ends first (the subscriber
// stops), the message is nacked with ErrBreakerOpen, to be handed out again
// after the breaker's timeout. Permanent errors and cancelled contexts do
// not count as the dependency's failures.
func CircuitBreaker(st gobreaker.Settings) Middleware {
	if st.IsExcluded == nil {
		st.IsExcluded = func(err error) bool {
			return IsPermanent(err) || errors.Is(err, context.Canceled)
		}
	}
	wait := st.Timeout
	if wait <= 0 {
		wait = 60 * time.Second
	}
	probe := min(wait/4, time.Second)
	cb := gobreaker.NewCircuitBreaker[struct{}](st)
	return func(h Handler) Handler {
		return func(ctx context.Context, m *Message) error {
			for {
				_, err := cb.Execute(func() (struct{}, error) { return struct{}{}, h(ctx, m) })
				if !errors.Is(err, gobreaker.ErrOpenState) && !errors.Is(err, gobreaker.ErrTooManyRequests) {
					return err
				}
				t := time.NewTimer(probe)
				select {
				case <-ctx.Done():
					t.Stop()
					return Delay(fmt.Errorf("%w: %w", ErrBreakerOpen, err), wait)
				case <-t.C:
				}
			}
		}
	}
}

// PanicError is the error Recoverer makes of a handler's panic.
type PanicError struct {
	Value any
	Stack []byte
}

func (e *PanicError) Error() string { return fmt.Sprintf("panic: %v", e.Value) }

// Recoverer turns a handler's panic into a *PanicError, so that the
// message is nacked rather than the process crashing. Put it first (the
// outermost), so that it covers the other middleware too.
func Recoverer(h Handler) Handler {
	return func(ctx context.Context, m *Message) (err error) {
		defer func() {
			if v := recover(); v != nil {
				err = &PanicError{Value: v, Stack: debug.Stack()}
			}
		}()
		return h(ctx, m)
	}
}
