package engine_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/accord-saga/accord/internal/engine"
	"github.com/accord-saga/accord/internal/storage"
)

// chanPush is a PushDispatcher that hands tasks to the test.
type chanPush chan engine.Task

func (c chanPush) Dispatch(t engine.Task) { c <- t }

func (c chanPush) next(t *testing.T) engine.Task {
	t.Helper()
	select {
	case task := <-c:
		return task
	case <-time.After(10 * time.Second):
		t.Fatal("no push task dispatched")
		return engine.Task{}
	}
}

const pushDef = `
name: pushed
version: 1
steps:
  - name: a
    action: {http: "http://127.0.0.1:9/a", name: do_a}
    compensation: {http: "http://127.0.0.1:9/a", name: undo_a}
    attempt_timeout: 1m
  - name: b
    action: {http: "http://127.0.0.1:9/b", name: do_b}
    compensation: {http: "http://127.0.0.1:9/b", name: undo_b}
    attempt_timeout: 1m
`

// startPushEngine starts an engine whose push attempts go to the returned
// channel; the test stops it.
func startPushEngine(t *testing.T, store storage.Driver) (*engine.Engine, chanPush) {
	t.Helper()
	push := make(chanPush, 16)
	e, err := engine.New(engine.Config{Store: store, Logger: quietLogger(), Push: push})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	return e, push
}

// TestPushAttemptRedispatchedAfterRestart: a push attempt in flight when
// the engine stops is dispatched again by the next engine, from the saga's
// state, and a result for the old dispatch is refused.
func TestPushAttemptRedispatchedAfterRestart(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		store, reopen := b.open(t)
		ctx := context.Background()
		e1, push1 := startPushEngine(t, store)
		register(t, e1, pushDef)
		id := startSaga(t, e1, "pushed", map[string]int{"n": 1})
		first := push1.next(t)
		if first.Step != "a" || first.Attempt != 1 || first.URL != "http://127.0.0.1:9/a" || first.IdempotencyKey == "" {
			t.Fatalf("first dispatch = %+v", first)
		}
		if err := e1.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		_ = store.Close()

		push2 := make(chanPush, 16)
		e2 := startEngine(t, reopen(t), func(c *engine.Config) { c.Push = push2 })
		again := push2.next(t)
		if again.ID != first.ID || again.Attempt != 1 || again.IdempotencyKey != first.IdempotencyKey {
			t.Fatalf("re-dispatch = %+v, want the same attempt as %+v", again, first)
		}
		stale := engine.Result{TaskID: first.ID, ClaimToken: first.ClaimToken, Outcome: "success"}
		if err := e2.CompleteTask(ctx, stale); !errors.Is(err, engine.ErrTaskNotFound) {
			t.Fatalf("result for the old dispatch: %v, want ErrTaskNotFound", err)
		}
		task := again
		for _, step := range []string{"a", "b"} {
			if task.Step != step {
				t.Fatalf("dispatched %s, want %s", task.Step, step)
			}
			if err := e2.CompleteTask(ctx, engine.Result{TaskID: task.ID, ClaimToken: task.ClaimToken, Outcome: "success", Output: []byte(`{}`)}); err != nil {
				t.Fatalf("complete %s: %v", task.ID, err)
			}
			if step == "a" {
				task = push2.next(t)
			}
		}
		if s := waitEnd(t, e2, id); s.Status != "completed" {
			t.Fatalf("status %s, want completed", s.Status)
		}
	})
}

// TestPushStepNeedsAttemptTimeout: a push step without an attempt timeout
// is refused at registration.
func TestPushStepNeedsAttemptTimeout(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		store, _ := b.open(t)
		e := startEngine(t, store, nil)
		_, _, err := e.RegisterDefinition(context.Background(), []byte(`
name: forever
version: 1
steps:
  - name: a
    action: {http: "http://127.0.0.1:9/a", name: do_a}
    compensation: {http: "http://127.0.0.1:9/a", name: undo_a}
    attempt_timeout: 0s
`))
		if !errors.Is(err, engine.ErrInvalidInput) {
			t.Fatalf("register: %v, want ErrInvalidInput", err)
		}
	})
}

// TestQuiesceHandsOutNoNewWork: once quiesced, the engine records the
// result of a push call in flight but dispatches no new attempt, and a poll
// claims nothing although a task waits; the next engine on the store
// dispatches the attempt that was held back.
func TestQuiesceHandsOutNoNewWork(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		store, reopen := b.open(t)
		ctx := context.Background()
		e1, push1 := startPushEngine(t, store)
		register(t, e1, pushDef)
		register(t, e1, `
name: pulled
version: 1
steps:
  - name: a
    action: {queue: quiesce, name: do_a}
    compensation: {queue: quiesce, name: undo_a}
`)
		id := startSaga(t, e1, "pushed", map[string]int{"n": 1})
		startSaga(t, e1, "pulled", map[string]int{"n": 1})
		inFlight := push1.next(t)

		e1.Quiesce()
		res := engine.Result{TaskID: inFlight.ID, ClaimToken: inFlight.ClaimToken, Outcome: "success", Output: []byte(`{}`)}
		if err := e1.CompleteTask(ctx, res); err != nil {
			t.Fatalf("result of the call in flight: %v", err)
		}
		// The loop dispatches after the commit and before it answers: had
		// it handed b out, b would be in the channel now.
		if n := len(push1); n != 0 {
			t.Fatalf("%d push attempts dispatched after Quiesce: %+v", n, <-push1)
		}
		s, err := e1.GetSaga(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if a, b := s.View.Steps[0], s.View.Steps[1]; a.Status != "succeeded" || b.Attempts != 1 {
			t.Fatalf("after the result: a %s, b %s with %d attempts; want a succeeded and b's attempt recorded", a.Status, b.Status, b.Attempts)
		}
		pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		tasks, err := e1.PollTasks(pctx, engine.PollParams{Queue: "quiesce", Max: 1, Visibility: time.Minute, Wait: engine.MaxPollWait})
		if err != nil || len(tasks) != 0 {
			t.Fatalf("poll after Quiesce: %d tasks, %v; want none at once", len(tasks), err)
		}
		if err := e1.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		_ = store.Close()

		push2 := make(chanPush, 16)
		e2 := startEngine(t, reopen(t), func(c *engine.Config) { c.Push = push2 })
		if held := push2.next(t); held.SagaID != id || held.Step != "b" || held.Attempt != 1 {
			t.Fatalf("next engine dispatched %+v, want b's first attempt of %s", held, id)
		}
		tasks, err = e2.PollTasks(pctx, engine.PollParams{Queue: "quiesce", Max: 1, Visibility: time.Minute, Wait: engine.MaxPollWait})
		if err != nil || len(tasks) != 1 {
			t.Fatalf("poll on the next engine: %d tasks, %v; want the waiting one", len(tasks), err)
		}
	})
}
