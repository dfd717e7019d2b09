package e2e

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/accord-saga/accord/sdk/client"
	"github.com/accord-saga/accord/sdk/guard"
	"github.com/accord-saga/accord/sdk/worker"
)

var shopSteps = []string{"order", "payment", "inventory", "shipping"}

// expected is what the shop must have done for a saga failing at step
// fail (none: ""), and the saga's final status.
func expected(fail string) ([]string, string) {
	var done, out []string
	for _, s := range shopSteps {
		if s == fail {
			for i := len(done) - 1; i >= 0; i-- {
				out = append(out, "compensation:"+done[i])
			}
			return out, client.StatusCompensated
		}
		out = append(out, "action:"+s)
		done = append(done, s)
	}
	return out, client.StatusCompleted
}

// runShopSagas runs one saga per failure point (and one that succeeds) and
// checks each through the API and through the shop's own records.
func runShopSagas(t *testing.T, c *client.Client, def string, s *shop) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, fail := range append([]string{""}, shopSteps...) {
		started, err := c.StartSaga(ctx, client.StartRequest{Definition: def, Input: map[string]string{"fail_at": fail}})
		if err != nil {
			t.Fatalf("start (fail at %q): %v", fail, err)
		}
		got, err := c.WaitSaga(ctx, started.ID)
		if err != nil {
			t.Fatalf("wait (fail at %q): %v", fail, err)
		}
		wantEffects, wantStatus := expected(fail)
		if got.Status != wantStatus {
			t.Errorf("fail at %q: status %s, want %s", fail, got.Status, wantStatus)
		}
		if effects := s.effects(t, started.ID); strings.Join(effects, ",") != strings.Join(wantEffects, ",") {
			t.Errorf("fail at %q: the shop did %v, want %v", fail, effects, wantEffects)
		}
		for _, st := range got.Steps {
			want := stepStatus(fail, st.Name)
			if st.Status != want {
				t.Errorf("fail at %q: step %s is %s through the API, want %s", fail, st.Name, st.Status, want)
			}
		}
	}
}

// stepStatus is a step's final status through the API.
func stepStatus(fail, step string) string {
	if fail == "" {
		return "succeeded"
	}
	for _, s := range shopSteps {
		switch {
		case s == fail && s == step:
			return "failed"
		case s == fail:
			return "skipped"
		case s == step:
			return "compensated"
		}
	}
	return "?"
}

// TestShopWithPullWorkers runs the order saga with SDK pull workers against
// a real server process: success, and failure at every step.
func TestShopWithPullWorkers(t *testing.T) {
	t.Parallel()
	srv := startServer(t, t.TempDir())
	c := srv.client(t)
	s := newShop(t)
	def := shopDefinition("shop_pull", func(step string) string { return "queue: e2e-" + step })
	if _, _, err := c.RegisterDefinition(context.Background(), []byte(def), "application/yaml"); err != nil {
		t.Fatal(err)
	}
	w := worker.New(c, worker.Options{Concurrency: 8, PollWait: time.Second})
	for _, step := range shopSteps {
		for _, op := range []string{"do_" + step, "undo_" + step} {
			w.Handle("e2e-"+step, op, func(ctx context.Context, task *worker.Task) (any, error) {
				err := s.do(ctx, task.SagaID, task.Step, task.Phase, failAtOf(task.Input))
				switch {
				case errors.Is(err, errDeclined):
					return nil, worker.Failure("declined", "the shop declines "+task.Step)
				case errors.Is(err, guard.ErrCompensated):
					return nil, worker.Failure("compensated", "already compensated")
				}
				return map[string]bool{"done": true}, err
			})
		}
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() {
		stop()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("worker: %v", err)
		}
	}()
	runShopSagas(t, c, "shop_pull", s)
}

// TestShopWithPushParticipants runs the order saga with HTTP participants
// that Accord calls: success, and failure at every step.
func TestShopWithPushParticipants(t *testing.T) {
	t.Parallel()
	s := newShop(t)
	url := pushServer(t, s.pushHandler(t))
	srv := startServer(t, t.TempDir())
	c := srv.client(t)
	def := shopDefinition("shop_push", func(step string) string { return fmt.Sprintf("http: %q", url+"/"+step) })
	if _, _, err := c.RegisterDefinition(context.Background(), []byte(def), "application/yaml"); err != nil {
		t.Fatal(err)
	}
	runShopSagas(t, c, "shop_push", s)
}
