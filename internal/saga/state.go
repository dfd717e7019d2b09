package saga

import (
	"encoding/json"
	"time"
)

// Status is a saga's status.
type Status string

const (
	// StatusRunning: steps are being run.
	StatusRunning Status = "running"
	// StatusCompensating: the saga failed, timed out or was cancelled; it
	// waits for in-flight actions, then compensates.
	StatusCompensating Status = "compensating"
	// StatusCompleted: every step succeeded. Terminal.
	StatusCompleted Status = "completed"
	// StatusCompensated: the saga failed and is fully compensated. Terminal.
	StatusCompensated Status = "compensated"
	// StatusCancelled: the saga was cancelled and is fully compensated.
	// Terminal.
	StatusCancelled Status = "cancelled"
	// StatusNeedsOperator: a compensation failed past its budget. Terminal
	// for the engine; an operator retry resumes compensating.
	StatusNeedsOperator Status = "needs_operator"
)

// Terminal reports whether no input but an operator retry can move a saga
// in this status.
func (s Status) Terminal() bool {
	return s == StatusCompleted || s == StatusCompensated || s == StatusCancelled || s == StatusNeedsOperator
}

// StepStatus is one step's status.
type StepStatus string

const (
	StepPending            StepStatus = "pending"             // not started
	StepRunning            StepStatus = "running"             // an attempt in flight, or waiting to retry
	StepSucceeded          StepStatus = "succeeded"           // the action succeeded
	StepFailed             StepStatus = "failed"              // the action failed for good
	StepTimedOut           StepStatus = "timed_out"           // the action ran out of time or attempts without an answer
	StepCompensating       StepStatus = "compensating"        // the compensation is in flight or waiting to retry
	StepCompensated        StepStatus = "compensated"         // the compensation succeeded
	StepCompensationFailed StepStatus = "compensation_failed" // the compensation failed past its budget
	StepSkipped            StepStatus = "skipped"             // never started: the saga began compensating first
)

// Reasons a saga compensates (State.Reason).
const (
	ReasonStepFailed  = "step_failed"
	ReasonCancelled   = "cancelled"
	ReasonSagaTimeout = "saga_timeout"
)

// State is a saga's state: the fold of its events. It is plain data, JSON
// round-trips losslessly, and is only ever changed by applying events, so
// Replay of the log gives back exactly the State Step returned.
type State struct {
	SagaID         string `json:"saga_id"`
	Definition     string `json:"definition"`
	Version        int    `json:"version"`
	DefinitionHash string `json:"definition_hash"`
	// SagaStatus is the saga's status (also returned by Status).
	SagaStatus Status          `json:"status"`
	Input      json.RawMessage `json:"input"`
	Seed       uint64          `json:"seed"`
	// RNG is the jitter generator's state (see backoff.go).
	RNG uint64 `json:"rng"`
	// Seq counts steps that reached an end (succeeded, failed, timed out);
	// StepState.Completed holds each one's number. Compensation runs in
	// reverse of it.
	Seq       int       `json:"seq"`
	StartedAt time.Time `json:"started_at"`
	EndedAt   time.Time `json:"ended_at,omitzero"`
	// Deadline is when the saga timeout fires; zero when none is armed.
	Deadline time.Time `json:"deadline,omitzero"`
	// TimedOut records that the saga timeout fired.
	TimedOut bool `json:"timed_out,omitempty"`
	// Reason says why the saga compensates (ReasonStepFailed,
	// ReasonCancelled, ReasonSagaTimeout); FailedStep names the step for
	// ReasonStepFailed; Note is the cancel's reason, or why the saga needs
	// an operator.
	Reason     string      `json:"reason,omitempty"`
	FailedStep string      `json:"failed_step,omitempty"`
	Note       string      `json:"note,omitempty"`
	Steps      []StepState `json:"steps"`
}

// StepState is one step's state, in definition order within State.Steps.
type StepState struct {
	Name   string     `json:"name"`
	Kind   StepKind   `json:"kind"`
	Status StepStatus `json:"status"`
	// OutcomeUnknown: an action attempt got no answer in time, so the
	// action may have taken effect. Such a step is compensated unless it
	// is the pivot (whose retries, by its idempotency key, tell the truth).
	OutcomeUnknown bool            `json:"outcome_unknown,omitempty"`
	Output         json.RawMessage `json:"output,omitempty"`
	// StepDeadline is when the step timeout fires; zero when none is armed.
	StepDeadline time.Time `json:"step_deadline,omitzero"`
	// Completed is the step's number in the order steps reached an end.
	Completed    int        `json:"completed,omitempty"`
	Action       PhaseState `json:"action"`
	Compensation PhaseState `json:"compensation,omitzero"`
}

// PhaseState tracks the attempts of an action or a compensation.
type PhaseState struct {
	// Attempt is the latest attempt dispatched (0: none yet).
	Attempt int `json:"attempt,omitempty"`
	// InFlight: attempt Attempt is out and unanswered.
	InFlight bool `json:"in_flight,omitempty"`
	// Deadline is when the in-flight attempt times out (zero: never).
	Deadline time.Time `json:"deadline,omitzero"`
	// RetryAt is when attempt Attempt+1 is due (zero: no retry waiting).
	RetryAt time.Time `json:"retry_at,omitzero"`
	// BudgetBase is the attempt count when the current retry budget began
	// (non-zero after an operator retry).
	BudgetBase int `json:"budget_base,omitempty"`
	// LastTimedOut: the last attempt ended in an attempt timeout.
	LastTimedOut bool       `json:"last_timed_out,omitempty"`
	LastError    *ErrorInfo `json:"last_error,omitempty"`
	StartedAt    time.Time  `json:"started_at,omitzero"`
	EndedAt      time.Time  `json:"ended_at,omitzero"`
}

// Status returns the saga's status.
func (s *State) Status() Status { return s.SagaStatus }

// Terminal reports whether the saga has ended (see Status.Terminal).
func (s *State) Terminal() bool { return s.SagaStatus.Terminal() }

// clone copies s deeply enough that applying events to the copy never
// shows through s: Steps is copied, and the shared RawMessages and
// *ErrorInfo are never modified in place, only replaced.
func (s *State) clone() *State {
	c := *s
	c.Steps = append([]StepState(nil), s.Steps...)
	return &c
}

// pivotStarted reports whether the pivot has been dispatched: from then on
// the saga's direction depends on the pivot alone.
func (s *State) pivotStarted(def *Definition) bool {
	return def.pivot >= 0 && s.Steps[def.pivot].Status != StepPending && s.Steps[def.pivot].Status != StepSkipped
}

// needsCompensation reports whether step i must be compensated now that
// the saga compensates: its action succeeded or may have taken effect, and
// its compensation has not succeeded.
func (s *State) needsCompensation(def *Definition, i int) bool {
	st := &s.Steps[i]
	if def.Steps[i].Compensation == nil {
		return false
	}
	switch st.Status {
	case StepSucceeded, StepCompensating:
		return true
	case StepFailed, StepTimedOut:
		return st.OutcomeUnknown
	}
	return false
}

// Timers lists the timers the saga has armed, in a fixed order. A
// reconciler compares them with the engine's timer table and re-arms any
// that are missing.
func (s *State) Timers() []SetTimer {
	var out []SetTimer
	if !s.Deadline.IsZero() {
		out = append(out, SetTimer{TimerID: TimerID(s.SagaID, TimerSagaTimeout, "", "", 0), FireAt: s.Deadline, Kind: TimerSagaTimeout})
	}
	for _, st := range s.Steps {
		if !st.StepDeadline.IsZero() {
			out = append(out, SetTimer{TimerID: TimerID(s.SagaID, TimerStepTimeout, st.Name, "", 0), FireAt: st.StepDeadline, Kind: TimerStepTimeout, Step: st.Name})
		}
		for _, p := range []struct {
			phase Phase
			ps    PhaseState
		}{{PhaseAction, st.Action}, {PhaseCompensation, st.Compensation}} {
			if p.ps.InFlight && !p.ps.Deadline.IsZero() {
				out = append(out, attemptTimer(s.SagaID, st.Name, p.phase, p.ps.Attempt, p.ps.Deadline))
			}
			if !p.ps.RetryAt.IsZero() {
				out = append(out, retryTimer(s.SagaID, st.Name, p.phase, p.ps.Attempt+1, p.ps.RetryAt))
			}
		}
	}
	return out
}

func attemptTimer(sagaID, step string, phase Phase, attempt int, at time.Time) SetTimer {
	return SetTimer{TimerID: TimerID(sagaID, TimerAttemptTimeout, step, phase, attempt), FireAt: at,
		Kind: TimerAttemptTimeout, Step: step, Phase: phase, Attempt: attempt}
}

func retryTimer(sagaID, step string, phase Phase, attempt int, at time.Time) SetTimer {
	return SetTimer{TimerID: TimerID(sagaID, TimerRetry, step, phase, attempt), FireAt: at,
		Kind: TimerRetry, Step: step, Phase: phase, Attempt: attempt}
}

// Tasks lists the attempts in flight, as the DispatchStep commands that
// sent them. A recovering engine can re-send them (participants
// deduplicate by idempotency key) or check them against its task table.
func (s *State) Tasks(def *Definition) ([]DispatchStep, error) {
	if err := checkDefinition(def, s); err != nil {
		return nil, err
	}
	var out []DispatchStep
	for i, st := range s.Steps {
		if !st.Action.InFlight && !st.Compensation.InFlight {
			continue
		}
		payload, err := actionPayload(def, s, i)
		if err != nil {
			return nil, err
		}
		if st.Action.InFlight {
			out = append(out, dispatchFor(def, s, i, PhaseAction, st.Action.Attempt, st.Action.Deadline, payload))
		}
		if st.Compensation.InFlight {
			out = append(out, dispatchFor(def, s, i, PhaseCompensation, st.Compensation.Attempt, st.Compensation.Deadline, payload))
		}
	}
	return out, nil
}

// View is the saga as the API shows it.
type View struct {
	SagaID     string          `json:"saga_id"`
	Definition string          `json:"definition"`
	Version    int             `json:"version"`
	Status     Status          `json:"status"`
	Reason     string          `json:"reason,omitempty"`
	FailedStep string          `json:"failed_step,omitempty"`
	Note       string          `json:"note,omitempty"`
	TimedOut   bool            `json:"timed_out,omitempty"`
	Input      json.RawMessage `json:"input"`
	StartedAt  time.Time       `json:"started_at"`
	EndedAt    time.Time       `json:"ended_at,omitzero"`
	Deadline   time.Time       `json:"deadline,omitzero"`
	Steps      []StepView      `json:"steps"`
}

// StepView is one step as the API shows it.
type StepView struct {
	Name           string          `json:"name"`
	Kind           StepKind        `json:"kind"`
	Status         StepStatus      `json:"status"`
	Attempts       int             `json:"attempts"`
	OutcomeUnknown bool            `json:"outcome_unknown,omitempty"`
	LastError      *ErrorInfo      `json:"last_error,omitempty"`
	StartedAt      time.Time       `json:"started_at,omitzero"`
	EndedAt        time.Time       `json:"ended_at,omitzero"`
	NextAttemptAt  time.Time       `json:"next_attempt_at,omitzero"`
	Output         json.RawMessage `json:"output,omitempty"`
	// Compensation is present once the compensation has started.
	Compensation *CompensationView `json:"compensation,omitempty"`
}

// CompensationView is a step's compensation as the API shows it.
type CompensationView struct {
	Attempts      int        `json:"attempts"`
	LastError     *ErrorInfo `json:"last_error,omitempty"`
	StartedAt     time.Time  `json:"started_at,omitzero"`
	EndedAt       time.Time  `json:"ended_at,omitzero"`
	NextAttemptAt time.Time  `json:"next_attempt_at,omitzero"`
}

// View returns the saga as the API shows it.
func (s *State) View() View {
	v := View{
		SagaID: s.SagaID, Definition: s.Definition, Version: s.Version, Status: s.SagaStatus,
		Reason: s.Reason, FailedStep: s.FailedStep, Note: s.Note, TimedOut: s.TimedOut,
		Input: s.Input, StartedAt: s.StartedAt, EndedAt: s.EndedAt, Deadline: s.Deadline,
		Steps: make([]StepView, len(s.Steps)),
	}
	for i, st := range s.Steps {
		sv := StepView{
			Name: st.Name, Kind: st.Kind, Status: st.Status, Attempts: st.Action.Attempt,
			OutcomeUnknown: st.OutcomeUnknown, LastError: st.Action.LastError,
			StartedAt: st.Action.StartedAt, EndedAt: st.Action.EndedAt,
			NextAttemptAt: st.Action.RetryAt, Output: st.Output,
		}
		if c := st.Compensation; c.Attempt > 0 {
			sv.Compensation = &CompensationView{
				Attempts: c.Attempt, LastError: c.LastError, StartedAt: c.StartedAt,
				EndedAt: c.EndedAt, NextAttemptAt: c.RetryAt,
			}
		}
		v.Steps[i] = sv
	}
	return v
}
