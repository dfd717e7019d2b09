package engine_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/accord-saga/accord/internal/engine"
	"github.com/accord-saga/accord/internal/storage"
)

// failingStore fails the next commit on demand, as a store that is briefly
// unreachable would.
type failingStore struct {
	storage.Driver
	failNext atomic.Bool
	failed   atomic.Int64
}

func (s *failingStore) Commit(ctx context.Context, p *storage.CommitParams) (*storage.CommitResult, error) {
	if s.failNext.CompareAndSwap(true, false) {
		s.failed.Add(1)
		return nil, errors.New("test: the store is unreachable")
	}
	return s.Driver.Commit(ctx, p)
}

// TestTimerSurvivesFailedCommit: the commit that records a retry timer's
// firing fails; the timer fires again and the saga still finishes.
func TestTimerSurvivesFailedCommit(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		inner, _ := b.open(t)
		store := &failingStore{Driver: inner}
		e := startEngine(t, store, nil)
		register(t, e, `
name: retried
version: 1
steps:
  - name: a
    action: {queue: retried, name: do_a}
    compensation: {queue: retried, name: undo_a}
    retry: {initial_interval: 300ms, max_interval: 300ms, jitter: 0}
`)
		p := &participant{}
		p.serve(t, e, []string{"retried"}, 1, func(task engine.Task) *engine.Result {
			if task.Attempt == 1 {
				return retryable("busy")
			}
			return success(map[string]int{"ok": 1})
		})
		id := startSaga(t, e, "retried", map[string]int{"n": 1})
		// Once the retry is scheduled, the next commit of the saga's
		// partition is the retry timer's firing: fail that one.
		waitFor(t, "retry scheduled", func() bool {
			s, err := e.GetSaga(context.Background(), id)
			return err == nil && !s.View.Steps[0].NextAttemptAt.IsZero()
		})
		store.failNext.Store(true)
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		s, err := e.Wait(ctx, id)
		if err != nil || s.Status != "completed" {
			t.Fatalf("saga %s: %v (%v); want completed after the failed commit", id, s.Status, err)
		}
		if store.failed.Load() == 0 {
			t.Fatal("no commit failed: the test did not test anything")
		}
		eq(t, "attempts", p.callsOf(id), []string{"action:a", "action:a"})
	})
}
