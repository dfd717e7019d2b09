package saga

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/accord-saga/accord/internal/ident"
)

// Task ids, timer ids and idempotency keys are pure functions of the saga
// id, step, phase, attempt and timer kind. A recovering engine can recompute
// every one of them from a State (see State.Timers and State.Tasks), and a
// participant sees the same idempotency key on every attempt of one step
// phase.

// MaxSagaIDLength bounds saga ids, which are embedded in every task and
// timer id.
const MaxSagaIDLength = 200

// Phase is the half of a step an attempt belongs to.
type Phase string

const (
	PhaseAction       Phase = "action"
	PhaseCompensation Phase = "compensation"
)

// TimerKind says what a timer is for.
type TimerKind string

const (
	// TimerRetry fires when the next attempt of a step phase is due.
	TimerRetry TimerKind = "retry"
	// TimerAttemptTimeout fires when an attempt has had no answer for the
	// step's attempt_timeout.
	TimerAttemptTimeout TimerKind = "attempt_timeout"
	// TimerStepTimeout fires when a step's action has not succeeded within
	// its step_timeout of the first dispatch.
	TimerStepTimeout TimerKind = "step_timeout"
	// TimerSagaTimeout fires at the saga's deadline.
	TimerSagaTimeout TimerKind = "saga_timeout"
)

// TaskID names one attempt: "<saga>/<step>/<phase>/<attempt>".
func TaskID(sagaID, step string, phase Phase, attempt int) string {
	return sagaID + "/" + step + "/" + string(phase) + "/" + strconv.Itoa(attempt)
}

// IdempotencyKey is the same for every attempt of one step phase:
// "<saga>/<step>/<phase>". Participants deduplicate on it.
func IdempotencyKey(sagaID, step string, phase Phase) string {
	return sagaID + "/" + step + "/" + string(phase)
}

// TimerID names a timer:
//
//	<saga>/saga_timeout
//	<saga>/<step>/step_timeout
//	<saga>/<step>/<phase>/<attempt>/retry            (attempt = the one to dispatch)
//	<saga>/<step>/<phase>/<attempt>/attempt_timeout
func TimerID(sagaID string, kind TimerKind, step string, phase Phase, attempt int) string {
	switch kind {
	case TimerSagaTimeout:
		return sagaID + "/" + string(kind)
	case TimerStepTimeout:
		return sagaID + "/" + step + "/" + string(kind)
	default:
		return TaskID(sagaID, step, phase, attempt) + "/" + string(kind)
	}
}

// timerRef is a parsed TimerID.
type timerRef struct {
	kind    TimerKind
	step    string
	phase   Phase
	attempt int
}

// parseTimerID reads a TimerID of saga sagaID. Saga ids may contain '/',
// so the id is read after the known prefix.
func parseTimerID(sagaID, id string) (timerRef, error) {
	rest, ok := strings.CutPrefix(id, sagaID+"/")
	if !ok {
		return timerRef{}, badInput("timer %q does not belong to saga %q", id, sagaID)
	}
	parts := strings.Split(rest, "/")
	switch {
	case len(parts) == 1 && parts[0] == string(TimerSagaTimeout):
		return timerRef{kind: TimerSagaTimeout}, nil
	case len(parts) == 2 && parts[1] == string(TimerStepTimeout):
		return timerRef{kind: TimerStepTimeout, step: parts[0], phase: PhaseAction}, nil
	case len(parts) == 4:
		kind := TimerKind(parts[3])
		phase := Phase(parts[1])
		n, err := strconv.Atoi(parts[2])
		if (kind == TimerRetry || kind == TimerAttemptTimeout) &&
			(phase == PhaseAction || phase == PhaseCompensation) && err == nil && n >= 1 {
			return timerRef{kind: kind, step: parts[0], phase: phase, attempt: n}, nil
		}
	}
	return timerRef{}, badInput("malformed timer id %q", id)
}

func checkSagaID(id string) error {
	if id == "" {
		return badInput("saga id is required")
	}
	if len(id) > MaxSagaIDLength {
		return badInput("saga id is %d bytes; the limit is %d", len(id), MaxSagaIDLength)
	}
	if err := ident.Check(id); err != nil {
		return fmt.Errorf("%w: saga id %w", ErrBadInput, err)
	}
	return nil
}

func badInput(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrBadInput}, args...)...)
}
