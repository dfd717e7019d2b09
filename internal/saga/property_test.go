package saga

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"pgregory.net/rapid"
)

// Property tests: random valid definitions (random DAGs, a pivot or not,
// retriable steps after it) driven by random inputs — results of every
// kind, duplicates and stale results, timers firing on time or late,
// cancels, operator retries — and then, as the guarantees assume, by
// participants that eventually succeed. The harness checks replay, JSON
// round trips and command consistency at every input; the checks below
// read the log the saga wrote, as an auditor would.

// genDefinition draws a valid definition: compensatable steps in a random
// DAG, optionally a pivot after all of them, and retriable steps after the
// pivot; listed in a random order, with random policies and templates.
func genDefinition(t *rapid.T) *Definition {
	nComp := rapid.IntRange(0, 5).Draw(t, "compensatable")
	hasPivot := rapid.Bool().Draw(t, "has_pivot")
	if !hasPivot && nComp == 0 {
		nComp = 1
	}
	nRetr := 0
	if hasPivot {
		nRetr = rapid.IntRange(0, 3).Draw(t, "retriable")
	}
	timeouts := []string{"0s", "10s"}
	var steps []map[string]any
	comp := []string{}
	for i := 0; i < nComp; i++ {
		name := fmt.Sprintf("c%d", i)
		after := []string{}
		for _, d := range comp {
			if rapid.Bool().Draw(t, "dep_"+name+"_"+d) {
				after = append(after, d)
			}
		}
		s := map[string]any{
			"name":         name,
			"action":       map[string]any{"queue": "q"},
			"compensation": map[string]any{"queue": "q"},
			"after":        after,
			"retry": map[string]any{
				"initial_interval": "1s", "max_interval": "4s",
				"max_attempts":         rapid.IntRange(1, 3).Draw(t, "attempts_"+name),
				"jitter":               rapid.SampledFrom([]float64{0, 0.2, 0.5}).Draw(t, "jitter_"+name),
				"non_retryable_errors": []string{"fatal"},
			},
			"compensation_retry": map[string]any{
				"initial_interval": "1s", "max_interval": "4s",
				"max_attempts": rapid.IntRange(1, 4).Draw(t, "comp_attempts_"+name),
			},
			"attempt_timeout": rapid.SampledFrom(timeouts).Draw(t, "attempt_timeout_"+name),
		}
		if rapid.IntRange(0, 3).Draw(t, "step_timeout_"+name) == 0 {
			s["step_timeout"] = "25s"
		}
		if len(after) > 0 && rapid.Bool().Draw(t, "template_"+name) {
			s["input"] = map[string]any{"from": "${steps." + after[0] + ".output.v}", "saga": "${saga.id}", "n": "${input.n}"}
		}
		steps = append(steps, s)
		comp = append(comp, name)
	}
	if hasPivot {
		steps = append(steps, map[string]any{
			"name": "p", "kind": "pivot", "after": comp,
			"action":          map[string]any{"queue": "q"},
			"retry":           map[string]any{"initial_interval": "1s", "max_attempts": rapid.IntRange(1, 3).Draw(t, "attempts_p")},
			"attempt_timeout": rapid.SampledFrom(timeouts).Draw(t, "attempt_timeout_p"),
		})
	}
	var retr []string
	for i := 0; i < nRetr; i++ {
		name := fmt.Sprintf("r%d", i)
		after := []string{"p"}
		for _, d := range retr {
			if rapid.Bool().Draw(t, "dep_"+name+"_"+d) {
				after = append(after, d)
			}
		}
		steps = append(steps, map[string]any{
			"name": name, "kind": "retriable", "after": after,
			"action":          map[string]any{"queue": "q"},
			"retry":           map[string]any{"initial_interval": "1s", "max_interval": "4s"},
			"attempt_timeout": rapid.SampledFrom(timeouts).Draw(t, "attempt_timeout_"+name),
		})
		retr = append(retr, name)
	}
	steps = rapid.Permutation(steps).Draw(t, "order")
	doc := map[string]any{"name": "prop", "version": 1, "steps": steps}
	if rapid.Bool().Draw(t, "saga_timeout") {
		doc["timeout"] = "40s"
	}
	b, err := json.Marshal(doc)
	if err != nil {
		t.Fatalf("%v", err)
	}
	def, err := ParseDefinition(b)
	if err != nil {
		t.Fatalf("generated definition rejected: %v\n%s", err, b)
	}
	return def
}

// recorded is one input of a run, kept to replay the run for determinism.
type recorded struct {
	start *StartInput
	in    Input
}

type run struct {
	t       *rapid.T
	h       *harness
	def     *Definition
	inputs  []recorded
	allTask []DispatchStep // every task ever dispatched, for stale results
}

func (r *run) step(in Input) ([]Event, error) {
	r.inputs = append(r.inputs, recorded{in: in})
	evs, cmds, err := r.h.step(in)
	for _, c := range cmds {
		if d, ok := c.(DispatchStep); ok {
			r.allTask = append(r.allTask, d)
		}
	}
	return evs, err
}

func (r *run) tick() time.Time {
	r.h.now = r.h.now.Add(time.Duration(rapid.IntRange(0, 3000).Draw(r.t, "tick_ms")) * time.Millisecond)
	return r.h.now
}

// sortedTasks and sortedTimers give map contents in a fixed order, so
// that a run depends only on rapid's draws.
func (r *run) sortedTasks() []DispatchStep {
	var out []DispatchStep
	for _, d := range r.h.tasks {
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].TaskID < out[j].TaskID })
	return out
}

func (r *run) sortedTimers(m map[string]SetTimer) []SetTimer {
	var out []SetTimer
	for _, tm := range m {
		out = append(out, tm)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].TimerID < out[j].TimerID })
	return out
}

func (r *run) answer(d DispatchStep, outcome Outcome) ([]Event, error) {
	in := Input{Kind: InputStepResult, Now: r.tick(), Step: d.Step, Phase: d.Phase, Attempt: d.Attempt, Outcome: outcome}
	switch outcome {
	case OutcomeSuccess:
		in.Output = json.RawMessage(fmt.Sprintf(`{"v":%d}`, d.Attempt))
	default:
		in.Error = ErrorInfo{Code: rapid.SampledFrom([]string{"", "busy", "fatal"}).Draw(r.t, "code")}
	}
	return r.step(in)
}

// randomInput applies one random input and checks what it did against
// what it had to do.
func (r *run) randomInput() {
	h := r.h
	switch rapid.IntRange(0, 9).Draw(r.t, "input") {
	case 0, 1, 2, 3: // a result for an outstanding task
		tasks := r.sortedTasks()
		if len(tasks) == 0 {
			return
		}
		d := rapid.SampledFrom(tasks).Draw(r.t, "task")
		outcome := rapid.SampledFrom([]Outcome{OutcomeSuccess, OutcomeSuccess, OutcomeFailure, OutcomeRetryable}).Draw(r.t, "outcome")
		evs, err := r.answer(d, outcome)
		if err != nil || len(evs) == 0 {
			r.t.Fatalf("result for outstanding task %s: %d events, error %v", d.TaskID, len(evs), err)
		}
	case 4: // a duplicate or stale result
		if len(r.allTask) == 0 {
			return
		}
		d := rapid.SampledFrom(r.allTask).Draw(r.t, "old_task")
		_, outstanding := h.tasks[d.TaskID]
		evs, err := r.answer(d, rapid.SampledFrom([]Outcome{OutcomeSuccess, OutcomeFailure, OutcomeRetryable}).Draw(r.t, "old_outcome"))
		if err != nil || (!outstanding && len(evs) != 0) {
			r.t.Fatalf("stale result for %s: %d events, error %v", d.TaskID, len(evs), err)
		}
	case 5, 6, 7: // an armed timer fires
		timers := r.sortedTimers(h.timers)
		if len(timers) == 0 {
			return
		}
		tm := rapid.SampledFrom(timers).Draw(r.t, "timer")
		r.inputs = append(r.inputs, recorded{in: Input{Kind: InputTimerFired, TimerID: tm.TimerID, Now: maxTime(h.now, tm.FireAt)}})
		if _, _, err := h.fire(tm.TimerID); err != nil {
			r.t.Fatalf("timer %s: %v", tm.TimerID, err)
		}
	case 8: // a timer fires again, late
		timers := r.sortedTimers(h.fired)
		if len(timers) == 0 {
			return
		}
		tm := rapid.SampledFrom(timers).Draw(r.t, "old_timer")
		if _, armed := h.timers[tm.TimerID]; armed {
			return
		}
		evs, err := r.step(Input{Kind: InputTimerFired, TimerID: tm.TimerID, Now: r.tick()})
		if err != nil || len(evs) != 0 {
			r.t.Fatalf("disarmed timer %s: %d events, error %v", tm.TimerID, len(evs), err)
		}
	case 9: // cancel, or an operator retry when one is needed
		if h.state.Status() == StatusNeedsOperator {
			if _, err := r.step(Input{Kind: InputOperatorRetry, Now: r.tick()}); err != nil {
				r.t.Fatalf("operator retry: %v", err)
			}
			return
		}
		r.cancel()
	}
}

func (r *run) cancel() {
	h := r.h
	status := h.state.Status()
	pivotStarted := h.state.pivotStarted(r.def)
	evs, err := r.step(Input{Kind: InputCancel, Now: r.tick(), Reason: "test"})
	switch {
	case status.Terminal():
		if !errors.Is(err, ErrTerminal) {
			r.t.Fatalf("cancel of a %s saga: %v", status, err)
		}
	case status == StatusCompensating:
		if err != nil || len(evs) != 0 {
			r.t.Fatalf("cancel while compensating: %d events, %v", len(evs), err)
		}
	case pivotStarted:
		if !errors.Is(err, ErrPastPivot) {
			r.t.Fatalf("cancel after the pivot started: %v", err)
		}
	default:
		if err != nil || len(evs) == 0 || evs[0].Type != EventSagaCancelRequested {
			r.t.Fatalf("cancel of a running saga: %v %v", evs, err)
		}
	}
}

// drain plays participants that now always succeed, firing due timers
// when nothing is outstanding, and operator retries, until the saga ends.
func (r *run) drain() {
	h := r.h
	for i := 0; !h.state.Terminal() || h.state.Status() == StatusNeedsOperator; i++ {
		if i > 10000 {
			r.t.Fatalf("saga did not end: %s", formatState(h.state))
		}
		if h.state.Status() == StatusNeedsOperator {
			if _, err := r.step(Input{Kind: InputOperatorRetry, Now: r.tick()}); err != nil {
				r.t.Fatalf("operator retry: %v", err)
			}
			continue
		}
		if tasks := r.sortedTasks(); len(tasks) > 0 {
			if _, err := r.answer(tasks[0], OutcomeSuccess); err != nil {
				r.t.Fatalf("drain: %v", err)
			}
			continue
		}
		timers := r.sortedTimers(h.timers)
		if len(timers) == 0 {
			r.t.Fatalf("saga is stuck: nothing outstanding, no timer armed\n%s", formatState(h.state))
		}
		next := timers[0]
		for _, tm := range timers[1:] {
			if tm.FireAt.Before(next.FireAt) {
				next = tm
			}
		}
		r.inputs = append(r.inputs, recorded{in: Input{Kind: InputTimerFired, TimerID: next.TimerID, Now: maxTime(h.now, next.FireAt)}})
		if _, _, err := h.fire(next.TimerID); err != nil {
			r.t.Fatalf("drain timer %s: %v", next.TimerID, err)
		}
	}
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func TestPropertySagaGuarantees(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		def := genDefinition(t)
		r := &run{t: t, def: def, h: newHarness(t, def)}
		start := StartInput{SagaID: "p", Input: json.RawMessage(`{"n":1}`), Seed: rapid.Uint64().Draw(t, "seed"), Now: t0}
		r.inputs = append(r.inputs, recorded{start: &start})
		_, cmds, err := r.h.start(start)
		if err != nil {
			t.Fatalf("start: %v", err)
		}
		for _, c := range cmds {
			if d, ok := c.(DispatchStep); ok {
				r.allTask = append(r.allTask, d)
			}
		}
		n := rapid.IntRange(0, 60).Draw(t, "random_inputs")
		for i := 0; i < n && !r.h.state.Terminal(); i++ {
			r.randomInput()
		}
		r.drain()
		checkLog(t, def, r.h.log, r.h.state)
		checkDeterminism(t, def, r.inputs, r.h.log)
	})
}

// checkLog audits a finished saga's log against the guarantees.
func checkLog(t *rapid.T, def *Definition, log []Event, final *State) {
	n := len(def.Steps)
	idx := func(e Event) int { return def.index[e.Step] }

	type end struct{ at, sub int } // event index, then order within it
	ends := make([]*end, n)
	inFlight := make([]bool, n)
	waiting := make([]bool, n)
	succeeded := make([]bool, n)
	unknown := make([]bool, n)
	aborted := -1
	pivotSucceeded := -1
	var compOrder []int
	compActive := -1

	for k, e := range log {
		abortNow := false
		switch e.Type {
		case EventStepScheduled:
			i := idx(e)
			if aborted >= 0 {
				t.Fatalf("event %d: step %s dispatched after compensation began (event %d)", k, e.Step, aborted)
			}
			for _, d := range def.deps[i] {
				if !succeeded[d] {
					t.Fatalf("event %d: step %s dispatched before its dependency %s succeeded", k, e.Step, def.Steps[d].Name)
				}
			}
			inFlight[i], waiting[i] = true, false
		case EventStepSucceeded:
			i := idx(e)
			inFlight[i], succeeded[i] = false, true
			ends[i] = &end{k, -1}
			if i == def.pivot {
				pivotSucceeded = k
			}
		case EventStepFailed, EventStepTimedOut:
			i := idx(e)
			if e.Type == EventStepTimedOut && inFlight[i] {
				unknown[i] = true
			}
			inFlight[i] = false
			if e.Final {
				waiting[i] = false
				ends[i] = &end{k, -1}
				abortNow = aborted < 0
			}
		case EventStepRetryScheduled:
			waiting[idx(e)] = true
		case EventSagaCancelRequested:
			abortNow = true
		case EventSagaTimedOut:
			abortNow = !e.Ignored
		case EventCompensationScheduled:
			i := idx(e)
			if compActive >= 0 && compActive != i {
				t.Fatalf("event %d: compensation of %s began while %s's was unfinished", k, e.Step, def.Steps[compActive].Name)
			}
			if pivotSucceeded >= 0 {
				t.Fatalf("event %d: compensation after the pivot succeeded (event %d)", k, pivotSucceeded)
			}
			compActive = i
		case EventCompensationSucceeded:
			compOrder = append(compOrder, idx(e))
			compActive = -1
		}
		if abortNow {
			aborted = k
			for i := range def.Steps {
				if waiting[i] {
					waiting[i] = false
					ends[i] = &end{k, i}
				}
			}
		}
	}

	switch final.Status() {
	case StatusCompleted:
		if aborted >= 0 || len(compOrder) != 0 {
			t.Fatalf("completed saga compensated or aborted")
		}
		for i := range def.Steps {
			if !succeeded[i] {
				t.Fatalf("completed saga with step %s not succeeded", def.Steps[i].Name)
			}
		}
		return
	case StatusCompensated, StatusCancelled:
	default:
		t.Fatalf("saga ended %s", final.Status())
	}
	if pivotSucceeded >= 0 {
		t.Fatalf("saga compensated although its pivot succeeded")
	}
	// Exactly the compensatable steps that succeeded or whose outcome is
	// unknown are compensated...
	var want []int
	for i, sd := range def.Steps {
		if sd.Compensation != nil && (succeeded[i] || unknown[i]) {
			want = append(want, i)
		}
	}
	// ...in reverse order of completion.
	sort.Slice(want, func(a, b int) bool {
		ea, eb := ends[want[a]], ends[want[b]]
		if ea.at != eb.at {
			return ea.at > eb.at
		}
		return ea.sub > eb.sub
	})
	if !slices.Equal(want, compOrder) {
		t.Fatalf("compensation order %v, want %v", names(def, compOrder), names(def, want))
	}
	// Dependencies: a step is compensated before every step it depends on.
	pos := map[int]int{}
	for p, i := range compOrder {
		pos[i] = p
	}
	for _, i := range compOrder {
		for _, j := range compOrder {
			if def.ancestors[i].has(j) && pos[j] < pos[i] {
				t.Fatalf("%s compensated before %s, which depends on it", def.Steps[j].Name, def.Steps[i].Name)
			}
		}
	}
	if (final.Status() == StatusCancelled) != (final.Reason == ReasonCancelled) {
		t.Fatalf("status %s with reason %s", final.Status(), final.Reason)
	}
}

func names(def *Definition, idx []int) []string {
	var out []string
	for _, i := range idx {
		out = append(out, def.Steps[i].Name)
	}
	return out
}

// checkDeterminism replays the same inputs on a fresh saga and expects
// byte-identical events.
func checkDeterminism(t *rapid.T, def *Definition, inputs []recorded, log []Event) {
	var again []Event
	var s *State
	for _, rec := range inputs {
		if rec.start != nil {
			st, evs, _, err := Start(def, *rec.start)
			if err != nil {
				t.Fatalf("start again: %v", err)
			}
			s, again = st, append(again, evs...)
			continue
		}
		st, evs, _, _ := Step(def, s, rec.in)
		s, again = st, append(again, evs...)
	}
	a, _ := json.Marshal(log)
	b, _ := json.Marshal(again)
	if string(a) != string(b) {
		t.Fatalf("same inputs, different events:\n%s\n%s", a, b)
	}
}

// Properties of definitions: what ParseDefinition accepts, its canonical
// form gives back.
func TestPropertyCanonicalFixedPoint(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		def := genDefinition(t)
		again, err := ParseDefinition(def.Canonical())
		if err != nil {
			t.Fatalf("canonical form rejected: %v", err)
		}
		if diff := cmp.Diff(string(def.Canonical()), string(again.Canonical())); diff != "" {
			t.Fatalf("canonical form changed:\n%s", diff)
		}
	})
}
