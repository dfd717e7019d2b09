package engine_test

import (
	"context"
	"testing"

	"github.com/accord-saga/accord/internal/engine"
)

// checkSettled fails unless every step of s succeeded, after at least the
// attempts given, and shows neither the error nor the unknown outcome of an
// attempt before the one that succeeded.
func checkSettled(t *testing.T, s engine.Saga, attempts map[string]int) {
	t.Helper()
	if s.Status != "completed" {
		t.Fatalf("status %s, want completed", s.Status)
	}
	for _, st := range s.View.Steps {
		if st.Status != "succeeded" || st.Attempts < attempts[st.Name] {
			t.Errorf("step %s: %s after %d attempts, want succeeded after at least %d", st.Name, st.Status, st.Attempts, attempts[st.Name])
		}
		if st.LastError != nil || st.OutcomeUnknown {
			t.Errorf("step %s succeeded but shows last_error %+v, outcome_unknown %v", st.Name, st.LastError, st.OutcomeUnknown)
		}
	}
}

// TestSucceededPullStepShowsNoEarlierFailure: a pull step whose first
// attempt timed out, and one whose first attempt failed, then succeeded,
// show as plain successes.
func TestSucceededPullStepShowsNoEarlierFailure(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		store, _ := b.open(t)
		e := startEngine(t, store, nil)
		register(t, e, `
name: settled
version: 1
steps:
  - name: lost
    action: {queue: settle}
    compensation: {queue: settle}
    attempt_timeout: 1s
    retry: {initial_interval: 1ms}
  - name: flaky
    action: {queue: settle}
    compensation: {queue: settle}
    retry: {initial_interval: 1ms}
`)
		var p participant
		p.serve(t, e, []string{"settle"}, 1, func(task engine.Task) *engine.Result {
			switch {
			case task.Attempt > 1:
				return success(map[string]int{"ok": 1})
			case task.Step == "lost":
				return nil // never answered: the attempt times out
			default:
				return retryable("busy")
			}
		})
		id := startSaga(t, e, "settled", nil)
		checkSettled(t, waitEnd(t, e, id), map[string]int{"lost": 2, "flaky": 2})
	})
}

// TestSucceededPushStepShowsNoEarlierFailure: the same for push steps.
func TestSucceededPushStepShowsNoEarlierFailure(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		store, _ := b.open(t)
		push := make(chanPush, 16)
		e := startEngine(t, store, func(c *engine.Config) { c.Push = push })
		register(t, e, `
name: settled-push
version: 1
steps:
  - name: lost
    action: {http: "http://127.0.0.1:9/a"}
    compensation: {http: "http://127.0.0.1:9/a"}
    attempt_timeout: 1s
    retry: {initial_interval: 1ms}
  - name: flaky
    action: {http: "http://127.0.0.1:9/b"}
    compensation: {http: "http://127.0.0.1:9/b"}
    attempt_timeout: 1m
    retry: {initial_interval: 1ms}
`)
		ctx := context.Background()
		id := startSaga(t, e, "settled-push", nil)
		complete := func(task engine.Task, res *engine.Result) {
			t.Helper()
			res.TaskID, res.ClaimToken = task.ID, task.ClaimToken
			if err := e.CompleteTask(ctx, *res); err != nil {
				t.Fatalf("complete %s attempt %d: %v", task.Step, task.Attempt, err)
			}
		}
		if task := push.next(t); task.Step != "lost" || task.Attempt != 1 {
			t.Fatalf("dispatched %s#%d, want lost#1", task.Step, task.Attempt)
		} // left unanswered: the attempt times out
		task := push.next(t)
		if task.Step != "lost" || task.Attempt != 2 {
			t.Fatalf("dispatched %s#%d, want lost#2", task.Step, task.Attempt)
		}
		complete(task, success(map[string]int{"ok": 1}))
		task = push.next(t)
		if task.Step != "flaky" || task.Attempt != 1 {
			t.Fatalf("dispatched %s#%d, want flaky#1", task.Step, task.Attempt)
		}
		complete(task, retryable("busy"))
		task = push.next(t)
		if task.Step != "flaky" || task.Attempt != 2 {
			t.Fatalf("dispatched %s#%d, want flaky#2", task.Step, task.Attempt)
		}
		complete(task, success(map[string]int{"ok": 2}))
		checkSettled(t, waitEnd(t, e, id), map[string]int{"lost": 2, "flaky": 2})
	})
}
