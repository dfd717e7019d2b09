package engine_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/accord-saga/accord/internal/engine"
	"github.com/accord-saga/accord/internal/saga"
	"github.com/accord-saga/accord/internal/storage"
)

// twoStepDef waits on pull workers; step b nests the saga input and a's
// output a few levels deeper, as a template may.
const twoStepDef = `
name: two
version: 1
steps:
  - name: a
    action: {queue: qa}
    compensation: {queue: qa}
  - name: b
    after: [a]
    action: {queue: qb}
    compensation: {queue: qb}
    input: {wrap: {input: "${input}", out: ["${steps.a.output}"]}}
`

// nested is a JSON value nested depth levels deep.
func nested(depth int) json.RawMessage {
	return json.RawMessage(strings.Repeat(`{"a":`, depth-1) + `[1]` + strings.Repeat(`}`, depth-1))
}

// pollOne claims the one task of queue.
func pollOne(t *testing.T, e *engine.Engine, queue string) engine.Task {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		tasks, err := e.PollTasks(ctx, engine.PollParams{Queue: queue, Max: 1, Visibility: time.Minute, Wait: time.Second})
		if err != nil {
			t.Fatalf("poll %s: %v", queue, err)
		}
		if len(tasks) == 1 {
			return tasks[0]
		}
	}
}

func complete(t *testing.T, e *engine.Engine, task engine.Task, output json.RawMessage) error {
	t.Helper()
	return e.CompleteTask(context.Background(), engine.Result{TaskID: task.ID, ClaimToken: task.ClaimToken, Outcome: "success", Output: output})
}

// TestJSONDepthLimit walks input and output nested exactly
// saga.MaxJSONDepth deep through every decoder on their way: start, the
// log and the snapshot in the store, reads, the task a worker decodes,
// and recovery by a new engine; one level more is refused at the door.
func TestJSONDepthLimit(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		store, reopen := b.open(t)
		e := startEngine(t, store, nil)
		register(t, e, twoStepDef)

		_, err := e.StartSaga(ctx, engine.StartParams{Definition: "two", Input: nested(saga.MaxJSONDepth + 1)})
		var de *saga.DepthError
		if !errors.Is(err, engine.ErrInvalidInput) || !errors.As(err, &de) {
			t.Fatalf("input one level too deep: %v", err)
		}

		in := nested(saga.MaxJSONDepth)
		res, err := e.StartSaga(ctx, engine.StartParams{Definition: "two", Input: in})
		if err != nil {
			t.Fatalf("input at the limit: %v", err)
		}
		if s, err := e.GetSaga(ctx, res.SagaID); err != nil || !bytes.Equal(s.View.Input, in) {
			t.Fatalf("read back: %v, input %s", err, s.View.Input)
		}
		task := pollOne(t, e, "qa")
		if err := complete(t, e, task, nested(saga.MaxJSONDepth+1)); !errors.Is(err, engine.ErrInvalidInput) || !errors.As(err, &de) {
			t.Fatalf("output one level too deep: %v", err)
		}
		if err := complete(t, e, task, nested(saga.MaxJSONDepth)); err != nil {
			t.Fatalf("output at the limit: %v", err)
		}
		// Step b's task carries both, deeper still; a worker decodes it.
		tb := pollOne(t, e, "qb")
		var v any
		if err := json.Unmarshal(tb.Input, &v); err != nil {
			t.Fatalf("worker decodes the task: %v", err)
		}

		// A new engine recovers the saga from its snapshot and runs it on.
		stopEngine(t, e)
		_ = store.Close()
		e2 := startEngine(t, reopen(t), nil)
		s, err := e2.GetSaga(ctx, res.SagaID)
		if err != nil || s.Status != "running" {
			t.Fatalf("after recovery: %v, %s", err, s.Status)
		}
		if e2.ActiveSagas() != 1 {
			t.Fatalf("%d sagas recovered, want 1", e2.ActiveSagas())
		}
		if err := complete(t, e2, tb, nil); err != nil {
			t.Fatalf("complete b after recovery: %v", err)
		}
		if s := waitEnd(t, e2, res.SagaID); s.Status != "completed" {
			t.Fatalf("saga %s", s.Status)
		}
	})
}

func stopEngine(t *testing.T, e *engine.Engine) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.Stop(ctx); err != nil {
		t.Fatalf("stop engine: %v", err)
	}
}

// samePartitionKeys returns n idempotency keys of one partition.
func samePartitionKeys(n int) []string {
	var keys []string
	want := storage.PartitionFor("k0", testPartitions)
	for i := 0; len(keys) < n; i++ {
		k := "k" + string(rune('0'+i%10)) + strings.Repeat("x", i/10)
		if storage.PartitionFor(k, testPartitions) == want {
			keys = append(keys, k)
		}
	}
	return keys
}

// TestQuarantine corrupts a saga's stored snapshot in the store. The next
// engine sets that saga aside and runs the rest of its partition; reads
// and metrics show it quarantined; inputs for it get ErrQuarantined, not an
// outage; an operator discards it, and retention then removes it.
func TestQuarantine(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		store, reopen := b.open(t)
		e := startEngine(t, store, nil)
		register(t, e, twoStepDef)
		keys := samePartitionKeys(2)
		var ids []string
		for _, k := range keys {
			res, err := e.StartSaga(ctx, engine.StartParams{Definition: "two", Input: json.RawMessage(`{"n":1}`), IdempotencyKey: k})
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, res.SagaID)
		}
		bad, good := ids[0], ids[1]
		stopEngine(t, e)
		_ = store.Close()
		b.setState(t, bad, []byte(`{"v":1,"s":{"saga_id":`))

		reg := prometheus.NewRegistry()
		store2 := reopen(t)
		e2 := startEngine(t, store2, func(c *engine.Config) { c.Registerer = reg })
		s, err := e2.GetSaga(ctx, bad)
		if err != nil || s.Status != engine.StatusQuarantined || s.Terminal || s.Quarantine == "" {
			t.Fatalf("bad saga: %v, %+v", err, s)
		}
		list, err := e2.ListSagas(ctx, &storage.SagaListParams{Statuses: []string{engine.StatusQuarantined}, Limit: 10})
		if err != nil || len(list) != 1 || list[0].ID != bad {
			t.Fatalf("quarantined list: %v, %+v", err, list)
		}
		if n := gaugeValue(t, reg, "accord_sagas_quarantined"); n != 1 {
			t.Fatalf("accord_sagas_quarantined = %v, want 1", n)
		}
		for _, err := range []error{e2.Cancel(ctx, bad, "x"), e2.OperatorRetry(ctx, bad)} {
			if !errors.Is(err, engine.ErrQuarantined) {
				t.Fatalf("input for the quarantined saga: %v", err)
			}
		}
		if err := e2.Discard(ctx, good); !errors.Is(err, engine.ErrNotQuarantined) {
			t.Fatalf("discard a running saga: %v", err)
		}

		// The partition runs its other saga to the end; the bad saga's
		// task, still queued, gets ErrQuarantined when completed.
		for range 2 {
			task := pollOne(t, e2, "qa")
			err := complete(t, e2, task, nil)
			switch task.SagaID {
			case good:
				if err != nil {
					t.Fatalf("complete the good saga's step: %v", err)
				}
			case bad:
				if !errors.Is(err, engine.ErrQuarantined) {
					t.Fatalf("complete the bad saga's step: %v", err)
				}
			}
		}
		if err := complete(t, e2, pollOne(t, e2, "qb"), nil); err != nil {
			t.Fatal(err)
		}
		if s := waitEnd(t, e2, good); s.Status != "completed" {
			t.Fatalf("good saga %s", s.Status)
		}

		if err := e2.Discard(ctx, bad); err != nil {
			t.Fatalf("discard: %v", err)
		}
		if s, err := e2.GetSaga(ctx, bad); err != nil || s.Status != engine.StatusDiscarded || !s.Terminal {
			t.Fatalf("discarded saga: %v, %+v", err, s)
		}
		if n := gaugeValue(t, reg, "accord_sagas_quarantined"); n != 0 {
			t.Fatalf("accord_sagas_quarantined = %v after the discard, want 0", n)
		}
		stopEngine(t, e2)
		_ = store2.Close()

		// Retention removes the discarded saga like any ended one.
		e3 := startEngine(t, reopen(t), func(c *engine.Config) {
			c.Retention = time.Millisecond
			c.RetentionInterval = 20 * time.Millisecond
		})
		waitFor(t, "discarded saga deleted", func() bool {
			_, err := e3.GetSaga(ctx, bad)
			return errors.Is(err, engine.ErrSagaNotFound)
		})
	})
}

// gaugeValue reads a gauge registered on reg.
func gaugeValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no gauge %s", name)
	return 0
}
