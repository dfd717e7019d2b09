package dispatch

import (
	"context"
	"errors"
	"sync/atomic"
	"time"
)

// errBulkheadFull is returned when no slot of an endpoint freed up within
// the bulkhead's maximum wait.
var errBulkheadFull = errors.New("dispatch: bulkhead full")

// bulkhead caps the calls in flight to one endpoint: a slot is a token in
// a buffered channel, so the cap holds whatever the number of callers.
type bulkhead struct {
	slots   chan struct{}
	waiting atomic.Int64
}

func newBulkhead(max int) *bulkhead { return &bulkhead{slots: make(chan struct{}, max)} }

// acquire takes a slot, waiting at most maxWait. It returns errBulkheadFull
// when the wait expires and ctx's error when ctx ends first. Each nil
// return must be paired with one release.
func (b *bulkhead) acquire(ctx context.Context, maxWait time.Duration) error {
	select {
	case b.slots <- struct{}{}:
		return nil
	default:
	}
	if maxWait <= 0 {
		return errBulkheadFull
	}
	b.waiting.Add(1)
	defer b.waiting.Add(-1)
	t := time.NewTimer(maxWait)
	defer t.Stop()
	select {
	case b.slots <- struct{}{}:
		return nil
	case <-t.C:
		return errBulkheadFull
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (b *bulkhead) release() { <-b.slots }

func (b *bulkhead) inFlight() int { return len(b.slots) }

func (b *bulkhead) waitingCount() int { return int(b.waiting.Load()) }
