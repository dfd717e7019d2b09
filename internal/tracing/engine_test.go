package tracing_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.uber.org/goleak"

	"github.com/accord-saga/accord/internal/engine"
	"github.com/accord-saga/accord/internal/storage"
	"github.com/accord-saga/accord/internal/storage/sqlite"
	"github.com/accord-saga/accord/internal/tracing"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// The SQLite driver keeps a pool goroutine alive until its store
		// closes at test cleanup, which goleak sees as it runs last.
		goleak.IgnoreTopFunction("database/sql.(*DB).connectionOpener"),
	)
}

// tracedDef: a push step that the test fails once, then a pull step.
const tracedDef = `
name: traced
version: 3
steps:
  - name: reserve
    action: {http: "http://127.0.0.1:9/reserve", name: do_reserve}
    compensation: {http: "http://127.0.0.1:9/reserve", name: undo_reserve}
    attempt_timeout: 1m
    retry: {initial_interval: 10ms, max_interval: 20ms, max_attempts: 3}
  - name: charge
    action: {queue: payments, name: charge}
    compensation: {queue: payments, name: refund}
`

const waitTimeout = 10 * time.Second

// openStore opens a fresh SQLite store; reopen opens the same file again.
func openStore(t *testing.T) (storage.Driver, func(t *testing.T) storage.Driver) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "accord.db")
	open := func(t *testing.T) storage.Driver {
		d, err := sqlite.Open(context.Background(), sqlite.Config{Path: path, Partitions: 2})
		if err != nil {
			t.Fatalf("open sqlite: %v", err)
		}
		t.Cleanup(func() { _ = d.Close() })
		return d
	}
	return open(t), open
}

// newTracer returns a tracer exporting to memory, shut down at cleanup.
func newTracer(t *testing.T, cfg tracing.Config) (*tracing.Tracer, *tracetest.InMemoryExporter) {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	cfg.Exporter = exp
	tr, err := tracing.New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("new tracer: %v", err)
	}
	t.Cleanup(func() {
		if err := tr.Shutdown(context.Background()); err != nil {
			t.Errorf("shutdown tracer: %v", err)
		}
	})
	return tr, exp
}

// spans flushes the tracer and returns what it exported.
func spans(t *testing.T, tr *tracing.Tracer, exp *tracetest.InMemoryExporter) tracetest.SpanStubs {
	t.Helper()
	if err := tr.ForceFlush(context.Background()); err != nil {
		t.Fatalf("flush: %v", err)
	}
	return exp.GetSpans()
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// newEngine returns a started engine; stop stops it (also at cleanup).
func newEngine(t *testing.T, store storage.Driver, tr engine.Tracer, push engine.PushDispatcher) (e *engine.Engine, stop func()) {
	t.Helper()
	cfg := engine.Config{Store: store, Logger: quietLogger(), LeaseTTL: time.Minute, // no test here is about lease expiry; a busy machine must not lose leases
		TaskPollInterval: 20 * time.Millisecond, Push: push}
	if tr != nil {
		cfg.Tracer = tr
	}
	e, err := engine.New(cfg)
	if err != nil {
		t.Fatalf("new engine: %v", err)
	}
	if err := e.Start(context.Background()); err != nil {
		t.Fatalf("start engine: %v", err)
	}
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		if err := e.Stop(ctx); err != nil {
			t.Errorf("stop engine: %v", err)
		}
	}
	t.Cleanup(stop)
	if _, _, err := e.RegisterDefinition(context.Background(), []byte(tracedDef)); err != nil {
		t.Fatalf("register: %v", err)
	}
	return e, stop
}

// fakePush is a push dispatcher that hands attempts to the test.
type fakePush chan engine.Task

func (f fakePush) Dispatch(t engine.Task) { f <- t }

func (f fakePush) next(t *testing.T) engine.Task {
	t.Helper()
	select {
	case task := <-f:
		return task
	case <-time.After(waitTimeout):
		t.Fatal("no push attempt dispatched")
		return engine.Task{}
	}
}

func complete(t *testing.T, e *engine.Engine, task engine.Task, outcome, code string) {
	t.Helper()
	r := engine.Result{TaskID: task.ID, ClaimToken: task.ClaimToken, Outcome: outcome, ErrorCode: code}
	if outcome == "success" {
		r.Output = json.RawMessage(`{}`)
	} else {
		r.ErrorMessage = "test " + code
	}
	if err := e.CompleteTask(context.Background(), r); err != nil {
		t.Fatalf("complete %s: %v", task.ID, err)
	}
}

// pull claims the next task of a queue.
func pull(t *testing.T, e *engine.Engine, queue string) engine.Task {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	for ctx.Err() == nil {
		tasks, err := e.PollTasks(ctx, engine.PollParams{Queue: queue, Max: 1, Visibility: time.Minute, Wait: time.Second})
		if err != nil {
			t.Fatalf("poll %s: %v", queue, err)
		}
		if len(tasks) == 1 {
			return tasks[0]
		}
	}
	t.Fatalf("no task in queue %s", queue)
	return engine.Task{}
}

func startSaga(t *testing.T, e *engine.Engine) string {
	t.Helper()
	res, err := e.StartSaga(context.Background(), engineStart("traced"))
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	return res.SagaID
}

func engineStart(def string) engine.StartParams {
	return engine.StartParams{Definition: def, Input: json.RawMessage(`{"n":1}`)}
}

func waitEnd(t *testing.T, e *engine.Engine, id string) engine.Saga {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	s, err := e.Wait(ctx, id)
	if err != nil {
		t.Fatalf("wait for saga %s: %v", id, err)
	}
	return s
}

// byName indexes spans by name; a name seen twice fails the test.
func byName(t *testing.T, got tracetest.SpanStubs) map[string]tracetest.SpanStub {
	t.Helper()
	out := map[string]tracetest.SpanStub{}
	for _, s := range got {
		key := s.Name
		if a, ok := attr(s, "accord.attempt"); ok {
			key += " #" + a.String()
		}
		if _, dup := out[key]; dup {
			t.Fatalf("span %q emitted twice", key)
		}
		out[key] = s
	}
	return out
}

func attr(s tracetest.SpanStub, key string) (attribute.Value, bool) {
	for _, kv := range s.Attributes {
		if string(kv.Key) == key {
			return kv.Value, true
		}
	}
	return attribute.Value{}, false
}

func wantAttrs(t *testing.T, s tracetest.SpanStub, want map[string]string) {
	t.Helper()
	for k, v := range want {
		got, ok := attr(s, k)
		if !ok || got.String() != v {
			t.Errorf("span %q: %s = %q (set %v), want %q", s.Name, k, got.String(), ok, v)
		}
	}
}

// TestSpansOfASaga runs a saga whose first step (push) fails once and is
// retried, then a pull step, on a real engine, and checks every span and
// the traceparent each attempt was handed.
func TestSpansOfASaga(t *testing.T) {
	t.Parallel()
	tr, exp := newTracer(t, tracing.Config{})
	store, _ := openStore(t)
	push := make(fakePush, 8)
	e, _ := newEngine(t, store, tr, push)

	id := startSaga(t, e)
	traceID := tracing.TraceID(id)
	sagaSpan := tracing.SagaSpanID(id)
	first := push.next(t)
	complete(t, e, first, "retryable", "busy")
	second := push.next(t)
	complete(t, e, second, "success", "")
	charge := pull(t, e, "payments")
	complete(t, e, charge, "success", "")
	if s := waitEnd(t, e, id); s.Status != "completed" {
		t.Fatalf("saga %s, want completed", s.Status)
	}

	// Every attempt carries the saga's trace id and its own span as
	// parent, sampled.
	for _, task := range []engine.Task{first, second, charge} {
		want := tracing.Traceparent(id, task.ID, true)
		if task.Traceparent != want {
			t.Errorf("task %s: traceparent %q, want %q", task.ID, task.Traceparent, want)
		}
	}
	if first.Traceparent != "00-"+traceID.String()+"-"+tracing.AttemptSpanID(id+"/reserve/action/1").String()+"-01" {
		t.Errorf("first attempt's traceparent %q does not name trace %s and the attempt's span", first.Traceparent, traceID)
	}

	got := byName(t, spans(t, tr, exp))
	if len(got) != 4 {
		t.Fatalf("%d spans, want 4 (saga, 2 attempts of reserve, charge): %v", len(got), names(exp.GetSpans()))
	}
	root := got["saga traced"]
	if root.SpanContext.TraceID() != traceID || root.SpanContext.SpanID() != sagaSpan || root.Parent.IsValid() {
		t.Errorf("saga span %s/%s parent %v, want %s/%s, no parent", root.SpanContext.TraceID(), root.SpanContext.SpanID(), root.Parent.SpanID(), traceID, sagaSpan)
	}
	if !root.SpanContext.IsSampled() {
		t.Error("saga span not sampled")
	}
	wantAttrs(t, root, map[string]string{
		"accord.saga.id": id, "accord.saga.definition": "traced", "accord.saga.version": "3", "accord.saga.status": "completed",
	})
	if root.Status.Code != codes.Unset {
		t.Errorf("saga span status %v, want unset", root.Status)
	}

	attempts := []struct {
		name, task, outcome, code string
		status                    codes.Code
	}{
		{"action reserve #1", id + "/reserve/action/1", "retryable", "busy", codes.Error},
		{"action reserve #2", id + "/reserve/action/2", "success", "", codes.Unset},
		{"action charge #1", id + "/charge/action/1", "success", "", codes.Unset},
	}
	var prevEnd time.Time
	for _, a := range attempts {
		s, ok := got[a.name]
		if !ok {
			t.Fatalf("no span %q among %v", a.name, names(exp.GetSpans()))
		}
		if s.SpanContext.TraceID() != traceID || s.SpanContext.SpanID() != tracing.AttemptSpanID(a.task) {
			t.Errorf("%s: ids %s/%s, want %s/%s", a.name, s.SpanContext.TraceID(), s.SpanContext.SpanID(), traceID, tracing.AttemptSpanID(a.task))
		}
		if s.Parent.TraceID() != traceID || s.Parent.SpanID() != sagaSpan {
			t.Errorf("%s: parent %s/%s, want the saga span %s", a.name, s.Parent.TraceID(), s.Parent.SpanID(), sagaSpan)
		}
		if s.StartTime.After(s.EndTime) || s.StartTime.Before(root.StartTime) || s.EndTime.After(root.EndTime) {
			t.Errorf("%s: [%v, %v] not ordered within the saga's [%v, %v]", a.name, s.StartTime, s.EndTime, root.StartTime, root.EndTime)
		}
		if s.StartTime.Before(prevEnd) {
			t.Errorf("%s starts at %v, before the previous attempt ended (%v)", a.name, s.StartTime, prevEnd)
		}
		prevEnd = s.EndTime
		if s.Status.Code != a.status {
			t.Errorf("%s: status %v, want %v", a.name, s.Status, a.status)
		}
		wantAttrs(t, s, map[string]string{"accord.saga.id": id, "accord.task.id": a.task, "accord.phase": "action", "accord.outcome": a.outcome})
		if a.code != "" {
			wantAttrs(t, s, map[string]string{"accord.error.code": a.code})
		} else if _, ok := attr(s, "accord.error.code"); ok {
			t.Errorf("%s: an error code on a success", a.name)
		}
		if _, ok := attr(s, "accord.start_known"); ok {
			t.Errorf("%s: start unknown, but its dispatch was seen", a.name)
		}
	}
	// The dispatch time is the attempt's start (the task carries it in ms).
	if s := got["action reserve #1"]; s.StartTime.UnixMilli() != first.DispatchedAtMS {
		t.Errorf("first attempt starts at %v, dispatched at %d ms", s.StartTime, first.DispatchedAtMS)
	}
	if s := got["action reserve #2"]; s.StartTime.UnixMilli() != second.DispatchedAtMS {
		t.Errorf("second attempt starts at %v, dispatched at %d ms", s.StartTime, second.DispatchedAtMS)
	}
}

// TestSpansOfACompensatedSaga: a business failure of the second step
// compensates the first; the saga span is an error naming the step, and
// the compensation has its span.
func TestSpansOfACompensatedSaga(t *testing.T) {
	t.Parallel()
	tr, exp := newTracer(t, tracing.Config{})
	store, _ := openStore(t)
	push := make(fakePush, 8)
	e, _ := newEngine(t, store, tr, push)

	id := startSaga(t, e)
	complete(t, e, push.next(t), "success", "")
	complete(t, e, pull(t, e, "payments"), "failure", "card_declined")
	undo := push.next(t)
	if undo.Phase != "compensation" || undo.Traceparent != tracing.Traceparent(id, id+"/reserve/compensation/1", true) {
		t.Fatalf("compensation task %s phase %s traceparent %q", undo.ID, undo.Phase, undo.Traceparent)
	}
	complete(t, e, undo, "success", "")
	if s := waitEnd(t, e, id); s.Status != "compensated" {
		t.Fatalf("saga %s, want compensated", s.Status)
	}

	got := byName(t, spans(t, tr, exp))
	root, ok := got["saga traced"]
	if !ok || len(got) != 4 {
		t.Fatalf("spans %v, want the saga, reserve, charge and its compensation", names(exp.GetSpans()))
	}
	wantAttrs(t, root, map[string]string{"accord.saga.status": "compensated", "accord.saga.failed_step": "charge", "accord.saga.reason": "step_failed"})
	if root.Status.Code != codes.Error {
		t.Errorf("saga span status %v, want error", root.Status)
	}
	charge := got["action charge #1"]
	wantAttrs(t, charge, map[string]string{"accord.outcome": "failure", "accord.error.code": "card_declined", "accord.final": "true"})
	if charge.Status.Code != codes.Error || charge.Status.Description != "test card_declined" {
		t.Errorf("charge span status %v, want error with the participant's message", charge.Status)
	}
	comp, ok := got["compensation reserve #1"]
	if !ok {
		t.Fatalf("no compensation span among %v", names(exp.GetSpans()))
	}
	if comp.Parent.SpanID() != tracing.SagaSpanID(id) || comp.SpanContext.SpanID() != tracing.AttemptSpanID(undo.ID) {
		t.Errorf("compensation span %s parent %s", comp.SpanContext.SpanID(), comp.Parent.SpanID())
	}
	if comp.StartTime.Before(charge.EndTime) || comp.EndTime.After(root.EndTime) {
		t.Errorf("compensation [%v, %v] outside the charge's end %v and the saga's end %v", comp.StartTime, comp.EndTime, charge.EndTime, root.EndTime)
	}
}

// TestSpansJoinAcrossARestart: an attempt dispatched by one engine and
// completed after a restart, by another engine with another tracer, still
// lands in the saga's trace under the saga span, and starts at its
// dispatch.
func TestSpansJoinAcrossARestart(t *testing.T) {
	t.Parallel()
	tr1, exp1 := newTracer(t, tracing.Config{})
	store, reopen := openStore(t)
	push1 := make(fakePush, 8)
	e1, stop1 := newEngine(t, store, tr1, push1)
	id := startSaga(t, e1)
	first := push1.next(t)
	stop1()
	_ = store.Close()

	tr2, exp2 := newTracer(t, tracing.Config{})
	push2 := make(fakePush, 8)
	e2, _ := newEngine(t, reopen(t), tr2, push2)
	again := push2.next(t)
	if again.ID != first.ID || again.Traceparent != first.Traceparent {
		t.Fatalf("re-dispatched %s with %q, want %s with %q", again.ID, again.Traceparent, first.ID, first.Traceparent)
	}
	complete(t, e2, again, "success", "")
	complete(t, e2, pull(t, e2, "payments"), "success", "")
	waitEnd(t, e2, id)

	if got := spans(t, tr1, exp1); len(got) != 0 {
		t.Errorf("the first engine emitted %v, though nothing ended there", names(got))
	}
	got := byName(t, spans(t, tr2, exp2))
	reserve, ok := got["action reserve #1"]
	if !ok || len(got) != 3 {
		t.Fatalf("spans %v, want the saga, reserve and charge", names(exp2.GetSpans()))
	}
	if reserve.SpanContext.TraceID() != tracing.TraceID(id) || reserve.Parent.SpanID() != tracing.SagaSpanID(id) ||
		reserve.SpanContext.SpanID() != tracing.AttemptSpanID(first.ID) {
		t.Errorf("reserve span %s/%s parent %s: not in the saga's trace", reserve.SpanContext.TraceID(), reserve.SpanContext.SpanID(), reserve.Parent.SpanID())
	}
	// The dispatch was seen by the first tracer only; the first attempt
	// starts at the phase's start, which the saga's state records.
	if reserve.StartTime.UnixMilli() != first.DispatchedAtMS {
		t.Errorf("reserve starts at %v, dispatched at %d ms", reserve.StartTime, first.DispatchedAtMS)
	}
	if root := got["saga traced"]; root.SpanContext.SpanID() != tracing.SagaSpanID(id) || root.StartTime.After(reserve.StartTime) {
		t.Errorf("saga span %s starts at %v, after its first attempt (%v)", root.SpanContext.SpanID(), root.StartTime, reserve.StartTime)
	}
}

// TestNoTracer: without a tracer tasks carry no traceparent (the push
// dispatcher derives an unsampled one).
func TestNoTracer(t *testing.T) {
	t.Parallel()
	store, _ := openStore(t)
	push := make(fakePush, 8)
	e, _ := newEngine(t, store, nil, push)
	id := startSaga(t, e)
	task := push.next(t)
	if task.Traceparent != "" {
		t.Errorf("traceparent %q without a tracer", task.Traceparent)
	}
	complete(t, e, task, "success", "")
	complete(t, e, pull(t, e, "payments"), "success", "")
	if s := waitEnd(t, e, id); s.Status != "completed" {
		t.Fatalf("saga %s", s.Status)
	}
}

func names(spans tracetest.SpanStubs) []string {
	out := make([]string, len(spans))
	for i, s := range spans {
		out[i] = s.Name
		if a, ok := attr(s, "accord.attempt"); ok {
			out[i] += " #" + a.String()
		}
	}
	return out
}

var _ engine.Tracer = (*tracing.Tracer)(nil)
