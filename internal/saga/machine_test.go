package saga

import (
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"pgregory.net/rapid"
)

func orderDef(t *testing.T) *Definition {
	t.Helper()
	b, err := os.ReadFile("testdata/order.yaml")
	if err != nil {
		t.Fatal(err)
	}
	def, err := ParseDefinition(b)
	if err != nil {
		t.Fatal(err)
	}
	return def
}

func TestStartRejectsBadInput(t *testing.T) {
	def := orderDef(t)
	tests := []struct {
		name string
		in   StartInput
		want error
	}{
		{"no id", StartInput{Now: t0}, ErrBadInput},
		{"long id", StartInput{SagaID: strings.Repeat("x", MaxSagaIDLength+1), Now: t0}, ErrBadInput},
		{"control character", StartInput{SagaID: "a\nb", Now: t0}, ErrBadInput},
		{"bad utf-8", StartInput{SagaID: "a\xffb", Now: t0}, ErrBadInput},
		{"no time", StartInput{SagaID: "s"}, ErrBadInput},
		{"bad json", StartInput{SagaID: "s", Now: t0, Input: json.RawMessage(`{"a":`)}, ErrBadInput},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, evs, cmds, err := Start(def, tt.in)
			if !errors.Is(err, tt.want) || s != nil || evs != nil || cmds != nil {
				t.Fatalf("got %v, %v, %v, %v", s, evs, cmds, err)
			}
		})
	}
	if _, _, _, err := Start(&Definition{Name: "x", Version: 1}, StartInput{SagaID: "s", Now: t0}); !errors.Is(err, ErrDefinitionMismatch) {
		t.Fatalf("unparsed definition: %v", err)
	}
	if _, _, _, err := Start(nil, StartInput{SagaID: "s", Now: t0}); !errors.Is(err, ErrDefinitionMismatch) {
		t.Fatalf("nil definition: %v", err)
	}
}

func TestStepRejectsBadInputAndOtherDefinitions(t *testing.T) {
	def := orderDef(t)
	s, _, _, err := Start(def, StartInput{SagaID: "s/with/slashes", Now: t0, Input: json.RawMessage(` { "total" : 1 } `)})
	if err != nil {
		t.Fatal(err)
	}
	if string(s.Input) != `{"total":1}` {
		t.Errorf("input not compacted: %s", s.Input)
	}
	other, err := ParseDefinition([]byte(strings.Replace(mustRead(t, "testdata/order.yaml"), "timeout: 10m", "timeout: 11m", 1)))
	if err != nil {
		t.Fatal(err)
	}
	ok := Input{Kind: InputStepResult, Now: t0, Step: "order", Attempt: 1, Outcome: OutcomeSuccess}
	tests := []struct {
		name string
		def  *Definition
		s    *State
		in   Input
		want []error
	}{
		{"other content, same name and version", other, s, ok, []error{ErrDefinitionMismatch}},
		{"nil state", def, nil, ok, []error{ErrBadInput}},
		{"no time", def, s, Input{Kind: InputCancel}, []error{ErrBadInput}},
		{"unknown kind", def, s, Input{Kind: "poke", Now: t0}, []error{ErrBadInput}},
		{"unknown step", def, s, Input{Kind: InputStepResult, Now: t0, Step: "nope", Attempt: 1, Outcome: OutcomeSuccess}, []error{ErrBadInput, ErrUnknownStep}},
		{"timer of another saga", def, s, Input{Kind: InputTimerFired, Now: t0, TimerID: "other/saga_timeout"}, []error{ErrBadInput}},
		{"timer of unknown step", def, s, Input{Kind: InputTimerFired, Now: t0, TimerID: "s/with/slashes/nope/step_timeout"}, []error{ErrBadInput, ErrUnknownStep}},
		{"operator retry of a running saga", def, s, Input{Kind: InputOperatorRetry, Now: t0}, []error{ErrNotNeedsOperator}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, evs, cmds, err := Step(tt.def, tt.s, tt.in)
			for _, w := range tt.want {
				if !errors.Is(err, w) {
					t.Errorf("error %v is not %v", err, w)
				}
			}
			if got != tt.s || evs != nil || cmds != nil {
				t.Errorf("state, events or commands returned with the error")
			}
		})
	}
	// The timer id parser reads past a saga id containing slashes.
	_, evs, _, err := Step(def, s, Input{Kind: InputTimerFired, Now: t0.Add(10 * time.Minute), TimerID: "s/with/slashes/saga_timeout"})
	if err != nil || len(evs) != 1 || evs[0].Type != EventSagaTimedOut {
		t.Fatalf("saga timeout: %v %v", evs, err)
	}
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestErrorTruncation(t *testing.T) {
	def := orderDef(t)
	s, _, _, err := Start(def, StartInput{SagaID: "s", Now: t0})
	if err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("é", 1000) // 2000 bytes
	_, evs, _, err := Step(def, s, Input{Kind: InputStepResult, Now: t0, Step: "order", Attempt: 1, Outcome: OutcomeRetryable,
		Error: ErrorInfo{Code: strings.Repeat("c", 300), Message: long}})
	if err != nil {
		t.Fatal(err)
	}
	e := evs[0].Error
	if len(e.Code) != maxErrorCode || len(e.Message) != maxMessage || !strings.HasPrefix(long, e.Message) {
		t.Fatalf("code %d bytes, message %d bytes", len(e.Code), len(e.Message))
	}
	if truncate("aé", 2) != "a" {
		t.Fatalf("truncate split a rune: %q", truncate("aé", 2))
	}
}

func TestReplayRejectsCorruptLogs(t *testing.T) {
	def := orderDef(t)
	s, started, _, err := Start(def, StartInput{SagaID: "s", Now: t0})
	if err != nil {
		t.Fatal(err)
	}
	_, evs, _, err := Step(def, s, Input{Kind: InputStepResult, Now: t0.Add(time.Second), Step: "order", Attempt: 1, Outcome: OutcomeSuccess})
	if err != nil {
		t.Fatal(err)
	}
	log := append(append([]Event(nil), started...), evs...)
	if _, err := Replay(def, log); err != nil {
		t.Fatal(err)
	}
	mutate := func(f func([]Event) []Event) []Event {
		c := append([]Event(nil), log...)
		return f(c)
	}
	other, err := ParseDefinition([]byte(strings.Replace(mustRead(t, "testdata/order.yaml"), "timeout: 10m", "timeout: 11m", 1)))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		def  *Definition
		log  []Event
		want error
	}{
		{"empty", def, nil, ErrCorruptLog},
		{"no start", def, log[1:], ErrCorruptLog},
		{"started twice", def, append([]Event{log[0]}, log...), ErrCorruptLog},
		{"other definition content", other, log, ErrDefinitionMismatch},
		{"other version", def, mutate(func(l []Event) []Event { l[1].Version = 2; return l }), ErrDefinitionMismatch},
		{"other saga", def, mutate(func(l []Event) []Event { l[1].SagaID = "t"; return l }), ErrCorruptLog},
		{"unknown step", def, mutate(func(l []Event) []Event { l[1].Step = "nope"; return l }), ErrCorruptLog},
		{"unknown type", def, mutate(func(l []Event) []Event { l[1].Type = "step.exploded"; return l }), ErrCorruptLog},
		{"result twice", def, mutate(func(l []Event) []Event { return append(l[:3], l[2]) }), ErrCorruptLog},
		{"wrong attempt", def, mutate(func(l []Event) []Event { l[2].Attempt = 2; return l }), ErrCorruptLog},
		{"completed early", def, mutate(func(l []Event) []Event {
			return append(l[:3], Event{Type: EventSagaCompleted, SagaID: "s", Definition: "order", Version: 1})
		}), ErrCorruptLog},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Replay(tt.def, tt.log); !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
		})
	}
}

func TestUnmarshalEvent(t *testing.T) {
	e := Event{Type: EventStepFailed, SagaID: "s", Definition: "d", Version: 3, Time: t0, Step: "a", Attempt: 2,
		Outcome: OutcomeRetryable, Error: &ErrorInfo{Code: "busy"}}
	b, err := e.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	want := `{"type":"step.failed","saga_id":"s","definition":"d","version":3,"time":"2025-01-01T00:00:00Z","step":"a","attempt":2,"outcome":"retryable","error":{"code":"busy"}}`
	if string(b) != want {
		t.Fatalf("marshal:\n got %s\nwant %s", b, want)
	}
	back, err := UnmarshalEvent(EventStepFailed, b)
	if err != nil || !cmp.Equal(e, back) {
		t.Fatalf("round trip: %v %v", back, err)
	}
	if _, err := UnmarshalEvent(EventStepSucceeded, b); !errors.Is(err, ErrCorruptLog) {
		t.Fatalf("type mismatch: %v", err)
	}
	if _, err := UnmarshalEvent("step.exploded", []byte(`{}`)); !errors.Is(err, ErrCorruptLog) {
		t.Fatalf("unknown type: %v", err)
	}
	if _, err := UnmarshalEvent(EventStepFailed, []byte(`{`)); !errors.Is(err, ErrCorruptLog) {
		t.Fatalf("bad json: %v", err)
	}
	// The type may be left out of the bytes; unknown fields are ignored.
	e2, err := UnmarshalEvent(EventSagaCompleted, []byte(`{"saga_id":"s","later_field":1}`))
	if err != nil || e2.Type != EventSagaCompleted || e2.SagaID != "s" {
		t.Fatalf("got %+v %v", e2, err)
	}
}

func TestViewJSON(t *testing.T) {
	def := orderDef(t)
	s, _, _, err := Start(def, StartInput{SagaID: "s", Now: t0, Input: json.RawMessage(`{"total":1}`)})
	if err != nil {
		t.Fatal(err)
	}
	s, _, _, err = Step(def, s, Input{Kind: InputStepResult, Now: t0.Add(time.Second), Step: "order", Attempt: 1, Outcome: OutcomeSuccess, Output: json.RawMessage(`{"id":"o"}`)})
	if err != nil {
		t.Fatal(err)
	}
	s, _, _, err = Step(def, s, Input{Kind: InputStepResult, Now: t0.Add(2 * time.Second), Step: "payment", Attempt: 1, Outcome: OutcomeFailure, Error: ErrorInfo{Code: "card_declined"}})
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(s.View())
	if err != nil {
		t.Fatal(err)
	}
	want := `{"saga_id":"s","definition":"order","version":1,"status":"compensating","reason":"step_failed","failed_step":"payment",` +
		`"input":{"total":1},"started_at":"2025-01-01T00:00:00Z","steps":[` +
		`{"name":"order","kind":"compensatable","status":"compensating","attempts":1,"started_at":"2025-01-01T00:00:00Z","ended_at":"2025-01-01T00:00:01Z","output":{"id":"o"},"compensation":{"attempts":1,"started_at":"2025-01-01T00:00:02Z"}},` +
		`{"name":"payment","kind":"compensatable","status":"failed","attempts":1,"last_error":{"code":"card_declined"},"started_at":"2025-01-01T00:00:01Z","ended_at":"2025-01-01T00:00:02Z"},` +
		`{"name":"inventory","kind":"compensatable","status":"skipped","attempts":0},` +
		`{"name":"shipping","kind":"pivot","status":"skipped","attempts":0}]}`
	if string(b) != want {
		t.Fatalf("view:\n got %s\nwant %s", b, want)
	}
	if s.Status() != StatusCompensating || s.Terminal() {
		t.Fatalf("status %s terminal %v", s.Status(), s.Terminal())
	}
}

func TestTimerIDs(t *testing.T) {
	for _, ref := range []timerRef{
		{kind: TimerSagaTimeout},
		{kind: TimerStepTimeout, step: "pay", phase: PhaseAction},
		{kind: TimerRetry, step: "pay", phase: PhaseCompensation, attempt: 12},
		{kind: TimerAttemptTimeout, step: "pay", phase: PhaseAction, attempt: 1},
	} {
		id := TimerID("a/b", ref.kind, ref.step, ref.phase, ref.attempt)
		got, err := parseTimerID("a/b", id)
		if err != nil || got != ref {
			t.Errorf("%s: parsed %+v, %v", id, got, err)
		}
	}
	for _, bad := range []string{"a/b", "a/b/", "a/b/x", "a/b/pay/action/0/retry", "a/b/pay/undo/1/retry", "a/b/pay/action/1/nap", "a/b/pay/action/1/retry/x", "c/saga_timeout"} {
		if _, err := parseTimerID("a/b", bad); !errors.Is(err, ErrBadInput) {
			t.Errorf("%s: accepted", bad)
		}
	}
}

// Delays stay within the policy's bounds, follow the exponential curve
// within the jitter, and depend only on their inputs.
func TestBackoffBounds(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		p := RetryPolicy{
			InitialInterval: Duration(rapid.Int64Range(int64(time.Millisecond), int64(time.Minute)).Draw(t, "initial")),
			Multiplier:      rapid.Float64Range(1, maxMultiplier).Draw(t, "multiplier"),
			Jitter:          rapid.Float64Range(0, 1).Draw(t, "jitter"),
		}
		p.MaxInterval = p.InitialInterval + Duration(rapid.Int64Range(0, int64(time.Hour)).Draw(t, "extra"))
		n := rapid.IntRange(1, 20000).Draw(t, "n")
		rng := rapid.Uint64().Draw(t, "rng")
		d := backoff(p, n, rng)
		if d < time.Millisecond || d > time.Duration(p.MaxInterval) {
			t.Fatalf("delay %s outside [1ms, %s]", d, p.MaxInterval)
		}
		if d != backoff(p, n, rng) {
			t.Fatal("not deterministic")
		}
		if n == 1 {
			base := float64(p.InitialInterval)
			lo, hi := base*(1-p.Jitter)-float64(time.Millisecond), base*(1+p.Jitter)+float64(time.Millisecond)
			if float64(d) < lo || float64(d) > min(hi, float64(p.MaxInterval)) {
				t.Fatalf("first delay %s outside %s ± %.0f%%", d, p.InitialInterval, p.Jitter*100)
			}
		}
	})
}
