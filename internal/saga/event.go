package saga

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"
)

// Event types, stable: they are stored in saga logs.
const (
	// EventSagaStarted opens every saga log: definition, input, seed,
	// deadline.
	EventSagaStarted = "saga.started"
	// EventStepScheduled: an action attempt was dispatched (task_id,
	// attempt, attempt_deadline, and step_deadline on the first attempt).
	EventStepScheduled = "step.scheduled"
	// EventStepSucceeded: the attempt answered success, with its output.
	EventStepSucceeded = "step.succeeded"
	// EventStepFailed: the attempt answered failure or retryable. final
	// says the step has failed for good; otherwise a retry follows.
	EventStepFailed = "step.failed"
	// EventStepTimedOut: timeout "attempt" (the attempt had no answer in
	// time: its outcome is unknown) or "step" (the step ran out of time).
	// final as for step.failed.
	EventStepTimedOut = "step.timed_out"
	// EventStepRetryScheduled: the next action attempt is due at retry_at,
	// delay after now.
	EventStepRetryScheduled = "step.retry_scheduled"
	// EventCompensationScheduled: a compensation attempt was dispatched.
	EventCompensationScheduled = "compensation.scheduled"
	// EventCompensationSucceeded: the step is compensated.
	EventCompensationSucceeded = "compensation.succeeded"
	// EventCompensationFailed: the compensation attempt did not succeed;
	// final says its budget is spent (needs_operator follows).
	EventCompensationFailed = "compensation.failed"
	// EventCompensationTimedOut: the compensation attempt had no answer in
	// time; final as for compensation.failed.
	EventCompensationTimedOut = "compensation.timed_out"
	// EventCompensationRetryScheduled: the next compensation attempt is due
	// at retry_at.
	EventCompensationRetryScheduled = "compensation.retry_scheduled"
	// EventSagaCompleted: every step succeeded.
	EventSagaCompleted = "saga.completed"
	// EventSagaCompensated: the saga failed and every step that needed it
	// was compensated.
	EventSagaCompensated = "saga.compensated"
	// EventSagaCancelled: the saga was cancelled and every step that needed
	// it was compensated.
	EventSagaCancelled = "saga.cancelled"
	// EventSagaNeedsOperator: a compensation failed past its budget (step);
	// the saga waits for an operator.
	EventSagaNeedsOperator = "saga.needs_operator"
	// EventSagaCancelRequested: a cancel was accepted; compensation begins.
	EventSagaCancelRequested = "saga.cancel_requested"
	// EventSagaTimedOut: the saga's deadline passed. ignored when the pivot
	// had already started; otherwise compensation begins.
	EventSagaTimedOut = "saga.timed_out"
	// EventSagaOperatorRetry: an operator gave the stuck compensation
	// (step) a fresh budget.
	EventSagaOperatorRetry = "saga.operator_retry"
)

var eventTypes = map[string]bool{
	EventSagaStarted: true, EventStepScheduled: true, EventStepSucceeded: true,
	EventStepFailed: true, EventStepTimedOut: true, EventStepRetryScheduled: true,
	EventCompensationScheduled: true, EventCompensationSucceeded: true,
	EventCompensationFailed: true, EventCompensationTimedOut: true,
	EventCompensationRetryScheduled: true, EventSagaCompleted: true,
	EventSagaCompensated: true, EventSagaCancelled: true, EventSagaNeedsOperator: true,
	EventSagaCancelRequested: true, EventSagaTimedOut: true, EventSagaOperatorRetry: true,
}

// Outcome is what a participant answered for one attempt.
type Outcome string

const (
	// OutcomeSuccess: the operation is done; Output carries its result.
	OutcomeSuccess Outcome = "success"
	// OutcomeFailure: a business failure. The action is not retried and
	// the saga compensates (before the pivot). For a compensation it is
	// treated like retryable: compensations are retried until they succeed.
	OutcomeFailure Outcome = "failure"
	// OutcomeRetryable: a transient failure, retried per the retry policy.
	OutcomeRetryable Outcome = "retryable"
)

// ErrorInfo is a participant's error, or a timeout. Code is what
// non_retryable_errors match.
type ErrorInfo struct {
	Code    string `json:"code,omitempty"`
	Message string `json:"message,omitempty"`
}

// Error codes the core itself records.
const (
	CodeAttemptTimeout = "attempt_timeout"
	CodeStepTimeout    = "step_timeout"
	// CodeInputTooLarge: the step's input would render past
	// MaxRenderedBytes, so it was not sent.
	CodeInputTooLarge = "input_too_large"
)

// Event is one entry of a saga's log. Every event carries the saga id, the
// definition name and version the saga runs on, and the time of the input
// that caused it; the other fields are set by the event types that use them
// and omitted otherwise.
type Event struct {
	Type       string    `json:"type"`
	SagaID     string    `json:"saga_id"`
	Definition string    `json:"definition"`
	Version    int       `json:"version"`
	Time       time.Time `json:"time"`

	// saga.started
	DefinitionHash string          `json:"definition_hash,omitempty"`
	Input          json.RawMessage `json:"input,omitempty"`
	Seed           uint64          `json:"seed,omitempty"`
	Deadline       time.Time       `json:"deadline,omitzero"`

	// step.* and compensation.*
	Step            string          `json:"step,omitempty"`
	Attempt         int             `json:"attempt,omitempty"`
	TaskID          string          `json:"task_id,omitempty"`
	AttemptDeadline time.Time       `json:"attempt_deadline,omitzero"`
	StepDeadline    time.Time       `json:"step_deadline,omitzero"`
	RetryAt         time.Time       `json:"retry_at,omitzero"`
	Delay           Duration        `json:"delay,omitzero"`
	Output          json.RawMessage `json:"output,omitempty"`
	Outcome         Outcome         `json:"outcome,omitempty"`
	Error           *ErrorInfo      `json:"error,omitempty"`
	Timeout         string          `json:"timeout,omitempty"` // "attempt" or "step"
	Final           bool            `json:"final,omitempty"`

	// saga.cancel_requested (the caller's reason), saga.needs_operator.
	Reason string `json:"reason,omitempty"`
	// saga.timed_out after the pivot started.
	Ignored bool `json:"ignored,omitempty"`
}

// Marshal encodes the event for the log. The type is included, so the
// bytes are self-describing.
func (e Event) Marshal() ([]byte, error) {
	b, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("saga: marshal %s event: %w", e.Type, err)
	}
	return b, nil
}

// UnmarshalEvent decodes an event written by Marshal. typ is the type the
// log stored beside the bytes; it must be a known type and agree with the
// one inside. Unknown fields are ignored, so a log written by a newer
// release that only adds fields stays readable.
func UnmarshalEvent(typ string, data []byte) (Event, error) {
	var e Event
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&e); err != nil {
		return Event{}, fmt.Errorf("%w: event %s: %w", ErrCorruptLog, typ, err)
	}
	if e.Type == "" {
		e.Type = typ
	}
	if e.Type != typ {
		return Event{}, fmt.Errorf("%w: event stored as %q holds type %q", ErrCorruptLog, typ, e.Type)
	}
	if !eventTypes[typ] {
		return Event{}, fmt.Errorf("%w: unknown event type %q", ErrCorruptLog, typ)
	}
	return e, nil
}
