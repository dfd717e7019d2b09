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

// ambiguousStore writes the next commit but reports it failed, as when the
// link to the database breaks while COMMIT is on its way back.
type ambiguousStore struct {
	storage.Driver
	ambiguousNext atomic.Bool
}

func (s *ambiguousStore) Commit(ctx context.Context, p *storage.CommitParams) (*storage.CommitResult, error) {
	res, err := s.Driver.Commit(ctx, p)
	if err == nil && s.ambiguousNext.CompareAndSwap(true, false) {
		return nil, errors.New("test: connection lost while committing")
	}
	return res, err
}

// TestAmbiguousCommitIsReadBack: a saga's start is written but reported
// failed. Its first push attempt was never sent and no result or row will
// ever wake it; the engine reads it back from the store, its attempt
// timeout fires, and the retried attempt finishes it.
func TestAmbiguousCommitIsReadBack(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		inner, _ := b.open(t)
		store := &ambiguousStore{Driver: inner}
		push := make(chanPush, 16)
		e := startEngine(t, store, func(c *engine.Config) { c.Push = push })
		register(t, e, `
name: ambiguous
version: 1
steps:
  - name: a
    action: {http: "http://127.0.0.1:9/a", name: do_a}
    compensation: {http: "http://127.0.0.1:9/a", name: undo_a}
    attempt_timeout: 500ms
    retry: {initial_interval: 10ms}
`)
		ctx := context.Background()
		store.ambiguousNext.Store(true)
		_, err := e.StartSaga(ctx, engine.StartParams{Definition: "ambiguous", Input: []byte(`{}`), IdempotencyKey: "amb-1"})
		if err == nil {
			t.Fatal("the start was reported acknowledged; the test did not test anything")
		}
		// The client retries with its key and learns the saga exists.
		res, err := e.StartSaga(ctx, engine.StartParams{Definition: "ambiguous", Input: []byte(`{}`), IdempotencyKey: "amb-1"})
		if err != nil || res.Created {
			t.Fatalf("retried start: %+v, %v; want the saga the ambiguous commit wrote", res, err)
		}
		task := push.next(t)
		if task.Attempt != 2 {
			t.Fatalf("first dispatch is attempt %d, want 2 (attempt 1 was decided but never sent)", task.Attempt)
		}
		if err := e.CompleteTask(ctx, engine.Result{TaskID: task.ID, ClaimToken: task.ClaimToken, Outcome: "success", Output: []byte(`{}`)}); err != nil {
			t.Fatal(err)
		}
		if s := waitEnd(t, e, res.SagaID); s.Status != "completed" {
			t.Fatalf("status %s, want completed", s.Status)
		}
	})
}
