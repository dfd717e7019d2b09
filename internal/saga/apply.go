package saga

import (
	"fmt"
	"time"
)

// apply folds one event into s. It is the only code that changes a State:
// Step decides which events happen and applies them through here, and
// Replay applies a stored log through here, so both reach the same State.
// apply checks that the event can follow the state (an error means the log
// is corrupt, or, from Step, a bug) and leaves s in an unspecified state on
// error; callers work on a clone.
func apply(def *Definition, s *State, e *Event) error {
	if e.Definition != def.Name || e.Version != def.Version {
		return fmt.Errorf("%w: event for %s v%d, definition is %s v%d", ErrDefinitionMismatch, e.Definition, e.Version, def.Name, def.Version)
	}
	if e.Type == EventSagaStarted {
		return applyStarted(def, s, e)
	}
	if s.SagaStatus == "" {
		return corrupt(e, "comes before saga.started")
	}
	if e.SagaID != s.SagaID {
		return corrupt(e, "belongs to saga %q", e.SagaID)
	}
	if s.SagaStatus.Terminal() && !(s.SagaStatus == StatusNeedsOperator && e.Type == EventSagaOperatorRetry) {
		return corrupt(e, "follows the end of the saga (%s)", s.SagaStatus)
	}
	switch e.Type {
	case EventSagaCompleted:
		if err := wantStatus(s, e, StatusRunning); err != nil {
			return err
		}
		for _, st := range s.Steps {
			if st.Status != StepSucceeded {
				return corrupt(e, "while step %q is %s", st.Name, st.Status)
			}
		}
		s.SagaStatus = StatusCompleted
		s.EndedAt = e.Time
		s.Deadline = time.Time{}
		return nil
	case EventSagaCompensated, EventSagaCancelled:
		if err := wantStatus(s, e, StatusCompensating); err != nil {
			return err
		}
		if (e.Type == EventSagaCancelled) != (s.Reason == ReasonCancelled) {
			return corrupt(e, "but the saga compensates for %s", s.Reason)
		}
		for i := range s.Steps {
			if s.needsCompensation(def, i) || s.Steps[i].Action.InFlight {
				return corrupt(e, "while step %q is %s", s.Steps[i].Name, s.Steps[i].Status)
			}
		}
		s.SagaStatus = StatusCompensated
		if e.Type == EventSagaCancelled {
			s.SagaStatus = StatusCancelled
		}
		s.EndedAt = e.Time
		return nil
	case EventSagaCancelRequested:
		if err := wantStatus(s, e, StatusRunning); err != nil {
			return err
		}
		abort(s, ReasonCancelled, "", e.Time)
		s.Note = e.Reason
		return nil
	case EventSagaTimedOut:
		if err := wantStatus(s, e, StatusRunning); err != nil {
			return err
		}
		s.TimedOut = true
		s.Deadline = time.Time{}
		if !e.Ignored {
			abort(s, ReasonSagaTimeout, "", e.Time)
		}
		return nil
	case EventSagaNeedsOperator:
		if err := wantStatus(s, e, StatusCompensating); err != nil {
			return err
		}
		s.SagaStatus = StatusNeedsOperator
		s.Note = e.Reason
		s.EndedAt = e.Time
		return nil
	}

	i, ok := def.index[e.Step]
	if !ok || i >= len(s.Steps) {
		return corrupt(e, "names unknown step %q", e.Step)
	}
	st := &s.Steps[i]
	switch e.Type {
	case EventStepScheduled:
		if err := wantStatus(s, e, StatusRunning); err != nil {
			return err
		}
		ph := &st.Action
		first := st.Status == StepPending && ph.Attempt == 0 && e.Attempt == 1
		retry := st.Status == StepRunning && !ph.InFlight && !ph.RetryAt.IsZero() && e.Attempt == ph.Attempt+1
		if !first && !retry {
			return corrupt(e, "attempt %d while the step is %s at attempt %d", e.Attempt, st.Status, ph.Attempt)
		}
		st.Status = StepRunning
		if first {
			ph.StartedAt = e.Time
			st.StepDeadline = e.StepDeadline
		}
		dispatched(ph, e)
	case EventStepSucceeded, EventStepFailed, EventStepTimedOut:
		ph := &st.Action
		if st.Status != StepRunning {
			return corrupt(e, "while the step is %s", st.Status)
		}
		stepTimeout := e.Type == EventStepTimedOut && e.Timeout == "step"
		if !stepTimeout && (!ph.InFlight || e.Attempt != ph.Attempt) {
			return corrupt(e, "for attempt %d, which is not in flight", e.Attempt)
		}
		if stepTimeout && !e.Final {
			return corrupt(e, "step timeout that is not final")
		}
		timedOut := e.Type == EventStepTimedOut && ph.InFlight
		if e.Type == EventStepSucceeded {
			// The answer settles the step: whatever earlier attempts
			// left (an error, an unanswered call) no longer describes it.
			st.Output = e.Output
			st.OutcomeUnknown = false
			ph.LastError = nil
			ph.LastTimedOut = false
		} else {
			ph.LastError = e.Error
			ph.LastTimedOut = timedOut
			st.OutcomeUnknown = st.OutcomeUnknown || timedOut
		}
		ph.InFlight = false
		ph.Deadline = time.Time{}
		ph.RetryAt = time.Time{}
		switch {
		case e.Type == EventStepSucceeded:
			finish(s, st, StepSucceeded, e.Time)
		case e.Final && e.Type == EventStepFailed:
			finish(s, st, StepFailed, e.Time)
		case e.Final:
			finish(s, st, StepTimedOut, e.Time)
		}
		if e.Final && s.SagaStatus == StatusRunning {
			abort(s, ReasonStepFailed, st.Name, e.Time)
		}
	case EventStepRetryScheduled, EventCompensationRetryScheduled:
		ph, want := &st.Action, StepRunning
		if e.Type == EventCompensationRetryScheduled {
			ph, want = &st.Compensation, StepCompensating
		}
		if st.Status != want || ph.InFlight || !ph.RetryAt.IsZero() || e.Attempt != ph.Attempt+1 || e.RetryAt.IsZero() {
			return corrupt(e, "attempt %d while the step is %s at attempt %d", e.Attempt, st.Status, ph.Attempt)
		}
		ph.RetryAt = e.RetryAt
		s.RNG = rngAdvance(s.RNG)
	case EventCompensationScheduled:
		if err := wantStatus(s, e, StatusCompensating); err != nil {
			return err
		}
		ph := &st.Compensation
		first := s.needsCompensation(def, i) && st.Status != StepCompensating && ph.Attempt == 0 && e.Attempt == 1
		retry := st.Status == StepCompensating && !ph.InFlight && e.Attempt == ph.Attempt+1
		if !first && !retry {
			return corrupt(e, "attempt %d while the step is %s at attempt %d", e.Attempt, st.Status, ph.Attempt)
		}
		if first {
			ph.StartedAt = e.Time
		}
		st.Status = StepCompensating
		dispatched(ph, e)
	case EventCompensationSucceeded, EventCompensationFailed, EventCompensationTimedOut:
		ph := &st.Compensation
		if st.Status != StepCompensating || !ph.InFlight || e.Attempt != ph.Attempt {
			return corrupt(e, "for attempt %d while the step is %s at attempt %d", e.Attempt, st.Status, ph.Attempt)
		}
		ph.InFlight = false
		ph.Deadline = time.Time{}
		if e.Type == EventCompensationSucceeded {
			st.Status = StepCompensated
			ph.EndedAt = e.Time
			ph.LastError = nil
			ph.LastTimedOut = false
			break
		}
		ph.LastError = e.Error
		ph.LastTimedOut = e.Type == EventCompensationTimedOut
		if e.Final {
			st.Status = StepCompensationFailed
			ph.EndedAt = e.Time
		}
	case EventSagaOperatorRetry:
		if err := wantStatus(s, e, StatusNeedsOperator); err != nil {
			return err
		}
		if st.Status != StepCompensationFailed {
			return corrupt(e, "while the step is %s", st.Status)
		}
		s.SagaStatus = StatusCompensating
		s.EndedAt = time.Time{}
		s.Note = ""
		st.Status = StepCompensating
		st.Compensation.BudgetBase = st.Compensation.Attempt
		st.Compensation.EndedAt = time.Time{}
	default:
		return corrupt(e, "is not a known event type")
	}
	return nil
}

func applyStarted(def *Definition, s *State, e *Event) error {
	if s.SagaStatus != "" {
		return corrupt(e, "saga already started")
	}
	if e.DefinitionHash != def.Hash() {
		return fmt.Errorf("%w: saga started on definition %s, given %s", ErrDefinitionMismatch, e.DefinitionHash, def.Hash())
	}
	*s = State{
		SagaID:         e.SagaID,
		Definition:     e.Definition,
		Version:        e.Version,
		DefinitionHash: e.DefinitionHash,
		SagaStatus:     StatusRunning,
		Input:          e.Input,
		Seed:           e.Seed,
		RNG:            e.Seed,
		StartedAt:      e.Time,
		Deadline:       e.Deadline,
		Steps:          make([]StepState, len(def.Steps)),
	}
	for i, sd := range def.Steps {
		s.Steps[i] = StepState{Name: sd.Name, Kind: sd.Kind, Status: StepPending}
	}
	return nil
}

func dispatched(ph *PhaseState, e *Event) {
	ph.Attempt = e.Attempt
	ph.InFlight = true
	ph.Deadline = e.AttemptDeadline
	ph.RetryAt = time.Time{}
}

// finish ends a step's action and numbers it in completion order.
func finish(s *State, st *StepState, status StepStatus, t time.Time) {
	st.Status = status
	st.StepDeadline = time.Time{}
	st.Action.EndedAt = t
	s.Seq++
	st.Completed = s.Seq
}

// abort starts compensating: steps not yet started are skipped, steps
// waiting to retry end where they are (timed out if their last attempt
// did), in-flight attempts are left to finish. Ending steps are numbered in
// definition order. The saga timeout is disarmed.
func abort(s *State, reason, step string, t time.Time) {
	s.SagaStatus = StatusCompensating
	s.Reason = reason
	s.FailedStep = step
	s.Deadline = time.Time{}
	for i := range s.Steps {
		st := &s.Steps[i]
		switch {
		case st.Status == StepPending:
			st.Status = StepSkipped
		case st.Status == StepRunning && !st.Action.InFlight:
			st.Action.RetryAt = time.Time{}
			status := StepFailed
			if st.Action.LastTimedOut {
				status = StepTimedOut
			}
			finish(s, st, status, t)
		}
	}
}

func wantStatus(s *State, e *Event, want Status) error {
	if s.SagaStatus != want {
		return corrupt(e, "while the saga is %s", s.SagaStatus)
	}
	return nil
}

func corrupt(e *Event, format string, args ...any) error {
	return fmt.Errorf("%w: %s event (step %q, attempt %d) %s", ErrCorruptLog, e.Type, e.Step, e.Attempt, fmt.Sprintf(format, args...))
}

// Replay folds a saga's log into its State. It returns the State that Step
// returned after producing the last of these events. The log must start
// with saga.started and come from a saga on def (same name, version and
// content hash).
func Replay(def *Definition, events []Event) (*State, error) {
	if !def.parsed() {
		return nil, fmt.Errorf("%w: the definition was not produced by ParseDefinition", ErrDefinitionMismatch)
	}
	if len(events) == 0 {
		return nil, fmt.Errorf("%w: empty log", ErrCorruptLog)
	}
	s := &State{}
	for k := range events {
		if err := apply(def, s, &events[k]); err != nil {
			return nil, fmt.Errorf("event %d: %w", k, err)
		}
	}
	return s, nil
}
