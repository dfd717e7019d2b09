package engine_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/accord-saga/accord/internal/engine"
	"github.com/accord-saga/accord/internal/storage"
)

func TestMain(m *testing.M) {
	if os.Getenv("ACCORD_CRASH_CHILD") != "" {
		if err := crashChild(); err != nil {
			fmt.Fprintln(os.Stderr, "crash child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	goleak.VerifyTestMain(m,
		// The SQLite driver and pgx keep pool goroutines alive until their
		// stores close at test cleanup, which goleak sees as it runs last.
		goleak.IgnoreTopFunction("database/sql.(*DB).connectionOpener"),
		goleak.IgnoreTopFunction("github.com/jackc/pgx/v5/pgxpool.(*Pool).backgroundHealthCheck"),
	)
}

const orderDef = `
name: order
version: 1
steps:
  - name: order
    action: {queue: orders, name: create_order}
    compensation: {queue: orders, name: cancel_order}
  - name: payment
    action: {queue: payments, name: charge}
    compensation: {queue: payments, name: refund}
    input: {order_id: "${steps.order.output.id}", amount: "${input.total}"}
    retry: {initial_interval: 10ms, max_interval: 20ms, max_attempts: 3, non_retryable_errors: [card_declined]}
  - name: inventory
    action: {queue: inventory, name: reserve}
    compensation: {queue: inventory, name: release}
    retry: {initial_interval: 10ms, max_interval: 20ms}
  - name: shipping
    kind: pivot
    action: {queue: shipping, name: book}
`

var orderQueues = []string{"orders", "payments", "inventory", "shipping"}

// failAt answers every action with success except the named step's, which
// fails for good; compensations succeed.
func failAt(step string) handler {
	return func(task engine.Task) *engine.Result {
		if task.Phase == "action" && task.Step == step {
			return failure("card_declined")
		}
		return success(map[string]string{"id": "ord-" + task.SagaID[:6], "step": task.Step})
	}
}

func TestOrderSaga(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		store, _ := b.open(t)
		e := startEngine(t, store, nil)
		register(t, e, orderDef)

		cases := []struct {
			failAt string
			status string
			calls  []string
		}{
			{"", "completed", []string{"action:order", "action:payment", "action:inventory", "action:shipping"}},
			{"order", "compensated", []string{"action:order"}},
			{"payment", "compensated", []string{"action:order", "action:payment", "compensation:order"}},
			{"inventory", "compensated", []string{"action:order", "action:payment", "action:inventory", "compensation:payment", "compensation:order"}},
			{"shipping", "compensated", []string{"action:order", "action:payment", "action:inventory", "action:shipping", "compensation:inventory", "compensation:payment", "compensation:order"}},
		}
		// Cases run one after the other; the participant fails the current
		// case's step.
		var current atomic.Value
		current.Store("")
		p := &participant{}
		p.serve(t, e, orderQueues, 2, func(task engine.Task) *engine.Result {
			return failAt(current.Load().(string))(task)
		})
		for _, c := range cases {
			current.Store(c.failAt)
			id := startSaga(t, e, "order", map[string]any{"total": 42})
			s := waitEnd(t, e, id)
			if s.Status != c.status {
				t.Errorf("fail at %q: status %s, want %s", c.failAt, s.Status, c.status)
			}
			eq(t, "deliveries when failing at "+c.failAt, p.callsOf(id), c.calls)
		}
	})
}

func TestStepInputTemplates(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		store, _ := b.open(t)
		e := startEngine(t, store, nil)
		register(t, e, orderDef)
		inputs := make(chan engine.Task, 16)
		p := &participant{}
		p.serve(t, e, orderQueues, 1, func(task engine.Task) *engine.Result {
			inputs <- task
			return success(map[string]string{"id": "ord-1"})
		})
		id := startSaga(t, e, "order", map[string]any{"total": 42})
		waitEnd(t, e, id)
		close(inputs)
		for task := range inputs {
			if task.Step != "payment" {
				continue
			}
			var in map[string]any
			if err := json.Unmarshal(task.Input, &in); err != nil {
				t.Fatalf("payment input %s: %v", task.Input, err)
			}
			if in["order_id"] != "ord-1" || in["amount"] != float64(42) {
				t.Fatalf("payment input = %s, want order_id ord-1 and amount 42", task.Input)
			}
			if task.IdempotencyKey == "" || task.Attempt != 1 || task.Operation != "charge" {
				t.Fatalf("payment task = %+v", task)
			}
			return
		}
		t.Fatal("payment was never dispatched")
	})
}

func TestIdempotentStart(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		store, _ := b.open(t)
		e := startEngine(t, store, nil)
		register(t, e, orderDef)
		ctx := context.Background()
		sp := engine.StartParams{Definition: "order", Input: json.RawMessage(`{"total":1}`), IdempotencyKey: "order-77"}
		first, err := e.StartSaga(ctx, sp)
		if err != nil || !first.Created {
			t.Fatalf("first start: %+v, %v", first, err)
		}
		again, err := e.StartSaga(ctx, sp)
		if err != nil || again.Created || again.SagaID != first.SagaID {
			t.Fatalf("repeat start: %+v, %v; want saga %s, not created", again, err, first.SagaID)
		}
		sp.Input = json.RawMessage(`{"total":2}`)
		if _, err := e.StartSaga(ctx, sp); !errors.Is(err, engine.ErrIdempotencyMismatch) {
			t.Fatalf("reused key with other input: %v, want ErrIdempotencyMismatch", err)
		}
		list, err := e.ListSagas(ctx, &storage.SagaListParams{Limit: 10})
		if err != nil || len(list) != 1 {
			t.Fatalf("sagas stored: %d (%v), want 1", len(list), err)
		}
	})
}

// TestIdempotentStartComparesResolvedVersion: a repeat that names the
// version the first start resolved "latest" to is the same request; another
// version is not.
func TestIdempotentStartComparesResolvedVersion(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		store, _ := b.open(t)
		e := startEngine(t, store, nil)
		register(t, e, orderDef)
		ctx := context.Background()
		in := json.RawMessage(`{"total":1}`)
		first, err := e.StartSaga(ctx, engine.StartParams{Definition: "order", Input: in, IdempotencyKey: "k-latest"})
		if err != nil || !first.Created {
			t.Fatalf("first start: %+v, %v", first, err)
		}
		again, err := e.StartSaga(ctx, engine.StartParams{Definition: "order", Version: 1, Input: in, IdempotencyKey: "k-latest"})
		if err != nil || again.Created || again.SagaID != first.SagaID {
			t.Fatalf("repeat naming version 1: %+v, %v; want saga %s, not created", again, err, first.SagaID)
		}
		register(t, e, strings.Replace(orderDef, "version: 1", "version: 2", 1))
		again, err = e.StartSaga(ctx, engine.StartParams{Definition: "order", Input: in, IdempotencyKey: "k-latest"})
		if err != nil || again.Created || again.SagaID != first.SagaID {
			t.Fatalf("repeat asking for the latest after version 2: %+v, %v; want saga %s", again, err, first.SagaID)
		}
		if _, err := e.StartSaga(ctx, engine.StartParams{Definition: "order", Version: 2, Input: in, IdempotencyKey: "k-latest"}); !errors.Is(err, engine.ErrIdempotencyMismatch) {
			t.Fatalf("repeat naming version 2: %v, want ErrIdempotencyMismatch", err)
		}
		// Named first, the latest asked for later is the same request.
		named, err := e.StartSaga(ctx, engine.StartParams{Definition: "order", Version: 2, Input: in, IdempotencyKey: "k-named"})
		if err != nil || !named.Created {
			t.Fatalf("start naming version 2: %+v, %v", named, err)
		}
		again, err = e.StartSaga(ctx, engine.StartParams{Definition: "order", Input: in, IdempotencyKey: "k-named"})
		if err != nil || again.Created || again.SagaID != named.SagaID {
			t.Fatalf("repeat asking for the latest: %+v, %v; want saga %s", again, err, named.SagaID)
		}
	})
}

func TestRetryThenSuccess(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		store, _ := b.open(t)
		e := startEngine(t, store, nil)
		register(t, e, orderDef)
		p := &participant{}
		p.serve(t, e, orderQueues, 1, func(task engine.Task) *engine.Result {
			if task.Step == "inventory" && task.Attempt < 3 {
				return retryable("busy")
			}
			return success(map[string]string{"id": "x"})
		})
		id := startSaga(t, e, "order", map[string]any{"total": 1})
		s := waitEnd(t, e, id)
		if s.Status != "completed" {
			t.Fatalf("status %s, want completed", s.Status)
		}
		eq(t, "deliveries", p.callsOf(id), []string{"action:order", "action:payment", "action:inventory", "action:inventory", "action:inventory", "action:shipping"})
	})
}

func TestBadInput(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		store, _ := b.open(t)
		e := startEngine(t, store, nil)
		register(t, e, orderDef)
		ctx := context.Background()
		if _, _, err := e.RegisterDefinition(ctx, []byte("name: x\nversion: 1\nsteps: [{name: a, action: {queue: q, name: n}, after: [nope]}]")); !errors.Is(err, engine.ErrInvalidInput) {
			t.Errorf("register bad definition: %v, want ErrInvalidInput", err)
		}
		if _, err := e.StartSaga(ctx, engine.StartParams{Definition: "nope"}); !errors.Is(err, engine.ErrDefinitionNotFound) {
			t.Errorf("start unknown definition: %v", err)
		}
		if _, err := e.StartSaga(ctx, engine.StartParams{Definition: "order", Input: json.RawMessage(`{"a":`)}); !errors.Is(err, engine.ErrInvalidInput) {
			t.Errorf("start with broken JSON: %v", err)
		}
		if _, err := e.GetSaga(ctx, "NOPE"); !errors.Is(err, engine.ErrSagaNotFound) {
			t.Errorf("get unknown saga: %v", err)
		}
		if err := e.Cancel(ctx, "NOPE", ""); !errors.Is(err, engine.ErrSagaNotFound) {
			t.Errorf("cancel unknown saga: %v", err)
		}
		if err := e.CompleteTask(ctx, engine.Result{TaskID: "nope", Outcome: "success"}); !errors.Is(err, engine.ErrTaskNotFound) {
			t.Errorf("complete unknown task: %v", err)
		}
		if err := e.CompleteTask(ctx, engine.Result{TaskID: "nope", Outcome: "maybe"}); !errors.Is(err, engine.ErrInvalidInput) {
			t.Errorf("complete with bad outcome: %v", err)
		}
		if _, err := e.PollTasks(ctx, engine.PollParams{Queue: "q", Max: 0, Visibility: time.Second}); !errors.Is(err, engine.ErrInvalidInput) {
			t.Errorf("poll max 0: %v", err)
		}
		list, err := e.ListSagas(ctx, &storage.SagaListParams{Limit: 10})
		if err != nil || len(list) != 0 {
			t.Fatalf("bad input stored %d sagas (%v)", len(list), err)
		}
	})
}

func TestCancel(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		store, _ := b.open(t)
		e := startEngine(t, store, nil)
		register(t, e, orderDef)
		hold := make(chan struct{})
		p := &participant{}
		p.serve(t, e, orderQueues, 1, func(task engine.Task) *engine.Result {
			if task.Phase == "action" && task.Step == "inventory" {
				<-hold // the saga is cancelled while inventory runs
				return success(map[string]string{"id": "x"})
			}
			return success(map[string]string{"id": "x"})
		})
		id := startSaga(t, e, "order", map[string]any{"total": 1})
		waitFor(t, "inventory in flight", func() bool {
			for _, c := range p.callsOf(id) {
				if c == "action:inventory" {
					return true
				}
			}
			return false
		})
		if err := e.Cancel(context.Background(), id, "customer changed their mind"); err != nil {
			t.Fatalf("cancel: %v", err)
		}
		close(hold)
		s := waitEnd(t, e, id)
		if s.Status != "cancelled" {
			t.Fatalf("status %s, want cancelled", s.Status)
		}
		eq(t, "deliveries", p.callsOf(id), []string{"action:order", "action:payment", "action:inventory", "compensation:inventory", "compensation:payment", "compensation:order"})
		if err := e.Cancel(context.Background(), id, "again"); err == nil {
			t.Fatal("cancel of an ended saga succeeded")
		}
	})
}

// TestRecoveryAfterRestart stops an engine with sagas in flight and starts a
// new one on the same store: every saga resumes and ends.
func TestRecoveryAfterRestart(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		store, reopen := b.open(t)
		ctx := context.Background()
		e1, err := engine.New(engine.Config{Store: store, Logger: quietLogger()})
		if err != nil {
			t.Fatal(err)
		}
		if err := e1.Start(ctx); err != nil {
			t.Fatal(err)
		}
		register(t, e1, orderDef)
		var ids []string
		for i := range 20 {
			ids = append(ids, startSaga(t, e1, "order", map[string]any{"total": i}))
		}
		if err := e1.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		_ = store.Close()

		e2 := startEngine(t, reopen(t), nil)
		p := &participant{}
		p.serve(t, e2, orderQueues, 2, failAt("inventory"))
		for _, id := range ids {
			if s := waitEnd(t, e2, id); s.Status != "compensated" {
				t.Fatalf("saga %s: %s, want compensated", id, s.Status)
			}
		}
	})
}

// TestFencedNodeCommitsNothing takes an engine's leases away behind its
// back: its next commit is fenced and writes nothing.
func TestFencedNodeCommitsNothing(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		store, _ := b.open(t)
		e := startEngine(t, store, nil)
		register(t, e, orderDef)
		ctx := context.Background()
		leases, err := store.LeaseList(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range leases {
			if err := store.LeaseRelease(ctx, &storage.LeaseReleaseParams{Partition: l.Partition, Owner: l.Owner, Epoch: l.Epoch}); err != nil {
				t.Fatal(err)
			}
			if _, err := store.LeaseAcquire(ctx, &storage.LeaseAcquireParams{Partition: l.Partition, Owner: "intruder", TTL: time.Minute}); err != nil {
				t.Fatal(err)
			}
		}
		for range testPartitions * 2 {
			_, err := e.StartSaga(ctx, engine.StartParams{Definition: "order", Input: json.RawMessage(`{}`)})
			if err == nil {
				t.Fatal("a fenced engine acknowledged a start")
			}
			if !errors.Is(err, engine.ErrNotOwner) {
				t.Fatalf("start on fenced engine: %v, want ErrNotOwner", err)
			}
		}
		list, err := store.SagaList(ctx, &storage.SagaListParams{Limit: 10})
		if err != nil || len(list) != 0 {
			t.Fatalf("fenced engine wrote %d sagas (%v)", len(list), err)
		}
		waitFor(t, "fenced partitions dropped", func() bool { return e.OwnedPartitions() == 0 })
	})
}

// TestPoisonTask: a task whose workers keep dying is failed after
// MaxDeliveries, and the saga compensates.
func TestPoisonTask(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		store, _ := b.open(t)
		e := startEngine(t, store, func(c *engine.Config) { c.MaxDeliveries = 2 })
		register(t, e, orderDef)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		p := &participant{}
		p.serve(t, e, []string{"orders", "inventory", "shipping"}, 1, failAt(""))
		id := startSaga(t, e, "order", map[string]any{"total": 1})
		// A worker that takes payment tasks and dies with them each time.
		go func() {
			for ctx.Err() == nil {
				_, _ = e.PollTasks(ctx, engine.PollParams{Queue: "payments", Max: 1, Visibility: 50 * time.Millisecond, Wait: 100 * time.Millisecond})
			}
		}()
		s := waitEnd(t, e, id)
		if s.Status != "compensated" {
			t.Fatalf("status %s, want compensated", s.Status)
		}
		found := false
		for _, st := range s.View.Steps {
			if st.Name == "payment" && st.LastError != nil && st.LastError.Code == "poison_task" {
				found = true
			}
		}
		if !found {
			t.Fatalf("payment step does not record the poison task: %+v", s.View.Steps)
		}
	})
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
