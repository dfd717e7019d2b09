package tracing_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/accord-saga/accord/internal/saga"
	"github.com/accord-saga/accord/internal/tracing"
)

var t0 = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

// state is a saga of one step "a" started at t0, whose action's first
// attempt was dispatched at t0+1s.
func state(id string, status saga.Status) *saga.State {
	return &saga.State{
		SagaID: id, Definition: "def", Version: 1, SagaStatus: status, StartedAt: t0,
		Steps: []saga.StepState{{Name: "a", Action: saga.PhaseState{StartedAt: t0.Add(time.Second)}}},
	}
}

func ev(typ string, at time.Duration, mod func(*saga.Event)) saga.Event {
	e := saga.Event{Type: typ, SagaID: "s", Definition: "def", Version: 1, Time: t0.Add(at)}
	if strings.HasPrefix(typ, "step.") || strings.HasPrefix(typ, "compensation.") {
		e.Step = "a"
		e.Attempt = 1
	}
	if mod != nil {
		mod(&e)
	}
	return e
}

func attempt(n int) func(*saga.Event) { return func(e *saga.Event) { e.Attempt = n } }

// TestSamplingAgrees: with a ratio, a saga's spans are exported exactly
// when the traceparents of its attempts say it is sampled.
func TestSamplingAgrees(t *testing.T) {
	t.Parallel()
	tr, exp := newTracer(t, tracing.Config{SampleRatio: 0.5})
	sampled := map[string]bool{}
	for i := range 200 {
		id := fmt.Sprintf("saga-%d", i)
		tp := tr.Traceparent(id, id+"/a/action/1")
		sampled[id] = strings.HasSuffix(tp, "-01")
		tr.Committed(state(id, saga.StatusCompleted), []saga.Event{ev(saga.EventSagaCompleted, 5*time.Second, nil)})
	}
	exported := map[string]bool{}
	for _, s := range spans(t, tr, exp) {
		v, _ := attr(s, "accord.saga.id")
		exported[v.AsString()] = true
		if !s.SpanContext.IsSampled() {
			t.Errorf("exported span %s not sampled", s.Name)
		}
	}
	n := 0
	for id, want := range sampled {
		if exported[id] != want {
			t.Errorf("saga %s: exported %v, traceparent sampled %v", id, exported[id], want)
		}
		if want {
			n++
		}
	}
	if n < 60 || n > 140 {
		t.Errorf("%d of 200 sagas sampled at ratio 0.5", n)
	}
}

// TestAttemptStartFallback: a tracer that never saw an attempt's dispatch
// (a restart) starts the first attempt at the phase's start, and a later
// one at its end, marked.
func TestAttemptStartFallback(t *testing.T) {
	t.Parallel()
	tr, exp := newTracer(t, tracing.Config{})
	s := state("s", saga.StatusRunning)
	tr.Committed(s, []saga.Event{
		ev(saga.EventStepFailed, 3*time.Second, func(e *saga.Event) { e.Outcome = saga.OutcomeRetryable }),
		ev(saga.EventStepSucceeded, 9*time.Second, attempt(2)),
	})
	got := byName(t, spans(t, tr, exp))
	first, second := got["action a #1"], got["action a #2"]
	if !first.StartTime.Equal(t0.Add(time.Second)) || !first.EndTime.Equal(t0.Add(3*time.Second)) {
		t.Errorf("attempt 1: [%v, %v], want from the phase's start to its result", first.StartTime, first.EndTime)
	}
	if _, ok := attr(first, "accord.start_known"); ok {
		t.Error("attempt 1: start marked unknown, but the phase's start is its dispatch")
	}
	if !second.StartTime.Equal(t0.Add(9*time.Second)) || !second.EndTime.Equal(second.StartTime) {
		t.Errorf("attempt 2: [%v, %v], want empty at its result", second.StartTime, second.EndTime)
	}
	wantAttrs(t, second, map[string]string{"accord.start_known": "false", "accord.outcome": "success"})
}

// TestStepTimeout: a step timeout ends the attempt in flight, if there is
// one; between attempts it emits no attempt span.
func TestStepTimeout(t *testing.T) {
	t.Parallel()
	stepTimeout := func(e *saga.Event) {
		e.Timeout, e.Final = "step", true
		e.Error = &saga.ErrorInfo{Code: saga.CodeStepTimeout, Message: "step did not succeed within 5s"}
	}
	t.Run("in flight", func(t *testing.T) {
		t.Parallel()
		tr, exp := newTracer(t, tracing.Config{})
		s := state("s", saga.StatusCompensating)
		tr.Committed(s, []saga.Event{ev(saga.EventStepScheduled, 2*time.Second, attempt(2))})
		tr.Committed(s, []saga.Event{ev(saga.EventStepTimedOut, 6*time.Second, func(e *saga.Event) { stepTimeout(e); e.Attempt = 2 })})
		got := spans(t, tr, exp)
		if len(got) != 1 {
			t.Fatalf("spans %v, want the attempt cut short", names(got))
		}
		wantAttrs(t, got[0], map[string]string{"accord.attempt": "2", "accord.outcome": "timed_out", "accord.error.code": "step_timeout", "accord.final": "true"})
		if !got[0].StartTime.Equal(t0.Add(2*time.Second)) || got[0].Status.Code != codes.Error {
			t.Errorf("span starts %v status %v", got[0].StartTime, got[0].Status)
		}
	})
	t.Run("in flight after a restart", func(t *testing.T) {
		t.Parallel()
		tr, exp := newTracer(t, tracing.Config{})
		s := state("s", saga.StatusCompensating)
		s.Steps[0].Action.LastTimedOut = true // the step timeout found the attempt in flight
		tr.Committed(s, []saga.Event{ev(saga.EventStepTimedOut, 6*time.Second, stepTimeout)})
		if got := spans(t, tr, exp); len(got) != 1 {
			t.Fatalf("spans %v, want the attempt cut short", names(got))
		}
	})
	t.Run("between attempts", func(t *testing.T) {
		t.Parallel()
		tr, exp := newTracer(t, tracing.Config{})
		s := state("s", saga.StatusCompensating)
		tr.Committed(s, []saga.Event{ev(saga.EventStepScheduled, time.Second, nil)})
		tr.Committed(s, []saga.Event{ev(saga.EventStepFailed, 2*time.Second, func(e *saga.Event) { e.Outcome = saga.OutcomeRetryable })})
		tr.Committed(s, []saga.Event{ev(saga.EventStepTimedOut, 6*time.Second, stepTimeout)})
		if got := spans(t, tr, exp); len(got) != 1 || got[0].EndTime != t0.Add(2*time.Second) {
			t.Fatalf("spans %v, want only the failed attempt", names(got))
		}
	})
}

// TestResumedSaga: a saga that needs an operator gets its span when it
// stops; after an operator retry its second end is a "resumed" span under
// it, from the retry, even when another tracer (a restart) sees that end.
func TestResumedSaga(t *testing.T) {
	t.Parallel()
	tr, exp := newTracer(t, tracing.Config{})
	s := state("s", saga.StatusNeedsOperator)
	s.Reason, s.FailedStep = saga.ReasonStepFailed, "b"
	tr.Committed(s, []saga.Event{ev(saga.EventSagaNeedsOperator, 10*time.Second, nil)})
	s = state("s", saga.StatusCompensating)
	s.Steps[0].Compensation = saga.PhaseState{Attempt: 5, BudgetBase: 5}
	tr.Committed(s, []saga.Event{ev(saga.EventSagaOperatorRetry, 20*time.Second, nil)})
	s = state("s", saga.StatusCompensated)
	s.Steps[0].Compensation = saga.PhaseState{Attempt: 6, BudgetBase: 5}
	end := []saga.Event{ev(saga.EventSagaCompensated, 30*time.Second, nil)}
	tr.Committed(s, end)

	got := byName(t, spans(t, tr, exp))
	root, resumed := got["saga def"], got["saga def resumed"]
	if len(got) != 2 || root.SpanContext.SpanID() != tracing.SagaSpanID("s") {
		t.Fatalf("spans %v, want the saga and its resumed end", names(exp.GetSpans()))
	}
	wantAttrs(t, root, map[string]string{"accord.saga.status": "needs_operator", "accord.saga.failed_step": "b"})
	if !root.StartTime.Equal(t0) || !root.EndTime.Equal(t0.Add(10*time.Second)) || root.Status.Code != codes.Error {
		t.Errorf("saga span [%v, %v] %v", root.StartTime, root.EndTime, root.Status)
	}
	wantAttrs(t, resumed, map[string]string{"accord.saga.status": "compensated"})
	if resumed.Parent.SpanID() != tracing.SagaSpanID("s") || resumed.SpanContext.TraceID() != tracing.TraceID("s") ||
		!resumed.StartTime.Equal(t0.Add(20*time.Second)) || !resumed.EndTime.Equal(t0.Add(30*time.Second)) {
		t.Errorf("resumed span parent %s [%v, %v]", resumed.Parent.SpanID(), resumed.StartTime, resumed.EndTime)
	}

	tr2, exp2 := newTracer(t, tracing.Config{})
	tr2.Committed(s, end)
	got2 := spans(t, tr2, exp2)
	if len(got2) != 1 || got2[0].Name != "saga def resumed" {
		t.Fatalf("after a restart: spans %v, want the resumed end only", names(got2))
	}
	wantAttrs(t, got2[0], map[string]string{"accord.start_known": "false"})
}

// TestMaxRemembered: the dispatch times kept are bounded; a forgotten one
// falls back like after a restart.
func TestMaxRemembered(t *testing.T) {
	t.Parallel()
	tr, exp := newTracer(t, tracing.Config{MaxRemembered: 1})
	s := state("s", saga.StatusRunning)
	s.Steps = append(s.Steps, saga.StepState{Name: "b"})
	tr.Committed(s, []saga.Event{
		ev(saga.EventStepScheduled, 2*time.Second, attempt(2)),
		ev(saga.EventStepScheduled, 3*time.Second, func(e *saga.Event) { e.Step, e.Attempt = "b", 2 }),
	})
	tr.Committed(s, []saga.Event{
		ev(saga.EventStepSucceeded, 4*time.Second, attempt(2)),
		ev(saga.EventStepSucceeded, 5*time.Second, func(e *saga.Event) { e.Step, e.Attempt = "b", 2 }),
	})
	got := byName(t, spans(t, tr, exp))
	if a := got["action a #2"]; !a.StartTime.Equal(a.EndTime) {
		t.Errorf("a: starts %v, want its end: its dispatch was evicted", a.StartTime)
	}
	if b := got["action b #2"]; !b.StartTime.Equal(t0.Add(3 * time.Second)) {
		t.Errorf("b: starts %v, want its dispatch", b.StartTime)
	}
}

func TestConfigRefused(t *testing.T) {
	t.Parallel()
	exp := tracetest.NewInMemoryExporter()
	for _, cfg := range []tracing.Config{
		{},
		{Exporter: exp, SampleRatio: 1.5},
		{Exporter: exp, SampleRatio: -0.1},
		{Exporter: exp, MaxRemembered: -1},
	} {
		if tr, err := tracing.New(context.Background(), cfg); err == nil {
			_ = tr.Shutdown(context.Background())
			t.Errorf("New(%+v) accepted", cfg)
		}
	}
}
