package engine_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/accord-saga/accord/internal/engine"
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

// TestPushAttemptRedispatchedAfterRestart: a push attempt in flight when
// the engine stops is dispatched again by the next engine, from the saga's
// state, and a result for the old dispatch is refused.
func TestPushAttemptRedispatchedAfterRestart(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		store, reopen := b.open(t)
		ctx := context.Background()
		push1 := make(chanPush, 16)
		e1, err := engine.New(engine.Config{Store: store, Logger: quietLogger(), Push: push1})
		if err != nil {
			t.Fatal(err)
		}
		if err := e1.Start(ctx); err != nil {
			t.Fatal(err)
		}
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
