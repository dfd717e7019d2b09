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
`

// TestReconcilerRepairsMissingTask deletes the task a saga waits on behind
// the engine's back; the reconciler re-creates it, and a worker then runs
// it as the same attempt.
func TestReconcilerRepairsMissingTask(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		store, _ := b.open(t)
		e := startEngine(t, store, func(c *engine.Config) { c.ReconcileInterval = 100 * time.Millisecond })
		register(t, e, `
name: lost
version: 1
steps:
  - name: a
    action: {queue: lost, name: do_a}
    compensation: {queue: lost, name: undo_a}
    attempt_timeout: 1m
`)
		ctx := context.Background()
		id := startSaga(t, e, "lost", map[string]int{"n": 1})
		taskID := id + "/a/action/1"
		task := waitTask(t, store, taskID)
		epoch := leaseEpoch(t, store, task.Partition)
		if _, err := store.Commit(ctx, &storage.CommitParams{Partition: task.Partition, Epoch: epoch, TaskDeletes: []string{taskID}}); err != nil {
			t.Fatalf("delete task: %v", err)
		}
		waitTask(t, store, taskID)
		p := &participant{}
		p.serve(t, e, []string{"lost"}, 1, failAt(""))
		if s := waitEnd(t, e, id); s.Status != "completed" {
			t.Fatalf("status %s, want completed", s.Status)
		}
		eq(t, "attempts", p.callsOf(id), []string{"action:a"})
	})
}

// waitTask waits until a task row exists and returns it.
func waitTask(t *testing.T, store storage.Driver, id string) storage.Task {
	t.Helper()
	var task storage.Task
	waitFor(t, "task "+id, func() bool {
		var err error
		task, err = store.TaskGet(context.Background(), id)
		return err == nil
	})
	return task
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
