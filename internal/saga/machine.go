package saga

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"time"
	"unicode/utf8"
)

// StartInput starts a saga.
type StartInput struct {
	// SagaID is chosen by the caller: 1 to MaxSagaIDLength bytes of
	// printable UTF-8.
	SagaID string
	// Input is the saga's input, any JSON value (empty means null).
	Input json.RawMessage
	// Seed seeds the saga's retry jitter. Give each saga its own (random,
	// or derived from its id) so that retries of many sagas spread out;
	// the same seed gives the same delays.
	Seed uint64
	// Now is the start time; it must not be zero.
	Now time.Time
}

// InputKind says what happened.
type InputKind string

const (
	// InputStepResult: a participant answered an attempt.
	InputStepResult InputKind = "step_result"
	// InputTimerFired: a timer set by a SetTimer command fired.
	InputTimerFired InputKind = "timer_fired"
	// InputCancel: someone asked to cancel the saga.
	InputCancel InputKind = "cancel"
	// InputOperatorRetry: an operator asks a needs_operator saga to try its
	// stuck compensation again, with a fresh retry budget.
	InputOperatorRetry InputKind = "operator_retry"
)

// Input is one thing that happened to a running saga.
type Input struct {
	// Now is when it happened, by the engine's clock; it must not be zero.
	// It stamps the events and is the base of new timers.
	Now  time.Time
	Kind InputKind

	// Step result: which attempt answered, and how. An empty Phase means
	// PhaseAction. Output is kept for a successful action (any JSON,
	// empty means none). Error codes over 128 bytes and messages over
	// 1 KiB are truncated.
	Step    string
	Phase   Phase
	Attempt int
	Outcome Outcome
	Output  json.RawMessage
	Error   ErrorInfo

	// Timer fired: the id from the SetTimer command.
	TimerID string

	// Cancel: free text kept in the log (truncated to 1 KiB).
	Reason string
}

const (
	maxErrorCode = 128
	maxMessage   = 1024
)

// MaxRenderedBytes bounds a step's input as rendered from its template. A
// template may repeat a reference, so a small definition and an input of
// MaxInputBytes could otherwise ask for gigabytes. A start whose input
// alone already renders some step past it is refused; a step whose input
// would pass it once earlier outputs are known fails without being sent,
// with the code CodeInputTooLarge.
const MaxRenderedBytes = 1 << 20

// Start begins a saga on def: it records saga.started, arms the saga
// timeout if the definition has one, and dispatches the steps that depend
// on nothing.
func Start(def *Definition, in StartInput) (*State, []Event, []Command, error) {
	if !def.parsed() {
		return nil, nil, nil, fmt.Errorf("%w: the definition was not produced by ParseDefinition", ErrDefinitionMismatch)
	}
	if err := checkSagaID(in.SagaID); err != nil {
		return nil, nil, nil, err
	}
	if in.Now.IsZero() {
		return nil, nil, nil, badInput("start time is required")
	}
	input, err := compactJSON(in.Input, "saga input")
	if err != nil {
		return nil, nil, nil, err
	}
	if input == nil {
		input = jsonNull
	}
	if err := checkRenderSizes(def, in.SagaID, input); err != nil {
		return nil, nil, nil, err
	}
	m := &machine{def: def, s: &State{}, sagaID: in.SagaID, now: normTime(in.Now)}
	started := Event{Type: EventSagaStarted, DefinitionHash: def.Hash(), Input: input, Seed: in.Seed}
	if def.Timeout > 0 {
		started.Deadline = m.after(def.Timeout)
		m.cmd(SetTimer{TimerID: TimerID(m.sagaID, TimerSagaTimeout, "", "", 0), FireAt: started.Deadline, Kind: TimerSagaTimeout})
	}
	if err := m.emit(started); err != nil {
		return nil, nil, nil, err
	}
	if err := m.progress(); err != nil {
		return nil, nil, nil, err
	}
	return m.s, m.events, m.cmds, nil
}

// Step applies one input to the saga. It returns the new State, the events
// to append to the log and the commands to carry out after that. s is
// never modified. An input that no longer applies (a late or duplicate
// result, a timer for an attempt that already ended) returns s itself with
// no events, no commands and no error. On error s is returned with no
// events or commands.
func Step(def *Definition, s *State, in Input) (*State, []Event, []Command, error) {
	if s == nil {
		return nil, nil, nil, badInput("no state")
	}
	if err := checkDefinition(def, s); err != nil {
		return s, nil, nil, err
	}
	if in.Now.IsZero() {
		return s, nil, nil, badInput("input time is required")
	}
	m := &machine{def: def, s: s.clone(), sagaID: s.SagaID, now: normTime(in.Now)}
	var err error
	switch in.Kind {
	case InputStepResult:
		err = m.stepResult(in)
	case InputTimerFired:
		err = m.timerFired(in)
	case InputCancel:
		err = m.cancel(in)
	case InputOperatorRetry:
		err = m.operatorRetry()
	default:
		err = badInput("unknown input kind %q", in.Kind)
	}
	if err == nil && len(m.events) > 0 {
		err = m.progress()
	}
	if err != nil {
		return s, nil, nil, err
	}
	if len(m.events) == 0 {
		return s, nil, nil, nil
	}
	return m.s, m.events, m.cmds, nil
}

func checkDefinition(def *Definition, s *State) error {
	if !def.parsed() {
		return fmt.Errorf("%w: the definition was not produced by ParseDefinition", ErrDefinitionMismatch)
	}
	if def.Name != s.Definition || def.Version != s.Version || def.Hash() != s.DefinitionHash || len(def.Steps) != len(s.Steps) {
		return fmt.Errorf("%w: saga runs on %s v%d (%s), given %s v%d (%s)", ErrDefinitionMismatch,
			s.Definition, s.Version, s.DefinitionHash, def.Name, def.Version, def.Hash())
	}
	return nil
}

// parsed reports whether d came from ParseDefinition.
func (d *Definition) parsed() bool { return d != nil && d.canonical != nil }

// machine decides the events and commands of one Start or Step. Every
// change to the state goes through emit, which applies the event at once,
// so later decisions in the same call see it.
type machine struct {
	def    *Definition
	s      *State
	sagaID string
	now    time.Time
	events []Event
	cmds   []Command
}

func (m *machine) emit(e Event) error {
	e.SagaID = m.sagaID
	e.Definition = m.def.Name
	e.Version = m.def.Version
	e.Time = m.now
	if err := apply(m.def, m.s, &e); err != nil {
		return fmt.Errorf("saga: internal error: %w", err)
	}
	m.events = append(m.events, e)
	return nil
}

func (m *machine) cmd(c Command) { m.cmds = append(m.cmds, c) }

func (m *machine) after(d Duration) time.Time { return m.now.Add(time.Duration(d)) }

func (m *machine) stepIndex(name string) (int, error) {
	i, ok := m.def.index[name]
	if !ok {
		return 0, unknownStepError(name)
	}
	return i, nil
}

// unknownStepError is both ErrBadInput and ErrUnknownStep.
type unknownStepError string

func (e unknownStepError) Error() string {
	return fmt.Sprintf("%s: unknown step %q", ErrBadInput, string(e))
}

func (e unknownStepError) Is(target error) bool {
	return target == ErrBadInput || target == ErrUnknownStep
}

func (m *machine) stepResult(in Input) error {
	i, err := m.stepIndex(in.Step)
	if err != nil {
		return err
	}
	phase := in.Phase
	if phase == "" {
		phase = PhaseAction
	}
	if phase != PhaseAction && phase != PhaseCompensation {
		return badInput("unknown phase %q", in.Phase)
	}
	if in.Attempt < 1 {
		return badInput("attempt must be at least 1, not %d", in.Attempt)
	}
	var output json.RawMessage
	switch in.Outcome {
	case OutcomeSuccess:
		if output, err = compactJSON(in.Output, "step output"); err != nil {
			return err
		}
	case OutcomeFailure, OutcomeRetryable:
	default:
		return badInput("unknown outcome %q (want success, failure or retryable)", in.Outcome)
	}
	st := &m.s.Steps[i]
	if phase == PhaseAction {
		if st.Status != StepRunning || !st.Action.InFlight || st.Action.Attempt != in.Attempt {
			return nil // late, duplicate or foreign: nothing to do
		}
		m.cancelAttemptTimer(i, PhaseAction)
		if in.Outcome == OutcomeSuccess {
			m.cancelStepTimer(i)
			return m.emit(Event{Type: EventStepSucceeded, Step: st.Name, Attempt: in.Attempt, Output: output})
		}
		errInfo := truncateError(in.Error)
		return m.actionEnded(i, Event{Type: EventStepFailed, Step: st.Name, Attempt: in.Attempt, Outcome: in.Outcome, Error: errInfo},
			m.mayRetryAction(i, in.Outcome, in.Error.Code, false))
	}
	if st.Status != StepCompensating || !st.Compensation.InFlight || st.Compensation.Attempt != in.Attempt {
		return nil
	}
	m.cancelAttemptTimer(i, PhaseCompensation)
	if in.Outcome == OutcomeSuccess {
		return m.emit(Event{Type: EventCompensationSucceeded, Step: st.Name, Attempt: in.Attempt, Output: output})
	}
	return m.compensationEnded(i, Event{Type: EventCompensationFailed, Step: st.Name, Attempt: in.Attempt, Outcome: in.Outcome, Error: truncateError(in.Error)}, in.Error.Code)
}

// actionEnded records an attempt that did not succeed (failed, or timed
// out): a retry when retry says so, else the step's end, which before the
// pivot makes the saga compensate.
func (m *machine) actionEnded(i int, e Event, retry bool) error {
	if retry {
		if err := m.emit(e); err != nil {
			return err
		}
		return m.scheduleRetry(i, PhaseAction)
	}
	e.Final = true
	m.cancelStepTimer(i)
	if m.s.SagaStatus == StatusRunning {
		m.disarmForAbort(i, false)
	}
	return m.emit(e)
}

// mayRetryAction decides whether a failed or timed-out action attempt is
// retried. Nothing is retried once the saga compensates. Retriable steps
// always are. The pivot always is after a timeout: its outcome must be
// known. Otherwise a business failure or a non-retryable code ends the
// step, and so does a spent budget.
func (m *machine) mayRetryAction(i int, outcome Outcome, code string, timedOut bool) bool {
	if m.s.SagaStatus != StatusRunning {
		return false
	}
	sd := &m.def.Steps[i]
	switch {
	case sd.Kind == KindRetriable:
		return true
	case sd.Kind == KindPivot && timedOut:
		return true
	case outcome == OutcomeFailure:
		return false
	case code != "" && slices.Contains(sd.Retry.NonRetryableErrors, code):
		return false
	}
	ph := &m.s.Steps[i].Action
	return ph.Attempt-ph.BudgetBase < sd.Retry.MaxAttempts
}

// compensationEnded records a compensation attempt that did not succeed.
// Compensations are retried whatever they answered, until their budget is
// spent or they return a code listed in compensation_retry's
// non_retryable_errors; then the saga needs an operator.
func (m *machine) compensationEnded(i int, e Event, code string) error {
	sd := &m.def.Steps[i]
	ph := &m.s.Steps[i].Compensation
	retry := ph.Attempt-ph.BudgetBase < sd.CompensationRetry.MaxAttempts &&
		(code == "" || !slices.Contains(sd.CompensationRetry.NonRetryableErrors, code))
	if retry {
		if err := m.emit(e); err != nil {
			return err
		}
		return m.scheduleRetry(i, PhaseCompensation)
	}
	e.Final = true
	if err := m.emit(e); err != nil {
		return err
	}
	reason := fmt.Sprintf("compensation of step %q failed %d times", sd.Name, ph.Attempt-ph.BudgetBase)
	if code != "" && slices.Contains(sd.CompensationRetry.NonRetryableErrors, code) {
		reason = fmt.Sprintf("compensation of step %q failed with non-retryable code %q", sd.Name, code)
	}
	if err := m.emit(Event{Type: EventSagaNeedsOperator, Step: sd.Name, Reason: reason}); err != nil {
		return err
	}
	m.cmd(Finished{Status: StatusNeedsOperator})
	return nil
}

func (m *machine) scheduleRetry(i int, phase Phase) error {
	sd := &m.def.Steps[i]
	st := &m.s.Steps[i]
	ph, policy, typ := &st.Action, sd.Retry, EventStepRetryScheduled
	if phase == PhaseCompensation {
		ph, policy, typ = &st.Compensation, sd.CompensationRetry, EventCompensationRetryScheduled
	}
	delay := backoff(policy, ph.Attempt-ph.BudgetBase, m.s.RNG)
	at := m.now.Add(delay)
	next := ph.Attempt + 1
	if err := m.emit(Event{Type: typ, Step: sd.Name, Attempt: next, RetryAt: at, Delay: Duration(delay)}); err != nil {
		return err
	}
	m.cmd(retryTimer(m.sagaID, sd.Name, phase, next, at))
	return nil
}

func (m *machine) cancelAttemptTimer(i int, phase Phase) {
	st := &m.s.Steps[i]
	ph := &st.Action
	if phase == PhaseCompensation {
		ph = &st.Compensation
	}
	if ph.InFlight && !ph.Deadline.IsZero() {
		m.cmd(CancelTimer{TimerID: TimerID(m.sagaID, TimerAttemptTimeout, st.Name, phase, ph.Attempt)})
	}
}

func (m *machine) cancelStepTimer(i int) {
	st := &m.s.Steps[i]
	if !st.StepDeadline.IsZero() {
		m.cmd(CancelTimer{TimerID: TimerID(m.sagaID, TimerStepTimeout, st.Name, "", 0)})
	}
}

// disarmForAbort cancels the timers that abort (in apply) forgets: retry
// and step timers of steps that will not run again, and the saga timeout
// unless it is what fired. Step skip is being ended by the caller, which
// handles its own timers.
func (m *machine) disarmForAbort(skip int, sagaTimerFired bool) {
	for i := range m.s.Steps {
		st := &m.s.Steps[i]
		if i == skip || st.Status != StepRunning || st.Action.InFlight {
			continue
		}
		m.cmd(CancelTimer{TimerID: TimerID(m.sagaID, TimerRetry, st.Name, PhaseAction, st.Action.Attempt+1)})
		m.cancelStepTimer(i)
	}
	if !sagaTimerFired && !m.s.Deadline.IsZero() {
		m.cmd(CancelTimer{TimerID: TimerID(m.sagaID, TimerSagaTimeout, "", "", 0)})
	}
}

func (m *machine) timerFired(in Input) error {
	ref, err := parseTimerID(m.sagaID, in.TimerID)
	if err != nil {
		return err
	}
	if ref.kind == TimerSagaTimeout {
		return m.sagaTimeout()
	}
	i, err := m.stepIndex(ref.step)
	if err != nil {
		return err
	}
	st := &m.s.Steps[i]
	sd := &m.def.Steps[i]
	switch ref.kind {
	case TimerStepTimeout:
		if st.Status != StepRunning || st.StepDeadline.IsZero() {
			return nil
		}
		ph := &st.Action
		if ph.InFlight {
			m.cancelAttemptTimer(i, PhaseAction)
			m.cmd(CancelTask{TaskID: TaskID(m.sagaID, st.Name, PhaseAction, ph.Attempt)})
		} else if !ph.RetryAt.IsZero() {
			m.cmd(CancelTimer{TimerID: TimerID(m.sagaID, TimerRetry, st.Name, PhaseAction, ph.Attempt+1)})
		}
		// The step has failed for good; its own timer has fired, so unlike
		// actionEnded there is no step timer to cancel.
		if m.s.SagaStatus == StatusRunning {
			m.disarmForAbort(i, false)
		}
		msg := fmt.Sprintf("step did not succeed within %s", sd.StepTimeout)
		return m.emit(Event{Type: EventStepTimedOut, Step: st.Name, Attempt: ph.Attempt, Timeout: "step", Final: true,
			Error: &ErrorInfo{Code: CodeStepTimeout, Message: msg}})

	case TimerAttemptTimeout:
		if ref.phase == PhaseAction {
			ph := &st.Action
			if st.Status != StepRunning || !ph.InFlight || ph.Attempt != ref.attempt || ph.Deadline.IsZero() {
				return nil
			}
			m.cmd(CancelTask{TaskID: TaskID(m.sagaID, st.Name, PhaseAction, ph.Attempt)})
			msg := fmt.Sprintf("attempt %d had no answer within %s", ph.Attempt, sd.AttemptTimeout)
			return m.actionEnded(i, Event{Type: EventStepTimedOut, Step: st.Name, Attempt: ph.Attempt, Timeout: "attempt",
				Error: &ErrorInfo{Code: CodeAttemptTimeout, Message: msg}}, m.mayRetryAction(i, OutcomeRetryable, "", true))
		}
		ph := &st.Compensation
		if st.Status != StepCompensating || !ph.InFlight || ph.Attempt != ref.attempt || ph.Deadline.IsZero() {
			return nil
		}
		m.cmd(CancelTask{TaskID: TaskID(m.sagaID, st.Name, PhaseCompensation, ph.Attempt)})
		msg := fmt.Sprintf("attempt %d had no answer within %s", ph.Attempt, sd.AttemptTimeout)
		return m.compensationEnded(i, Event{Type: EventCompensationTimedOut, Step: st.Name, Attempt: ph.Attempt, Timeout: "attempt",
			Error: &ErrorInfo{Code: CodeAttemptTimeout, Message: msg}}, "")

	default: // TimerRetry
		if ref.phase == PhaseAction {
			ph := &st.Action
			if m.s.SagaStatus != StatusRunning || st.Status != StepRunning || ph.InFlight || ph.RetryAt.IsZero() || ref.attempt != ph.Attempt+1 {
				return nil
			}
			return m.dispatchAction(i, ref.attempt)
		}
		ph := &st.Compensation
		if st.Status != StepCompensating || ph.InFlight || ph.RetryAt.IsZero() || ref.attempt != ph.Attempt+1 {
			return nil
		}
		return m.dispatchCompensation(i, ref.attempt)
	}
}

// sagaTimeout: before the pivot has started the saga compensates; after,
// the timeout is only recorded — the saga can only move forward.
func (m *machine) sagaTimeout() error {
	if m.s.SagaStatus != StatusRunning || m.s.Deadline.IsZero() {
		return nil
	}
	if m.s.pivotStarted(m.def) {
		return m.emit(Event{Type: EventSagaTimedOut, Ignored: true})
	}
	m.disarmForAbort(-1, true)
	return m.emit(Event{Type: EventSagaTimedOut})
}

func (m *machine) cancel(in Input) error {
	switch {
	case m.s.SagaStatus.Terminal():
		return fmt.Errorf("%w: it is %s", ErrTerminal, m.s.SagaStatus)
	case m.s.SagaStatus == StatusCompensating:
		return nil // already being undone
	case m.s.pivotStarted(m.def):
		return fmt.Errorf("%w: pivot step %q has started", ErrPastPivot, m.def.Pivot())
	}
	m.disarmForAbort(-1, false)
	return m.emit(Event{Type: EventSagaCancelRequested, Reason: truncate(in.Reason, maxMessage)})
}

func (m *machine) operatorRetry() error {
	if m.s.SagaStatus != StatusNeedsOperator {
		return fmt.Errorf("%w: it is %s", ErrNotNeedsOperator, m.s.SagaStatus)
	}
	for i, st := range m.s.Steps {
		if st.Status == StepCompensationFailed {
			return m.emit(Event{Type: EventSagaOperatorRetry, Step: m.def.Steps[i].Name})
		}
	}
	return fmt.Errorf("saga: internal error: needs_operator without a failed compensation")
}

// progress moves the saga as far as it can go without new input. While
// running: dispatch every pending step whose dependencies all succeeded, in
// definition order, and complete the saga when every step succeeded. While
// compensating: wait until no action and no compensation is in flight or
// waiting to retry, then compensate the step that ended last among those
// that need it — one at a time, in reverse completion order — and end the
// saga when none is left.
func (m *machine) progress() error {
	s := m.s
	switch s.SagaStatus {
	case StatusRunning:
		done := true
		for i := range s.Steps {
			if s.Steps[i].Status != StepSucceeded {
				done = false
			}
			if s.Steps[i].Status == StepPending && m.ready(i) {
				if err := m.dispatchAction(i, 1); err != nil {
					return err
				}
				if s.SagaStatus != StatusRunning {
					// The step could not be sent and failed: compensate.
					return m.progress()
				}
			}
		}
		if !done {
			return nil
		}
		if !s.Deadline.IsZero() {
			m.cmd(CancelTimer{TimerID: TimerID(m.sagaID, TimerSagaTimeout, "", "", 0)})
		}
		if err := m.emit(Event{Type: EventSagaCompleted}); err != nil {
			return err
		}
		m.cmd(Finished{Status: StatusCompleted})
	case StatusCompensating:
		next := -1
		for i := range s.Steps {
			st := &s.Steps[i]
			if st.Action.InFlight || st.Compensation.InFlight || !st.Compensation.RetryAt.IsZero() {
				return nil
			}
			if s.needsCompensation(m.def, i) && (next < 0 || st.Completed > s.Steps[next].Completed) {
				next = i
			}
		}
		if next >= 0 {
			return m.dispatchCompensation(next, s.Steps[next].Compensation.Attempt+1)
		}
		typ, status := EventSagaCompensated, StatusCompensated
		if s.Reason == ReasonCancelled {
			typ, status = EventSagaCancelled, StatusCancelled
		}
		if err := m.emit(Event{Type: typ}); err != nil {
			return err
		}
		m.cmd(Finished{Status: status})
	}
	return nil
}

func (m *machine) ready(i int) bool {
	for _, d := range m.def.deps[i] {
		if m.s.Steps[d].Status != StepSucceeded {
			return false
		}
	}
	return true
}

func (m *machine) dispatchAction(i, attempt int) error {
	sd := &m.def.Steps[i]
	e := Event{Type: EventStepScheduled, Step: sd.Name, Attempt: attempt, TaskID: TaskID(m.sagaID, sd.Name, PhaseAction, attempt)}
	payload, err := actionPayload(m.def, m.s, i)
	if err != nil {
		// The input is too large to send, and will be on every attempt:
		// the step fails at once, without timers.
		if err := m.emit(e); err != nil {
			return err
		}
		return m.actionEnded(i, Event{Type: EventStepFailed, Step: sd.Name, Attempt: attempt, Outcome: OutcomeFailure,
			Error: &ErrorInfo{Code: CodeInputTooLarge, Message: err.Error()}}, false)
	}
	if sd.AttemptTimeout > 0 {
		e.AttemptDeadline = m.after(sd.AttemptTimeout)
	}
	if attempt == 1 && sd.StepTimeout > 0 {
		e.StepDeadline = m.after(sd.StepTimeout)
	}
	if err := m.emit(e); err != nil {
		return err
	}
	m.cmd(dispatchFor(m.def, m.s, i, PhaseAction, attempt, e.AttemptDeadline, payload))
	if !e.AttemptDeadline.IsZero() {
		m.cmd(attemptTimer(m.sagaID, sd.Name, PhaseAction, attempt, e.AttemptDeadline))
	}
	if !e.StepDeadline.IsZero() {
		m.cmd(SetTimer{TimerID: TimerID(m.sagaID, TimerStepTimeout, sd.Name, "", 0), FireAt: e.StepDeadline, Kind: TimerStepTimeout, Step: sd.Name})
	}
	return nil
}

func (m *machine) dispatchCompensation(i, attempt int) error {
	sd := &m.def.Steps[i]
	e := Event{Type: EventCompensationScheduled, Step: sd.Name, Attempt: attempt, TaskID: TaskID(m.sagaID, sd.Name, PhaseCompensation, attempt)}
	payload, err := actionPayload(m.def, m.s, i)
	if err != nil {
		// The action got this same input, rendered from the same outputs,
		// so this cannot happen; should it, an operator decides.
		if err := m.emit(e); err != nil {
			return err
		}
		return m.compensationEnded(i, Event{Type: EventCompensationFailed, Step: sd.Name, Attempt: attempt, Outcome: OutcomeFailure,
			Final: true, Error: &ErrorInfo{Code: CodeInputTooLarge, Message: err.Error()}}, CodeInputTooLarge)
	}
	if sd.AttemptTimeout > 0 {
		e.AttemptDeadline = m.after(sd.AttemptTimeout)
	}
	if err := m.emit(e); err != nil {
		return err
	}
	m.cmd(dispatchFor(m.def, m.s, i, PhaseCompensation, attempt, e.AttemptDeadline, payload))
	if !e.AttemptDeadline.IsZero() {
		m.cmd(attemptTimer(m.sagaID, sd.Name, PhaseCompensation, attempt, e.AttemptDeadline))
	}
	return nil
}

// dispatchFor builds the DispatchStep for an attempt. Payloads are
// rendered from the state, which holds every output they can read; they
// are the same on every attempt.
func dispatchFor(def *Definition, s *State, i int, phase Phase, attempt int, deadline time.Time, payload json.RawMessage) DispatchStep {
	sd := &def.Steps[i]
	d := DispatchStep{
		TaskID:         TaskID(s.SagaID, sd.Name, phase, attempt),
		SagaID:         s.SagaID,
		Definition:     def.Name,
		Version:        def.Version,
		Step:           sd.Name,
		Phase:          phase,
		Attempt:        attempt,
		Target:         sd.Action,
		Payload:        payload,
		IdempotencyKey: IdempotencyKey(s.SagaID, sd.Name, phase),
		AttemptTimeout: time.Duration(sd.AttemptTimeout),
		Deadline:       deadline,
	}
	if phase == PhaseCompensation {
		d.Target = *sd.Compensation
		out := s.Steps[i].Output
		if len(out) == 0 {
			out = jsonNull
		}
		var b bytes.Buffer
		b.WriteString(`{"input":`)
		b.Write(d.Payload)
		b.WriteString(`,"output":`)
		b.Write(out)
		b.WriteString(`}`)
		d.Payload = b.Bytes()
	}
	return d
}

// actionPayload renders step i's input; a *RenderLimitError when it
// would pass MaxRenderedBytes.
func actionPayload(def *Definition, s *State, i int) (json.RawMessage, error) {
	t := def.templates[i]
	if t == nil {
		return s.Input, nil
	}
	b, n, ok := t.render(evalContext{
		sagaID: s.SagaID,
		input:  s.Input,
		output: func(step string) json.RawMessage {
			if j, ok := def.index[step]; ok {
				return s.Steps[j].Output
			}
			return nil
		},
	}, MaxRenderedBytes)
	if !ok {
		return nil, &RenderLimitError{Step: def.Steps[i].Name, Size: n, Limit: MaxRenderedBytes}
	}
	return b, nil
}

// checkRenderSizes refuses a start whose input alone renders some step's
// input past MaxRenderedBytes, counting every step output at its smallest.
func checkRenderSizes(def *Definition, sagaID string, input json.RawMessage) error {
	ctx := evalContext{sagaID: sagaID, input: input, outputsUnknown: true}
	for i, t := range def.templates {
		if t == nil {
			if len(input) > MaxRenderedBytes {
				return &RenderLimitError{Step: def.Steps[i].Name, Size: len(input), Limit: MaxRenderedBytes}
			}
			continue
		}
		if n, ok := t.measure(ctx, MaxRenderedBytes); !ok {
			return &RenderLimitError{Step: def.Steps[i].Name, Size: n, Limit: MaxRenderedBytes}
		}
	}
	return nil
}

// compactJSON validates raw and returns it compacted; empty stays nil. It
// refuses JSON nested deeper than MaxJSONDepth, which the snapshot that
// keeps it could not be read back from.
func compactJSON(raw json.RawMessage, what string) (json.RawMessage, error) {
	if len(bytes.TrimSpace(raw)) == 0 {
		return nil, nil
	}
	if err := CheckDepth(raw, what); err != nil {
		return nil, err
	}
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		return nil, badInput("%s is not valid JSON: %v", what, err)
	}
	return b.Bytes(), nil
}

// normTime drops the monotonic reading and the location, so that times
// compare equal after a JSON round trip.
func normTime(t time.Time) time.Time { return t.UTC().Round(0) }

// truncateError bounds a participant's error for the log; nil when the
// participant gave none.
func truncateError(e ErrorInfo) *ErrorInfo {
	if e.Code == "" && e.Message == "" {
		return nil
	}
	return &ErrorInfo{Code: truncate(e.Code, maxErrorCode), Message: truncate(e.Message, maxMessage)}
}

// truncate cuts s to at most n bytes without splitting a UTF-8 sequence.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
