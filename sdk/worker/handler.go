package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime/debug"
	"time"

	"github.com/accord-saga/accord/sdk/client"
)

// Task is one attempt of one step phase, as a handler sees it.
type Task struct {
	ID                string
	Queue             string
	SagaID            string
	Definition        string
	DefinitionVersion int
	Step              string
	// Phase is "action" or "compensation".
	Phase     string
	Operation string
	// Attempt counts the attempts of this step phase, from 1.
	Attempt int
	// Deliveries counts the claims of this attempt, this one included: more
	// than one means an earlier worker took it and gave no answer.
	Deliveries int
	// IdempotencyKey is the same for every attempt of this step phase: make
	// the effect conditional on it (sdk/guard does, in your database).
	IdempotencyKey string
	// Input is the step's input, JSON.
	Input json.RawMessage
	// Deadline is when the engine gives up on this attempt (zero: never);
	// the handler's context ends then.
	Deadline time.Time
	// Traceparent is the attempt's W3C trace context when the server
	// traces (empty otherwise): extract it with a propagator to make the
	// handler's spans children of the attempt's span in the saga's trace.
	Traceparent string

	claimToken string
}

// Decode unmarshals the task's input into v.
func (t *Task) Decode(v any) error {
	if len(t.Input) == 0 {
		return nil
	}
	if err := json.Unmarshal(t.Input, v); err != nil {
		return fmt.Errorf("worker: task %s: decode input: %w", t.ID, err)
	}
	return nil
}

func taskFrom(ct client.Task) *Task {
	t := &Task{
		ID: ct.ID, Queue: ct.Queue, SagaID: ct.SagaID, Definition: ct.Definition, DefinitionVersion: ct.DefinitionVersion,
		Step: ct.Step, Phase: ct.Phase, Operation: ct.Operation, Attempt: ct.Attempt, Deliveries: ct.Deliveries,
		IdempotencyKey: ct.IdempotencyKey, Input: ct.Input, Traceparent: ct.Traceparent, claimToken: ct.ClaimToken,
	}
	if ct.AttemptTimeoutMS > 0 {
		t.Deadline = time.Now().Add(time.Duration(ct.AttemptTimeoutMS) * time.Millisecond)
	}
	return t
}

// Handler runs one task. Its output (marshalled to JSON; a json.RawMessage
// is sent as is) becomes the step's output. Its error decides the outcome:
// nil is success; an error made by Failure is a business failure (no
// retry, the saga compensates); any other error is retryable. A panic is
// recovered and reported retryable with the code "panic".
type Handler func(ctx context.Context, t *Task) (output any, err error)

// Typed adapts a handler of a decoded input type: the task's input is
// unmarshalled into In (a task whose input does not decode fails as a
// business failure with the code "bad_input", as no retry can fix it).
func Typed[In, Out any](f func(ctx context.Context, t *Task, in In) (Out, error)) Handler {
	return func(ctx context.Context, t *Task) (any, error) {
		var in In
		if err := t.Decode(&in); err != nil {
			return nil, Failure(CodeBadInput, err.Error())
		}
		return f(ctx, t, in)
	}
}

// Error codes the worker reports itself.
const (
	// CodePanic: the handler panicked.
	CodePanic = "panic"
	// CodeBadInput: the input did not decode into the handler's type.
	CodeBadInput = "bad_input"
	// CodeBadOutput: the handler's output did not marshal to JSON.
	CodeBadOutput = "bad_output"
	// CodeNoHandler: no handler is registered for the task's operation.
	CodeNoHandler = "no_handler"
	// CodeShutdown: the worker stopped before the handler finished.
	CodeShutdown = "shutdown"
	// CodeError: a plain error, with no code of its own.
	CodeError = "error"
)

// FailureError is a business failure: the step failed for good.
type FailureError struct {
	Code    string
	Message string
}

func (e *FailureError) Error() string { return "failure " + e.Code + ": " + e.Message }

// Failure returns a business failure: no retry, the saga compensates. code
// is what the definition's non_retryable_errors and the saga's view show.
func Failure(code, message string) error { return &FailureError{Code: code, Message: message} }

// RetryableError is a transient failure, retried with backoff.
type RetryableError struct {
	Code string
	Err  error
}

func (e *RetryableError) Error() string {
	if e.Err == nil {
		return "retryable " + e.Code
	}
	return "retryable " + e.Code + ": " + e.Err.Error()
}

func (e *RetryableError) Unwrap() error { return e.Err }

// Retryable marks err as transient. Any error not made by Failure is
// retryable anyway; Retryable says so explicitly.
func Retryable(err error) error { return &RetryableError{Code: CodeError, Err: err} }

// RetryableCode marks err as transient with a code of your own (listed in
// a retry policy's non_retryable_errors, it stops the retries).
func RetryableCode(code string, err error) error { return &RetryableError{Code: code, Err: err} }

// Result is what a handler's run reports.
type Result struct {
	// Outcome is client.OutcomeSuccess, OutcomeFailure or OutcomeRetryable.
	Outcome string
	// Output is the step's output as JSON (success only).
	Output       json.RawMessage
	ErrorCode    string
	ErrorMessage string
	// Panic holds the recovered value and stack when the handler panicked.
	Panic string
}

// Call runs h on t exactly as a Worker does — panic recovery, the error to
// outcome mapping, output encoding — and returns what the worker would
// report. Tests of handlers use it (see package sdktest).
func Call(ctx context.Context, h Handler, t *Task) (res Result) {
	defer func() {
		if v := recover(); v != nil {
			res = Result{Outcome: client.OutcomeRetryable, ErrorCode: CodePanic, ErrorMessage: fmt.Sprint(v),
				Panic: fmt.Sprintf("%v\n%s", v, debug.Stack())}
		}
	}()
	out, err := h(ctx, t)
	return resultOf(out, err)
}

func resultOf(out any, err error) Result {
	var fe *FailureError
	var re *RetryableError
	switch {
	case err == nil:
		if out == nil {
			return Result{Outcome: client.OutcomeSuccess}
		}
		b, merr := json.Marshal(out)
		if merr != nil {
			return Result{Outcome: client.OutcomeRetryable, ErrorCode: CodeBadOutput, ErrorMessage: merr.Error()}
		}
		return Result{Outcome: client.OutcomeSuccess, Output: b}
	case errors.As(err, &fe):
		return Result{Outcome: client.OutcomeFailure, ErrorCode: fe.Code, ErrorMessage: fe.Message}
	case errors.As(err, &re):
		return Result{Outcome: client.OutcomeRetryable, ErrorCode: re.Code, ErrorMessage: err.Error()}
	default:
		return Result{Outcome: client.OutcomeRetryable, ErrorCode: CodeError, ErrorMessage: err.Error()}
	}
}
