package saga

import (
	"encoding/json"
	"time"
)

// Command is something the engine must do once the events that came with
// it are durable. It is one of DispatchStep, SetTimer, CancelTimer,
// CancelTask or Finished; switch on the concrete type:
//
//	switch c := cmd.(type) {
//	case saga.DispatchStep: ...
//	case saga.SetTimer: ...
//	}
//
// Commands are values. Within one Step they come in the order they were
// decided; carrying them out in that order is always correct.
type Command interface {
	// CommandType names the command type, for logs and metrics:
	// dispatch, set_timer, cancel_timer, cancel_task or finished.
	CommandType() string
}

// DispatchStep sends one attempt of a step phase to its participant.
type DispatchStep struct {
	TaskID     string
	SagaID     string
	Definition string
	Version    int
	Step       string
	Phase      Phase
	Attempt    int
	Target     Target
	// Payload is the action's rendered input template (or the saga input
	// when the step has none). For a compensation it is
	// {"input": <the action's payload>, "output": <the action's output,
	// null when unknown>}.
	Payload json.RawMessage
	// IdempotencyKey is the same for every attempt of this step phase.
	IdempotencyKey string
	// AttemptTimeout is the step's attempt_timeout (zero: none). The
	// engine's own timer (SetTimer, kind attempt_timeout) enforces it; this
	// copy lets push calls use it as their HTTP timeout.
	AttemptTimeout time.Duration
	// Deadline is when the attempt times out (zero: never).
	Deadline time.Time
}

// SetTimer arms a timer. When it fires (by the database's clock, never
// early), the engine calls Step with an Input of kind timer_fired carrying
// TimerID. Setting a timer id that is already armed replaces it.
type SetTimer struct {
	TimerID string
	FireAt  time.Time
	Kind    TimerKind
	Step    string // empty for saga_timeout
	Phase   Phase  // empty for saga_timeout
	Attempt int    // zero for saga_timeout and step_timeout
}

// CancelTimer disarms a timer. A timer that already fired or never existed
// is fine: firing a disarmed timer would be ignored by Step anyway.
type CancelTimer struct {
	TimerID string
}

// CancelTask withdraws an attempt whose outcome no longer matters to the
// saga (it timed out). A pull worker that already holds it may still
// complete it; its result is then ignored.
type CancelTask struct {
	TaskID string
}

// Finished says the saga reached a terminal status. needs_operator is
// terminal until an operator retry resumes the saga.
type Finished struct {
	Status Status
}

func (DispatchStep) CommandType() string { return "dispatch" }
func (SetTimer) CommandType() string     { return "set_timer" }
func (CancelTimer) CommandType() string  { return "cancel_timer" }
func (CancelTask) CommandType() string   { return "cancel_task" }
func (Finished) CommandType() string     { return "finished" }
