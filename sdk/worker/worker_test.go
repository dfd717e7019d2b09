package worker_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/accord-saga/accord/sdk/client"
	"github.com/accord-saga/accord/sdk/sdktest"
	"github.com/accord-saga/accord/sdk/worker"
)

const orderDef = `name: order
version: 1
steps:
  - name: order
    action: {queue: orders, name: create_order}
    compensation: {queue: orders, name: cancel_order}
  - name: payment
    action: {queue: payments, name: charge}
    compensation: {queue: payments, name: refund}
    input: {order: "${steps.order.output.id}", total: "${input.total}"}
    retry: {initial_interval: 10ms, non_retryable_errors: [card_declined]}
  - name: inventory
    action: {queue: inventory, name: reserve}
    compensation: {queue: inventory, name: release}
    retry: {initial_interval: 10ms}
  - name: shipping
    kind: pivot
    action: {queue: shipping, name: book}
`

type orderInput struct {
	Total int `json:"total"`
}

type chargeInput struct {
	Order string `json:"order"`
	Total int    `json:"total"`
}

// journal records the operations handlers ran, per saga.
type journal struct {
	mu  sync.Mutex
	ops map[string][]string
}

func (j *journal) add(t *worker.Task) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.ops == nil {
		j.ops = map[string][]string{}
	}
	j.ops[t.SagaID] = append(j.ops[t.SagaID], t.Operation)
}

func (j *journal) of(id string) string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return fmt.Sprint(j.ops[id])
}

// startWorker runs w until the test ends and checks that Run returned nil.
func startWorker(t *testing.T, w *worker.Worker) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func waitSaga(t *testing.T, c *client.Client, id string) *client.Saga {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := c.WaitSaga(ctx, id)
	if err != nil {
		t.Fatalf("wait for saga %s: %v", id, err)
	}
	return s
}

func start(t *testing.T, c *client.Client, input any) string {
	t.Helper()
	res, err := c.StartSaga(context.Background(), client.StartRequest{Definition: "order", Input: input})
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	return res.ID
}

// TestOrderSaga runs the four-step saga to completion, and a saga whose
// payment is declined to compensation, through a worker that serves a
// real server.
func TestOrderSaga(t *testing.T) {
	t.Parallel()
	s := sdktest.NewServer(t)
	s.Register(t, orderDef)
	var j journal
	w := worker.New(s.Client, worker.Options{Concurrency: 4, PollWait: time.Second})
	record := func(out any) worker.Handler {
		return func(_ context.Context, task *worker.Task) (any, error) {
			j.add(task)
			return out, nil
		}
	}
	w.Handle("orders", "create_order", worker.Typed(func(_ context.Context, task *worker.Task, in orderInput) (map[string]any, error) {
		j.add(task)
		return map[string]any{"id": "o-" + task.SagaID, "total": in.Total}, nil
	}))
	w.Handle("orders", "cancel_order", record(nil))
	w.Handle("payments", "charge", worker.Typed(func(_ context.Context, task *worker.Task, in chargeInput) (map[string]any, error) {
		j.add(task)
		if in.Order != "o-"+task.SagaID {
			return nil, worker.Failure("bad_order", "payment for order "+in.Order)
		}
		if in.Total > 100 {
			return nil, worker.Failure("card_declined", "over the limit")
		}
		return map[string]any{"charged": in.Total}, nil
	}))
	w.Handle("payments", "refund", record(nil))
	w.Handle("inventory", "", record(map[string]bool{"ok": true}))
	w.Handle("shipping", "book", record("booked"))
	startWorker(t, w)

	ok := start(t, s.Client, orderInput{Total: 10})
	declined := start(t, s.Client, orderInput{Total: 500})

	done := waitSaga(t, s.Client, ok)
	if done.Status != client.StatusCompleted {
		t.Fatalf("saga %s: %s", ok, done.Status)
	}
	if got := string(done.Steps[1].Output); got != `{"charged":10}` {
		t.Fatalf("payment output %s", got)
	}
	if got := j.of(ok); got != "[create_order charge reserve book]" {
		t.Fatalf("operations %s", got)
	}

	comp := waitSaga(t, s.Client, declined)
	if comp.Status != client.StatusCompensated || comp.FailedStep != "payment" {
		t.Fatalf("saga %s: %s, failed step %q", declined, comp.Status, comp.FailedStep)
	}
	if e := comp.Steps[1].LastError; e == nil || e.Code != "card_declined" {
		t.Fatalf("payment error %+v", e)
	}
	if got := j.of(declined); got != "[create_order charge cancel_order]" {
		t.Fatalf("operations %s", got)
	}
}

// TestPanicIsRetried: a handler that panics is reported retryable with the
// code panic, and the retry succeeds.
func TestPanicIsRetried(t *testing.T) {
	t.Parallel()
	s := sdktest.NewServer(t)
	s.Register(t, orderDef)
	w := worker.New(s.Client, worker.Options{PollWait: time.Second})
	ok := func(context.Context, *worker.Task) (any, error) { return map[string]string{"id": "x"}, nil }
	w.Handle("orders", "", ok)
	w.Handle("payments", "", ok)
	w.Handle("shipping", "", ok)
	w.Handle("inventory", "reserve", func(_ context.Context, task *worker.Task) (any, error) {
		if task.Attempt == 1 {
			panic("reserve blew up")
		}
		return nil, nil
	})
	startWorker(t, w)

	id := start(t, s.Client, orderInput{Total: 1})
	sg := waitSaga(t, s.Client, id)
	if sg.Status != client.StatusCompleted {
		t.Fatalf("status %s", sg.Status)
	}
	inv := sg.Steps[2]
	if inv.Attempts != 2 {
		t.Fatalf("inventory attempts %d, want 2", inv.Attempts)
	}
	events, err := s.Client.SagaEvents(context.Background(), id, client.EventOptions{})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, ev := range events.Items {
		if ev.Type == "step.failed" && strings.Contains(string(ev.Data), `"panic"`) && strings.Contains(string(ev.Data), "reserve blew up") {
			found = true
		}
	}
	if !found {
		t.Fatalf("no step.failed event with code panic in %d events", len(events.Items))
	}
}

// TestGracefulStop: Run, once its context is done, waits for the running
// handler and reports its result before it returns.
func TestGracefulStop(t *testing.T) {
	t.Parallel()
	s := sdktest.NewServer(t)
	s.Register(t, orderDef)
	entered, release := make(chan struct{}), make(chan struct{})
	var finished atomic.Bool
	w := worker.New(s.Client, worker.Options{PollWait: time.Second, GracePeriod: time.Minute})
	w.Handle("orders", "create_order", func(ctx context.Context, task *worker.Task) (any, error) {
		close(entered)
		<-release
		finished.Store(true)
		return map[string]string{"id": "o-1"}, ctx.Err()
	})
	stop := startWorker(t, w)
	id := start(t, s.Client, nil)
	<-entered

	stopped := make(chan struct{})
	go func() { stop(); close(stopped) }()
	select {
	case <-stopped:
		t.Fatal("Run returned while a handler was running")
	default:
	}
	close(release)
	<-stopped
	if !finished.Load() {
		t.Fatal("Run returned before the handler finished")
	}
	// The result was reported before Run returned: no worker runs now, yet
	// the step succeeded and the next one is scheduled.
	sg, err := s.Client.GetSaga(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if sg.Steps[0].Status != "succeeded" || string(sg.Steps[0].Output) != `{"id":"o-1"}` || sg.Steps[1].Status != "running" {
		t.Fatalf("steps after stop: %+v", sg.Steps[:2])
	}
}

// TestGraceExpires: a handler still running when the grace period ends has
// its context cancelled, and its task is reported retryable with the code
// shutdown, so that it runs again soon rather than after its claim expires.
func TestGraceExpires(t *testing.T) {
	t.Parallel()
	s := sdktest.NewServer(t)
	s.Register(t, orderDef)
	entered := make(chan struct{})
	w := worker.New(s.Client, worker.Options{PollWait: time.Second, GracePeriod: 20 * time.Millisecond})
	w.Handle("orders", "create_order", func(ctx context.Context, task *worker.Task) (any, error) {
		close(entered)
		<-ctx.Done()
		return nil, worker.Failure("gave_up", "a failure caused by the shutdown must not compensate the saga")
	})
	stop := startWorker(t, w)
	id := start(t, s.Client, nil)
	<-entered
	stop()
	sg, err := s.Client.GetSaga(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	step := sg.Steps[0]
	if sg.Status != client.StatusRunning || step.LastError == nil || step.LastError.Code != worker.CodeShutdown || step.NextAttemptAt.IsZero() {
		t.Fatalf("saga %s, first step %+v", sg.Status, step)
	}
}

// TestClaimLost: when the claim expires and another worker takes the task,
// the next heartbeat cancels the handler's context with ErrClaimLost and
// its result is dropped.
func TestClaimLost(t *testing.T) {
	t.Parallel()
	s := sdktest.NewServer(t)
	s.Register(t, orderDef)
	entered := make(chan struct{})
	cause := make(chan error, 1)
	// The claim expires (50ms) long before the first heartbeat (300ms); one
	// handler slot keeps the worker from claiming the task again itself.
	w := worker.New(s.Client, worker.Options{Concurrency: 1, Visibility: 50 * time.Millisecond, HeartbeatEvery: 300 * time.Millisecond, PollWait: time.Second})
	w.Handle("orders", "create_order", func(ctx context.Context, task *worker.Task) (any, error) {
		close(entered)
		<-ctx.Done()
		cause <- context.Cause(ctx)
		return "stale result", nil
	})
	startWorker(t, w)
	id := start(t, s.Client, nil)
	<-entered

	// Another worker takes the task once the claim has expired.
	ctx := context.Background()
	tasks, err := s.Client.Poll(ctx, "orders", client.PollOptions{Wait: 10 * time.Second, Visibility: time.Minute})
	if err != nil || len(tasks) != 1 || tasks[0].SagaID != id || tasks[0].Deliveries != 2 {
		t.Fatalf("steal: %+v, %v", tasks, err)
	}
	if got := <-cause; !errors.Is(got, worker.ErrClaimLost) {
		t.Fatalf("handler context ended with %v, want ErrClaimLost", got)
	}
	if err := s.Client.Complete(ctx, client.TaskResult{TaskID: tasks[0].ID, ClaimToken: tasks[0].ClaimToken,
		Outcome: client.OutcomeSuccess, Output: map[string]string{"id": "fresh"}}); err != nil {
		t.Fatalf("the new claimant's result was refused: %v", err)
	}
	sg, err := s.Client.GetSaga(ctx, id)
	if err != nil || string(sg.Steps[0].Output) != `{"id":"fresh"}` {
		t.Fatalf("saga %+v, %v", sg, err)
	}
}

func TestRunNeedsHandlers(t *testing.T) {
	c, err := client.New("http://127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	if err := worker.New(c, worker.Options{}).Run(context.Background()); err == nil {
		t.Fatal("Run without handlers succeeded")
	}
}
