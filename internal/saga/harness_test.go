package saga

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/google/go-cmp/cmp"
)

// harness drives one saga through Start and Step the way the engine
// does, and checks after every call what must always hold:
//
//   - Step did not modify the State it was given;
//   - on error, or for an input that changes nothing, no events and no
//     commands came back and the State is the one given;
//   - Replay of the whole log gives the current State, and the State
//     survives a JSON round trip;
//   - every event survives Marshal / UnmarshalEvent;
//   - the commands make sense as a sequence: a timer is armed once and
//     only cancelled while armed, a task is dispatched once and only
//     cancelled while outstanding; and the timers and tasks the engine
//     would hold are exactly those State.Timers and State.Tasks report.
type harness struct {
	t      fataler
	def    *Definition
	state  *State
	log    []Event
	timers map[string]SetTimer     // armed, as the engine's timer table
	tasks  map[string]DispatchStep // outstanding, as the engine's task table
	fired  map[string]SetTimer     // every timer ever set, for late firing
	now    time.Time
}

// fataler is what the harness needs of *testing.T and *rapid.T.
type fataler interface {
	Helper()
	Fatalf(format string, args ...any)
}

var t0 = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

func newHarness(t fataler, def *Definition) *harness {
	return &harness{t: t, def: def, timers: map[string]SetTimer{}, tasks: map[string]DispatchStep{}, fired: map[string]SetTimer{}, now: t0}
}

func (h *harness) start(in StartInput) ([]Event, []Command, error) {
	h.t.Helper()
	if in.Now.IsZero() {
		in.Now = t0 // each saga starts its own clock
	}
	s, evs, cmds, err := Start(h.def, in)
	if err != nil {
		if s != nil || evs != nil || cmds != nil {
			h.t.Fatalf("Start failed (%v) but returned state, events or commands", err)
		}
		return nil, nil, err
	}
	h.now = in.Now
	h.state = s
	h.log = append([]Event(nil), evs...)
	h.timers = map[string]SetTimer{}
	h.tasks = map[string]DispatchStep{}
	h.fired = map[string]SetTimer{}
	h.record(evs, cmds)
	return evs, cmds, nil
}

func (h *harness) step(in Input) ([]Event, []Command, error) {
	h.t.Helper()
	if in.Now.IsZero() {
		in.Now = h.now
	}
	prev := h.state
	before, err := json.Marshal(prev)
	if err != nil {
		h.t.Fatalf("%v", err)
	}
	s, evs, cmds, err := Step(h.def, prev, in)
	after, _ := json.Marshal(prev)
	if string(before) != string(after) {
		h.t.Fatalf("Step modified the state it was given:\nbefore %s\nafter  %s", before, after)
	}
	if in.Now.After(h.now) {
		h.now = in.Now
	}
	if _, armed := h.timers[in.TimerID]; armed && in.Kind == InputTimerFired && err == nil && len(evs) == 0 {
		h.t.Fatalf("armed timer %s fired and changed nothing: State.Timers still lists it", in.TimerID)
	}
	if err != nil || len(evs) == 0 {
		if s != prev || len(evs) != 0 || len(cmds) != 0 {
			h.t.Fatalf("Step returned error %v with a new state or %d events, %d commands", err, len(evs), len(cmds))
		}
		return nil, nil, err
	}
	switch in.Kind {
	case InputTimerFired:
		if _, ok := h.timers[in.TimerID]; !ok {
			h.t.Fatalf("timer %s was not armed but its firing changed the saga: %v", in.TimerID, evs)
		}
		delete(h.timers, in.TimerID)
	case InputStepResult:
		phase := in.Phase
		if phase == "" {
			phase = PhaseAction
		}
		id := TaskID(h.state.SagaID, in.Step, phase, in.Attempt)
		if _, ok := h.tasks[id]; !ok {
			h.t.Fatalf("result for task %s, which is not outstanding, changed the saga: %v", id, evs)
		}
		delete(h.tasks, id)
	}
	h.state = s
	h.log = append(h.log, evs...)
	h.record(evs, cmds)
	return evs, cmds, nil
}

// fire fires an armed timer (or, for tests of late timers, any timer ever
// set) at its time or now, whichever is later.
func (h *harness) fire(id string) ([]Event, []Command, error) {
	h.t.Helper()
	at := h.now
	tm, ok := h.timers[id]
	if !ok {
		tm, ok = h.fired[id]
	}
	if ok && tm.FireAt.After(at) {
		at = tm.FireAt
	}
	return h.step(Input{Kind: InputTimerFired, TimerID: id, Now: at})
}

func (h *harness) record(evs []Event, cmds []Command) {
	h.t.Helper()
	for _, e := range evs {
		b, err := e.Marshal()
		if err != nil {
			h.t.Fatalf("%v", err)
		}
		back, err := UnmarshalEvent(e.Type, b)
		if err != nil {
			h.t.Fatalf("UnmarshalEvent(%s): %v", b, err)
		}
		if diff := cmp.Diff(e, back); diff != "" {
			h.t.Fatalf("event round trip (-sent +read):\n%s", diff)
		}
	}
	for _, c := range cmds {
		switch c := c.(type) {
		case DispatchStep:
			if _, dup := h.tasks[c.TaskID]; dup {
				h.t.Fatalf("task %s dispatched twice", c.TaskID)
			}
			h.tasks[c.TaskID] = c
		case CancelTask:
			if _, ok := h.tasks[c.TaskID]; !ok {
				h.t.Fatalf("cancel of task %s, which is not outstanding", c.TaskID)
			}
			delete(h.tasks, c.TaskID)
		case SetTimer:
			if _, dup := h.timers[c.TimerID]; dup {
				h.t.Fatalf("timer %s armed twice", c.TimerID)
			}
			h.timers[c.TimerID] = c
			h.fired[c.TimerID] = c
		case CancelTimer:
			if _, ok := h.timers[c.TimerID]; !ok {
				h.t.Fatalf("cancel of timer %s, which is not armed", c.TimerID)
			}
			delete(h.timers, c.TimerID)
		case Finished:
			if c.Status != h.state.Status() || !c.Status.Terminal() {
				h.t.Fatalf("finished %s, state is %s", c.Status, h.state.Status())
			}
		default:
			h.t.Fatalf("unknown command %T", c)
		}
	}
	h.checkState()
}

func (h *harness) checkState() {
	h.t.Helper()
	replayed, err := Replay(h.def, h.log)
	if err != nil {
		h.t.Fatalf("Replay: %v", err)
	}
	if diff := cmp.Diff(h.state, replayed); diff != "" {
		h.t.Fatalf("Replay differs from Step's state (-step +replay):\n%s", diff)
	}
	b, err := json.Marshal(h.state)
	if err != nil {
		h.t.Fatalf("%v", err)
	}
	var back State
	if err := json.Unmarshal(b, &back); err != nil {
		h.t.Fatalf("%v", err)
	}
	if diff := cmp.Diff(h.state, &back); diff != "" {
		h.t.Fatalf("State JSON round trip (-before +after):\n%s", diff)
	}
	var armed []string
	for id, tm := range h.timers {
		armed = append(armed, id+"@"+tm.FireAt.String())
	}
	var declared []string
	for _, tm := range h.state.Timers() {
		declared = append(declared, tm.TimerID+"@"+tm.FireAt.String())
	}
	sort.Strings(armed)
	sort.Strings(declared)
	if diff := cmp.Diff(armed, declared); diff != "" {
		h.t.Fatalf("armed timers (-commands +State.Timers):\n%s", diff)
	}
	tasks, err := h.state.Tasks(h.def)
	if err != nil {
		h.t.Fatalf("%v", err)
	}
	want := map[string]DispatchStep{}
	for _, d := range tasks {
		want[d.TaskID] = d
	}
	if diff := cmp.Diff(h.tasks, want); diff != "" {
		h.t.Fatalf("outstanding tasks (-commands +State.Tasks):\n%s", diff)
	}
}

// Formatting for scripts: times as offsets from t0, one line per event or
// command.

func offset(t time.Time) string { return t.Sub(t0).String() }

func formatEvent(e Event) string {
	var b strings.Builder
	b.WriteString(e.Type)
	if e.Step != "" {
		fmt.Fprintf(&b, " %s", e.Step)
		if e.Attempt > 0 {
			fmt.Fprintf(&b, "#%d", e.Attempt)
		}
	}
	if e.Type == EventSagaStarted {
		fmt.Fprintf(&b, " %s v%d seed=%d", e.Definition, e.Version, e.Seed)
	}
	if e.Outcome != "" {
		fmt.Fprintf(&b, " outcome=%s", e.Outcome)
	}
	if e.Timeout != "" {
		fmt.Fprintf(&b, " timeout=%s", e.Timeout)
	}
	if e.Error != nil {
		fmt.Fprintf(&b, " error=%s", e.Error.Code)
		if e.Error.Message != "" {
			fmt.Fprintf(&b, ":%q", e.Error.Message)
		}
	}
	if e.Final {
		b.WriteString(" final")
	}
	if e.Ignored {
		b.WriteString(" ignored")
	}
	if !e.RetryAt.IsZero() {
		fmt.Fprintf(&b, " at=%s delay=%s", offset(e.RetryAt), e.Delay)
	}
	if !e.Deadline.IsZero() {
		fmt.Fprintf(&b, " deadline=%s", offset(e.Deadline))
	}
	if !e.StepDeadline.IsZero() {
		fmt.Fprintf(&b, " step_deadline=%s", offset(e.StepDeadline))
	}
	if e.Reason != "" {
		fmt.Fprintf(&b, " reason=%q", e.Reason)
	}
	if e.Input != nil {
		fmt.Fprintf(&b, " input=%s", e.Input)
	}
	if e.Output != nil {
		fmt.Fprintf(&b, " output=%s", e.Output)
	}
	return b.String()
}

func formatCommand(c Command) string {
	switch c := c.(type) {
	case DispatchStep:
		where := "queue=" + c.Target.Queue
		if c.Target.HTTP != "" {
			where = "http=" + c.Target.HTTP
		}
		s := fmt.Sprintf("dispatch %s %s op=%s key=%s", c.TaskID, where, c.Target.Name, c.IdempotencyKey)
		if !c.Deadline.IsZero() {
			s += " deadline=" + offset(c.Deadline)
		}
		return s + " payload=" + string(c.Payload)
	case SetTimer:
		return fmt.Sprintf("set-timer %s at=%s", c.TimerID, offset(c.FireAt))
	case CancelTimer:
		return "cancel-timer " + c.TimerID
	case CancelTask:
		return "cancel-task " + c.TaskID
	case Finished:
		return "finished " + string(c.Status)
	}
	return fmt.Sprintf("unknown command %T", c)
}

func formatStep(evs []Event, cmds []Command, err error) string {
	if err != nil {
		return "error: " + err.Error() + "\n"
	}
	if len(evs) == 0 {
		return "no change\n"
	}
	var b strings.Builder
	b.WriteString("events:\n")
	for _, e := range evs {
		b.WriteString("  " + formatEvent(e) + "\n")
	}
	if len(cmds) > 0 {
		b.WriteString("commands:\n")
		for _, c := range cmds {
			b.WriteString("  " + formatCommand(c) + "\n")
		}
	}
	return b.String()
}

func formatState(s *State) string {
	var b strings.Builder
	fmt.Fprintf(&b, "saga %s: %s", s.SagaID, s.Status())
	if s.Reason != "" {
		fmt.Fprintf(&b, " reason=%s", s.Reason)
	}
	if s.FailedStep != "" {
		fmt.Fprintf(&b, " failed_step=%s", s.FailedStep)
	}
	if s.TimedOut {
		b.WriteString(" timed_out")
	}
	if s.Note != "" {
		fmt.Fprintf(&b, " note=%q", s.Note)
	}
	b.WriteString("\n")
	for _, v := range s.View().Steps {
		fmt.Fprintf(&b, "  %s: %s attempts=%d", v.Name, v.Status, v.Attempts)
		if v.OutcomeUnknown {
			b.WriteString(" outcome_unknown")
		}
		if v.LastError != nil {
			fmt.Fprintf(&b, " last_error=%s", v.LastError.Code)
		}
		if c := v.Compensation; c != nil {
			fmt.Fprintf(&b, " compensation_attempts=%d", c.Attempts)
		}
		b.WriteString("\n")
	}
	return b.String()
}
