package tracing

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/accord-saga/accord/internal/saga"
)

// Config configures a Tracer.
type Config struct {
	// Exporter receives finished spans through a batch span processor
	// (whose limits follow the OTEL_BSP_* variables). Required; Shutdown
	// shuts it down.
	Exporter sdktrace.SpanExporter
	// SampleRatio is the share of sagas traced, in (0, 1]. The decision is
	// taken on the trace id, so the spans of one saga and the traceparent
	// its participants receive always agree. Default 1.
	SampleRatio float64
	// ServiceVersion is the resource's service.version. Optional.
	ServiceVersion string
	// MaxRemembered bounds the dispatch times kept for attempts in flight
	// (and the times of operator retries); when full, an arbitrary entry
	// is forgotten and its span starts at a fallback time. An entry is a
	// task id and a time, so the default, 100000, is a few MiB.
	MaxRemembered int
}

// DefaultMaxRemembered is the default of Config.MaxRemembered.
const DefaultMaxRemembered = 100_000

// instrumentationName names the spans' instrumentation scope.
const instrumentationName = "github.com/accord-saga/accord/internal/tracing"

// Tracer turns committed saga events into spans (see the package
// documentation). It is safe for concurrent use.
type Tracer struct {
	provider *sdktrace.TracerProvider
	tracer   trace.Tracer
	sampler  sdktrace.Sampler
	limit    int

	mu    sync.Mutex
	times map[memoKey]time.Time
}

// memoKey names a remembered time: an attempt's dispatch (by task id) or a
// saga's operator retry (resume, by saga id).
type memoKey struct {
	resume bool
	id     string
}

// New returns a Tracer that exports through cfg.Exporter. The resource
// names the service "accord" unless OTEL_SERVICE_NAME or
// OTEL_RESOURCE_ATTRIBUTES say otherwise.
func New(ctx context.Context, cfg Config) (*Tracer, error) {
	if cfg.Exporter == nil {
		return nil, errors.New("tracing: Config.Exporter is required")
	}
	ratio := cmp.Or(cfg.SampleRatio, 1)
	if !(ratio > 0 && ratio <= 1) {
		return nil, fmt.Errorf("tracing: sample ratio %g: must be in (0, 1]", cfg.SampleRatio)
	}
	limit := cmp.Or(cfg.MaxRemembered, DefaultMaxRemembered)
	if limit < 1 {
		return nil, fmt.Errorf("tracing: MaxRemembered %d: must be at least 1", cfg.MaxRemembered)
	}
	attrs := []attribute.KeyValue{attribute.String("service.name", "accord")}
	if cfg.ServiceVersion != "" {
		attrs = append(attrs, attribute.String("service.version", cfg.ServiceVersion))
	}
	// Later detectors win: the environment overrides the defaults above.
	res, err := resource.New(ctx, resource.WithAttributes(attrs...), resource.WithTelemetrySDK(), resource.WithFromEnv())
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		return nil, fmt.Errorf("tracing: resource: %w", err)
	}
	// The sampler looks at the trace id alone, not at the parent: a saga
	// span and its attempt spans are started at different times, each
	// with no live parent, and must make the same decision.
	sampler := sdktrace.TraceIDRatioBased(ratio)
	provider := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(cfg.Exporter),
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sampler),
		sdktrace.WithIDGenerator(idGenerator{}),
	)
	return &Tracer{
		provider: provider,
		tracer:   provider.Tracer(instrumentationName),
		sampler:  sampler,
		limit:    limit,
		times:    map[memoKey]time.Time{},
	}, nil
}

// Traceparent returns the W3C traceparent of an attempt of a saga: the
// saga's trace id, the attempt's span id as parent, sampled if the saga
// is.
func (t *Tracer) Traceparent(sagaID, taskID string) string {
	return Traceparent(sagaID, taskID, t.sampled(TraceID(sagaID)))
}

func (t *Tracer) sampled(tid trace.TraceID) bool {
	r := t.sampler.ShouldSample(sdktrace.SamplingParameters{ParentContext: context.Background(), TraceID: tid})
	return r.Decision == sdktrace.RecordAndSample
}

// ForceFlush exports every span ended so far.
func (t *Tracer) ForceFlush(ctx context.Context) error {
	if err := t.provider.ForceFlush(ctx); err != nil {
		return fmt.Errorf("tracing: flush: %w", err)
	}
	return nil
}

// Shutdown exports the spans still queued and shuts the exporter down.
// Spans ended after it are dropped. Safe to call twice.
func (t *Tracer) Shutdown(ctx context.Context) error {
	if err := t.provider.Shutdown(ctx); err != nil {
		return fmt.Errorf("tracing: shutdown: %w", err)
	}
	return nil
}

// Committed turns a commit's events of one saga into spans: an attempt
// span for every attempt whose outcome the commit recorded, the saga span
// when the saga ended. state is the saga's state after the commit.
func (t *Tracer) Committed(state *saga.State, events []saga.Event) {
	tid := TraceID(state.SagaID)
	if !t.sampled(tid) {
		return // nothing of this saga is exported: remember nothing either
	}
	// A saga that ends after an operator retry has ended before: its span
	// is out already. Whether an end follows a retry is told by the
	// batch, or, when the batch has no retry, by the state (a retry gives
	// the compensation a fresh budget).
	retry := -1
	for i := range events {
		if events[i].Type == saga.EventSagaOperatorRetry {
			retry = i
			break
		}
	}
	resumedBefore := retry < 0 && resumed(state)
	for i := range events {
		e := &events[i]
		switch e.Type {
		case saga.EventStepScheduled:
			t.remember(memoKey{id: saga.TaskID(state.SagaID, e.Step, saga.PhaseAction, e.Attempt)}, e.Time)
		case saga.EventCompensationScheduled:
			t.remember(memoKey{id: saga.TaskID(state.SagaID, e.Step, saga.PhaseCompensation, e.Attempt)}, e.Time)
		case saga.EventStepSucceeded, saga.EventStepFailed, saga.EventStepTimedOut:
			t.endAttempt(tid, state, e, saga.PhaseAction)
		case saga.EventCompensationSucceeded, saga.EventCompensationFailed, saga.EventCompensationTimedOut:
			t.endAttempt(tid, state, e, saga.PhaseCompensation)
		case saga.EventSagaOperatorRetry:
			t.remember(memoKey{resume: true, id: state.SagaID}, e.Time)
		case saga.EventSagaCompleted, saga.EventSagaCompensated, saga.EventSagaCancelled, saga.EventSagaNeedsOperator:
			t.endSaga(tid, state, e, resumedBefore || (retry >= 0 && retry < i))
		}
	}
}

// resumed reports whether an operator retry has resumed the saga.
func resumed(s *saga.State) bool {
	for i := range s.Steps {
		if s.Steps[i].Compensation.BudgetBase > 0 {
			return true
		}
	}
	return false
}

// Attribute keys.
const (
	keySagaID     = attribute.Key("accord.saga.id")
	keyDefinition = attribute.Key("accord.saga.definition")
	keyVersion    = attribute.Key("accord.saga.version")
	keyStatus     = attribute.Key("accord.saga.status")
	keyReason     = attribute.Key("accord.saga.reason")
	keyFailedStep = attribute.Key("accord.saga.failed_step")
	keyTaskID     = attribute.Key("accord.task.id")
	keyStep       = attribute.Key("accord.step")
	keyPhase      = attribute.Key("accord.phase")
	keyAttempt    = attribute.Key("accord.attempt")
	keyOutcome    = attribute.Key("accord.outcome")
	keyFinal      = attribute.Key("accord.final")
	keyErrorCode  = attribute.Key("accord.error.code")
	keyStartKnown = attribute.Key("accord.start_known")
)

// OutcomeTimedOut is the outcome attribute of an attempt that had no
// answer in time (attempt timeout, or a step timeout that cut it short).
const OutcomeTimedOut = "timed_out"

// endAttempt emits the span of the attempt whose outcome e records.
func (t *Tracer) endAttempt(tid trace.TraceID, s *saga.State, e *saga.Event, phase saga.Phase) {
	taskID := saga.TaskID(s.SagaID, e.Step, phase, e.Attempt)
	start, known := t.take(memoKey{id: taskID})
	if e.Type == saga.EventStepTimedOut && e.Timeout == "step" && !known && !inFlightAtStepTimeout(s, e.Step) {
		return // the step ran out of time between attempts: no attempt ended
	}
	end := e.Time
	startKnown := known
	if !known && e.Attempt == 1 {
		// The phase's start is its first attempt's dispatch.
		if st := stepOf(s, e.Step); st != nil {
			ph := st.Action
			if phase == saga.PhaseCompensation {
				ph = st.Compensation
			}
			start, startKnown = ph.StartedAt, !ph.StartedAt.IsZero()
		}
	}
	if !startKnown || start.After(end) {
		start = end
	}
	var outcome string
	switch e.Type {
	case saga.EventStepSucceeded, saga.EventCompensationSucceeded:
		outcome = string(saga.OutcomeSuccess)
	case saga.EventStepTimedOut, saga.EventCompensationTimedOut:
		outcome = OutcomeTimedOut
	default:
		outcome = string(cmp.Or(e.Outcome, saga.OutcomeFailure))
	}
	attrs := []attribute.KeyValue{
		keySagaID.String(s.SagaID),
		keyTaskID.String(taskID),
		keyStep.String(e.Step),
		keyPhase.String(string(phase)),
		keyAttempt.Int(e.Attempt),
		keyOutcome.String(outcome),
	}
	if e.Final {
		attrs = append(attrs, keyFinal.Bool(true))
	}
	if !startKnown {
		attrs = append(attrs, keyStartKnown.Bool(false))
	}
	code, desc := codes.Unset, ""
	if outcome != string(saga.OutcomeSuccess) {
		code, desc = codes.Error, outcome
		if e.Error != nil {
			attrs = append(attrs, keyErrorCode.String(e.Error.Code))
			desc = cmp.Or(e.Error.Message, e.Error.Code, outcome)
		}
	}
	ctx := trace.ContextWithSpanContext(withIDs(context.Background(), tid, AttemptSpanID(taskID)), sagaSpanContext(tid, s.SagaID))
	t.emit(ctx, string(phase)+" "+e.Step, start, end, attrs, code, desc)
}

// endSaga emits the saga span when the saga ends; resumed marks an end
// after an operator retry, emitted as a child span of the saga span.
func (t *Tracer) endSaga(tid trace.TraceID, s *saga.State, e *saga.Event, resumed bool) {
	var status saga.Status
	switch e.Type {
	case saga.EventSagaCompleted:
		status = saga.StatusCompleted
	case saga.EventSagaCompensated:
		status = saga.StatusCompensated
	case saga.EventSagaCancelled:
		status = saga.StatusCancelled
	default:
		status = saga.StatusNeedsOperator
	}
	attrs := []attribute.KeyValue{
		keySagaID.String(s.SagaID),
		keyDefinition.String(s.Definition),
		keyVersion.Int(s.Version),
		keyStatus.String(string(status)),
	}
	if s.Reason != "" {
		attrs = append(attrs, keyReason.String(s.Reason))
	}
	if s.FailedStep != "" {
		attrs = append(attrs, keyFailedStep.String(s.FailedStep))
	}
	code, desc := codes.Unset, ""
	if status == saga.StatusCompensated || status == saga.StatusNeedsOperator {
		code, desc = codes.Error, string(status)
		if s.Reason != "" {
			desc += ": " + s.Reason
		}
		if s.FailedStep != "" {
			desc += " (" + s.FailedStep + ")"
		}
	}
	end := e.Time
	if !resumed {
		start := s.StartedAt
		if start.IsZero() || start.After(end) {
			start = end
		}
		ctx := withIDs(context.Background(), tid, SagaSpanID(s.SagaID))
		t.emit(ctx, "saga "+s.Definition, start, end, attrs, code, desc)
		return
	}
	start, known := t.take(memoKey{resume: true, id: s.SagaID})
	if !known || start.After(end) {
		start = end
		attrs = append(attrs, keyStartKnown.Bool(false))
	}
	// Its own span id is random: nothing refers to it.
	ctx := trace.ContextWithSpanContext(context.Background(), sagaSpanContext(tid, s.SagaID))
	t.emit(ctx, "saga "+s.Definition+" resumed", start, end, attrs, code, desc)
}

// emit records one finished span.
func (t *Tracer) emit(ctx context.Context, name string, start, end time.Time, attrs []attribute.KeyValue, code codes.Code, desc string) {
	_, span := t.tracer.Start(ctx, name, trace.WithTimestamp(start), trace.WithAttributes(attrs...))
	if code != codes.Unset {
		span.SetStatus(code, desc)
	}
	span.End(trace.WithTimestamp(end))
}

// sagaSpanContext is the saga span as the parent of the saga's other
// spans. Only sampled sagas get spans, so it is always sampled.
func sagaSpanContext(tid trace.TraceID, sagaID string) trace.SpanContext {
	return trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: SagaSpanID(sagaID), TraceFlags: trace.FlagsSampled})
}

func stepOf(s *saga.State, name string) *saga.StepState {
	for i := range s.Steps {
		if s.Steps[i].Name == name {
			return &s.Steps[i]
		}
	}
	return nil
}

// inFlightAtStepTimeout reports whether a step's step timeout cut an
// attempt short (rather than falling between attempts).
func inFlightAtStepTimeout(s *saga.State, step string) bool {
	st := stepOf(s, step)
	return st != nil && st.Action.LastTimedOut
}

// remember records a time under k. When the map is full an arbitrary
// entry makes room: memory stays bounded whatever the engine does (a
// partition taken over by another node leaves its entries behind).
func (t *Tracer) remember(k memoKey, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.times[k]; !ok && len(t.times) >= t.limit {
		for old := range t.times {
			delete(t.times, old)
			break
		}
	}
	t.times[k] = at
}

// take returns and forgets the time recorded under k.
func (t *Tracer) take(k memoKey) (time.Time, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	at, ok := t.times[k]
	if ok {
		delete(t.times, k)
	}
	return at, ok
}
