package saga

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzParseDefinition: no document makes ParseDefinition panic, and every
// accepted document has a canonical form that parses back to itself.
func FuzzParseDefinition(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/*.yaml")
	for _, p := range seeds {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, s := range []string{
		minimal(okStep),
		`{"name":"t","version":1,"steps":[{"name":"a","action":{"http":"https://x/y"},"kind":"pivot","input":{"a":"${input.a} and $${x}"}}]}`,
		minimal("  - name: a\n    after: [a]\n    action: {queue: q}\n"),
		"name: [\n",
		"{\"a\":" + "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
		"a: &x [*x]\n",
		"name: t\nversion: 1\nsteps:\n- {name: a, action: {queue: q}, compensation: {queue: q}, input: '${steps.a.output'}\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		def, err := ParseDefinition(data)
		if err != nil {
			return
		}
		again, err := ParseDefinition(def.Canonical())
		if err != nil {
			t.Fatalf("canonical form rejected: %v\n%s", err, def.Canonical())
		}
		if string(again.Canonical()) != string(def.Canonical()) {
			t.Fatalf("canonical form not stable:\n%s\n%s", def.Canonical(), again.Canonical())
		}
	})
}

// FuzzStep: no input makes Step panic or break its contract (an error or
// a no-op leaves the state as it was; anything else replays).
func FuzzStep(f *testing.F) {
	f.Add("order", "action", 1, "success", []byte(`{"id":1}`), "", "", "")
	f.Add("payment", "compensation", 2, "failure", []byte(nil), "card_declined", "s/payment/action/2/retry", "")
	f.Add("", "", 0, "", []byte(`{`), "", "s/saga_timeout", "cancel")
	f.Add("order", "", -1, "retryable", []byte(`null`), "x", "s/order/action/1/attempt_timeout", "operator_retry")
	b, err := os.ReadFile("testdata/order.yaml")
	if err != nil {
		f.Fatal(err)
	}
	def, err := ParseDefinition(b)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, step, phase string, attempt int, outcome string, output []byte, code, timer, kind string) {
		h := newHarness(t, def)
		if _, _, err := h.start(StartInput{SagaID: "s", Input: []byte(`{"total":1}`)}); err != nil {
			t.Fatal(err)
		}
		// Move the saga a little so that more inputs apply.
		h.step(Input{Kind: InputStepResult, Step: "order", Attempt: 1, Outcome: OutcomeSuccess, Output: []byte(`{"id":"o"}`)})
		in := Input{Kind: InputStepResult, Step: step, Phase: Phase(phase), Attempt: attempt, Outcome: Outcome(outcome),
			Output: output, Error: ErrorInfo{Code: code}, TimerID: timer}
		switch kind {
		case "cancel":
			in.Kind = InputCancel
		case "operator_retry":
			in.Kind = InputOperatorRetry
		case "":
		default:
			in.Kind = InputTimerFired
		}
		h.step(in) // the harness checks the contract
	})
}
