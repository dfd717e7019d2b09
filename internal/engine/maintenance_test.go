package engine_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/accord-saga/accord/internal/engine"
	"github.com/accord-saga/accord/internal/storage"
)

const slowDef = `
name: slow
version: 1
steps:
  - name: a
    action: {queue: slow, name: do_a}
    compensation: {queue: slow, name: undo_a}
    attempt_timeout: 1s
    retry: {initial_interval: 10ms}
`

// TestReconcilerRepairsMissingTimer deletes a waiting saga's attempt
// timer behind the engine's back; the reconciler re-creates it, and the
// saga goes on when it fires.
func TestReconcilerRepairsMissingTimer(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		store, _ := b.open(t)
		e := startEngine(t, store, func(c *engine.Config) { c.ReconcileInterval = 100 * time.Millisecond })
		register(t, e, slowDef)
		ctx := context.Background()
		p := &participant{}
		p.serve(t, e, []string{"slow"}, 1, func(task engine.Task) *engine.Result {
			if task.Attempt == 1 {
				return nil // the first attempt is lost: only its timer can move the saga on
			}
			return success(map[string]int{"ok": 1})
		})
		id := startSaga(t, e, "slow", map[string]int{"n": 1})
		timerID := id + "/a/action/1/attempt_timeout"
		var partition int
		waitFor(t, "attempt timer stored", func() bool {
			rec, err := store.SagaGet(ctx, id)
			if err != nil {
				return false
			}
			partition = rec.Partition
			return hasTimer(t, store, partition, timerID)
		})
		epoch := leaseEpoch(t, store, partition)
		if _, err := store.Commit(ctx, &storage.CommitParams{Partition: partition, Epoch: epoch, TimerDeletes: []string{timerID}}); err != nil {
			t.Fatalf("delete timer: %v", err)
		}
		if hasTimer(t, store, partition, timerID) {
			t.Fatal("timer still stored after delete")
		}
		waitFor(t, "timer re-created", func() bool { return hasTimer(t, store, partition, timerID) })
		if s := waitEnd(t, e, id); s.Status != "completed" {
			t.Fatalf("status %s, want completed", s.Status)
		}
		eq(t, "attempts", p.callsOf(id), []string{"action:a", "action:a"})
	})
}

func hasTimer(t *testing.T, store storage.Driver, partition int, id string) bool {
	t.Helper()
	timers, err := store.TimerList(context.Background(), &storage.TimerListParams{Partition: partition, Limit: 1000})
	if err != nil {
		t.Fatalf("list timers: %v", err)
	}
	for _, tm := range timers {
		if tm.ID == id {
			return true
		}
	}
	return false
}

func leaseEpoch(t *testing.T, store storage.Driver, partition int) int64 {
	t.Helper()
	leases, err := store.LeaseList(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return leases[partition].Epoch
}

// TestRetention deletes finished sagas once they are older than the
// retention, with their logs, and leaves running ones.
func TestRetention(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		store, _ := b.open(t)
		e := startEngine(t, store, func(c *engine.Config) {
			c.Retention = time.Millisecond
			c.RetentionInterval = 50 * time.Millisecond
		})
		register(t, e, orderDef)
		ctx := context.Background()
		p := &participant{}
		p.serve(t, e, orderQueues, 1, failAt(""))
		done := startSaga(t, e, "order", map[string]int{"total": 1})
		waitEnd(t, e, done)
		// A saga whose first step never runs stays unfinished.
		running, err := e.StartSaga(ctx, engine.StartParams{Definition: "slow", Input: []byte(`{}`)})
		if !errors.Is(err, engine.ErrDefinitionNotFound) {
			t.Fatalf("slow is not registered here: %v, %v", running, err)
		}
		register(t, e, slowDef)
		open := startSaga(t, e, "slow", map[string]int{"n": 1})
		waitFor(t, "finished saga deleted", func() bool {
			_, err := e.GetSaga(ctx, done)
			return errors.Is(err, engine.ErrSagaNotFound)
		})
		events, err := store.StreamRead(ctx, &storage.StreamReadParams{Stream: "saga/" + done})
		if err != nil || len(events) != 0 {
			t.Fatalf("log of a deleted saga: %d events (%v)", len(events), err)
		}
		if s, err := e.GetSaga(ctx, open); err != nil || s.Terminal {
			t.Fatalf("running saga: %+v, %v", s.Status, err)
		}
	})
}
