// Package claimloop is the loop shared by the SDK's consumers (pull
// workers and bus subscribers): claim as many items as there are free
// handler slots, hand each to a handler, back off after failures.
package claimloop

import (
	"context"
	"time"
)

// Config is one loop.
type Config[T any] struct {
	// Slots bounds the items in hand: a slot is taken per item claimed and
	// must be given back (<-Slots) when its handler is done.
	Slots chan struct{}
	// Max bounds the items one claim asks for.
	Max int
	// Claim asks for up to n items.
	Claim func(ctx context.Context, n int) ([]T, error)
	// Handle starts an item's handler; the handler gives its slot back.
	Handle func(item T)
	// Failed is told of a failed claim, and of the wait before the next.
	Failed func(err error, retryIn time.Duration)
	// BackoffMin and BackoffMax bound the waits after failed claims, which
	// double from one failure to the next.
	BackoffMin, BackoffMax time.Duration
}

// Run claims and hands out items until ctx is done.
func Run[T any](ctx context.Context, c Config[T]) {
	backoff := c.BackoffMin
	for {
		// Wait for one free slot, then take the others that are free.
		select {
		case c.Slots <- struct{}{}:
		case <-ctx.Done():
			return
		}
		n := 1
	take:
		for n < c.Max {
			select {
			case c.Slots <- struct{}{}:
				n++
			default:
				break take
			}
		}
		items, err := c.Claim(ctx, n)
		for range n - len(items) {
			<-c.Slots
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			c.Failed(err, backoff)
			t := time.NewTimer(backoff)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			backoff = min(backoff*2, c.BackoffMax)
			continue
		}
		backoff = c.BackoffMin
		for _, it := range items {
			c.Handle(it)
		}
	}
}
