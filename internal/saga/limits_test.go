package saga

import (
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
)

// amplifyingDef has step a, then steps b and c whose input repeats ref n
// times.
func amplifyingDef(t *testing.T, ref string, n int) *Definition {
	t.Helper()
	items := strings.TrimSuffix(strings.Repeat(`"`+ref+`",`, n), ",")
	doc := fmt.Sprintf(`{"name":"amp","version":1,"steps":[
		{"name":"a","action":{"queue":"q"},"compensation":{"queue":"q"}},
		{"name":"b","after":["a"],"action":{"queue":"q"},"compensation":{"queue":"q"},"input":[%s]},
		{"name":"c","after":["a"],"action":{"queue":"q"},"compensation":{"queue":"q"},"input":{"x":"${input.small}"}}]}`, items)
	def, err := ParseDefinition([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	return def
}

// allocated returns the bytes f allocates.
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// bigInput is a JSON object of about size bytes.
func bigInput(size int) json.RawMessage {
	return json.RawMessage(`{"small":1,"big":"` + strings.Repeat("x", size) + `"}`)
}

func TestStartRefusesAnInputThatWouldRenderTooLarge(t *testing.T) {
	for _, ref := range []string{"${input}", "${input.big}", "big: ${input.big}"} {
		t.Run(ref, func(t *testing.T) {
			def := amplifyingDef(t, ref, 1000)
			in := bigInput(250 << 10)
			var err error
			n := allocated(func() {
				_, _, _, err = Start(def, StartInput{SagaID: "s", Input: in, Now: t0})
			})
			var le *RenderLimitError
			if !errors.As(err, &le) || !errors.Is(err, ErrBadInput) || le.Step != "b" || le.Limit != MaxRenderedBytes {
				t.Fatalf("err = %v, want a RenderLimitError for step b", err)
			}
			// Compacting the input costs about its size; rendering it a
			// thousand times would cost 250 MB.
			if limit := uint64(8 << 20); n > limit {
				t.Fatalf("Start allocated %d bytes, more than %d", n, limit)
			}
		})
	}
}

// The tests below drive Start and Step directly: the harness compares
// states byte by byte, which takes minutes on megabyte payloads.

func TestStartAcceptsAnInputThatRendersWithinTheLimit(t *testing.T) {
	def := amplifyingDef(t, "${input.big}", 4)
	in := bigInput(MaxRenderedBytes/4 - 100)
	s, _, _, err := Start(def, StartInput{SagaID: "s", Input: in, Now: t0})
	if err != nil {
		t.Fatal(err)
	}
	_, _, cmds, err := Step(def, s, Input{Now: t0, Kind: InputStepResult, Step: "a", Attempt: 1, Outcome: OutcomeSuccess})
	if err != nil {
		t.Fatal(err)
	}
	var sent bool
	for _, c := range cmds {
		if d, ok := c.(DispatchStep); ok && d.Step == "b" {
			sent = len(d.Payload) > MaxRenderedBytes-1000 && len(d.Payload) <= MaxRenderedBytes && json.Valid(d.Payload)
		}
	}
	if !sent {
		t.Fatal("step b was not sent with its full input")
	}
}

// A step's input that only passes the limit once an earlier output is
// known fails that step cleanly: not sent, the saga compensates, and
// nothing near the rendered size is allocated.
func TestStepWhoseInputWouldRenderTooLargeFails(t *testing.T) {
	def := amplifyingDef(t, "${steps.a.output}", 1000)
	s, _, _, err := Start(def, StartInput{SagaID: "s", Input: json.RawMessage(`{"small":1}`), Now: t0})
	if err != nil {
		t.Fatal(err)
	}
	out := json.RawMessage(`"` + strings.Repeat("y", 1<<20) + `"`)
	in := Input{Now: t0, Kind: InputStepResult, Step: "a", Attempt: 1, Outcome: OutcomeSuccess, Output: out}
	var evs []Event
	var cmds []Command
	n := allocated(func() { s, evs, cmds, err = Step(def, s, in) })
	if err != nil {
		t.Fatal(err)
	}
	// Compacting and keeping the output costs a few times its size;
	// rendering it a thousand times would cost a gigabyte.
	if limit := uint64(8 << 20); n > limit {
		t.Fatalf("the step allocated %d bytes, more than %d", n, limit)
	}
	var failed *Event
	for i := range evs {
		if evs[i].Type == EventStepFailed && evs[i].Step == "b" {
			failed = &evs[i]
		}
	}
	if failed == nil || !failed.Final || failed.Error == nil || failed.Error.Code != CodeInputTooLarge {
		t.Fatalf("step b did not fail with %s: %v", CodeInputTooLarge, evs)
	}
	for _, c := range cmds {
		if d, ok := c.(DispatchStep); ok && d.Step == "b" && d.Phase == PhaseAction {
			t.Fatalf("step b was sent: %d bytes", len(d.Payload))
		}
	}
	if s.SagaStatus != StatusCompensating || s.Steps[0].Status != StepCompensating || s.Steps[1].Status != StepFailed {
		t.Fatalf("saga %s, steps %s %s; want compensating, compensating, failed", s.SagaStatus, s.Steps[0].Status, s.Steps[1].Status)
	}
	tasks, err := s.Tasks(def)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range tasks {
		if d.Step == "b" {
			t.Fatalf("State.Tasks lists step b")
		}
	}
}

// The same, through the harness: the log replays, the commands make sense,
// and the saga ends compensated.
func TestStepWhoseInputWouldRenderTooLargeReplays(t *testing.T) {
	def := amplifyingDef(t, "${steps.a.output}", 1000)
	h := newHarness(t, def)
	if _, _, err := h.start(StartInput{SagaID: "s", Input: json.RawMessage(`{"small":1}`)}); err != nil {
		t.Fatal(err)
	}
	out := json.RawMessage(`"` + strings.Repeat("y", 2<<10) + `"`)
	if _, _, err := h.step(Input{Kind: InputStepResult, Step: "a", Attempt: 1, Outcome: OutcomeSuccess, Output: out}); err != nil {
		t.Fatal(err)
	}
	for _, step := range []string{"c", "a"} {
		for _, d := range mustTasks(t, h) {
			if d.Step == step {
				if _, _, err := h.step(Input{Kind: InputStepResult, Step: step, Phase: d.Phase, Attempt: d.Attempt, Outcome: OutcomeSuccess}); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	if h.state.SagaStatus != StatusCompensated {
		t.Fatalf("saga %s, want compensated", h.state.SagaStatus)
	}
}

func mustTasks(t *testing.T, h *harness) []DispatchStep {
	t.Helper()
	tasks, err := h.state.Tasks(h.def)
	if err != nil {
		t.Fatal(err)
	}
	return tasks
}
