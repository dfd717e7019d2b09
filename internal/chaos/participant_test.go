package chaos

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func newTestParticipant(t *testing.T, cfg ParticipantConfig) (*Participant, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ledger.db")
	p, err := NewParticipant(path, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p, path
}

// push sends one delivery as Accord does and returns the status.
func push(t *testing.T, p *Participant, saga, step, phase string, attempt int, failAt string) int {
	t.Helper()
	input := fmt.Sprintf(`{"fail_at":%q}`, failAt)
	if phase == "compensation" {
		input = fmt.Sprintf(`{"input":{"fail_at":%q},"output":null}`, failAt)
	}
	body := fmt.Sprintf(`{"saga_id":%q,"step":%q,"phase":%q,"attempt":%d,"input":%s}`, saga, step, phase, attempt, input)
	req, err := http.NewRequest(http.MethodPost, p.URL()+"/"+step, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	key := saga + "/" + step + "/" + phase
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", key)
	req.Header.Set("Accord-Saga-Id", saga)
	req.Header.Set("Accord-Step", step)
	req.Header.Set("Accord-Phase", phase)
	req.Header.Set("Accord-Attempt", fmt.Sprint(attempt))
	req.Header.Set("Accord-Epoch", "7")
	req.Header.Set("Accord-Task-Id", fmt.Sprintf("%s/%d", key, attempt))
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	return res.StatusCode
}

func outcomes(t *testing.T, p *Participant) string {
	t.Helper()
	calls, err := p.Ledger(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, c := range calls {
		out = append(out, fmt.Sprintf("%s/%s/%s#%d:%s", c.SagaID, c.Step, c.Phase, c.Attempt, c.Outcome))
		if c.Epoch != 7 || c.IdempotencyKey != c.SagaID+"/"+c.Step+"/"+c.Phase || c.Applied != (c.Outcome == OutcomeApplied) {
			t.Errorf("ledger row %+v", c)
		}
	}
	return strings.Join(out, " ")
}

func TestParticipantEffectsOnce(t *testing.T) {
	p, path := newTestParticipant(t, ParticipantConfig{})
	for _, d := range []struct {
		saga, step, phase string
		attempt           int
		failAt            string
		want              int
	}{
		{"a", "s1", "action", 1, "", 200},
		{"a", "s1", "action", 1, "", 200}, // redelivered: replayed
		{"a", "s2", "action", 1, "s2", 422},
		{"a", "s1", "compensation", 1, "s2", 200},
		{"a", "s1", "compensation", 1, "s2", 200}, // redelivered: nothing to do
		{"a", "s1", "action", 2, "", 409},         // after its compensation: refused
		{"b", "s1", "compensation", 1, "", 200},   // for an action that never ran
		{"b", "s1", "action", 1, "", 409},         // arriving after it
	} {
		if got := push(t, p, d.saga, d.step, d.phase, d.attempt, d.failAt); got != d.want {
			t.Fatalf("%+v: status %d, want %d", d, got, d.want)
		}
	}
	want := "a/s1/action#1:applied a/s1/action#1:replayed a/s2/action#1:declined a/s1/compensation#1:applied " +
		"a/s1/compensation#1:noop a/s1/action#2:refused b/s1/compensation#1:noop b/s1/action#1:refused"
	if got := outcomes(t, p); got != want {
		t.Fatalf("ledger:\n%s\nwant:\n%s", got, want)
	}
	if p.Calls() != 8 {
		t.Fatalf("calls %d, want 8", p.Calls())
	}
	// The ledger is durable: a new participant on the same file reads it,
	// and the guard's records still hold.
	p.Close()
	q, err := NewParticipant(path, ParticipantConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if got := push(t, q, "a", "s1", "action", 3, ""); got != 409 {
		t.Fatalf("action after compensation, after reopening: %d, want 409", got)
	}
	if got := outcomes(t, q); got != want+" a/s1/action#3:refused" {
		t.Fatalf("ledger after reopening: %s", got)
	}
}

func TestParticipantFaults(t *testing.T) {
	p, _ := newTestParticipant(t, ParticipantConfig{ErrorRate: 1})
	if got := push(t, p, "a", "s1", "action", 1, ""); got != http.StatusServiceUnavailable {
		t.Fatalf("with error rate 1: %d, want 503", got)
	}
	p.DownUntil(time.Now().Add(time.Hour))
	if got := push(t, p, "a", "s1", "action", 2, ""); got != http.StatusServiceUnavailable {
		t.Fatalf("while down: %d, want 503", got)
	}
	if got := outcomes(t, p); got != "a/s1/action#1:injected_error a/s1/action#2:down" {
		t.Fatalf("ledger: %s", got)
	}
	n, err := p.CountOutcome(context.Background(), OutcomeDown, time.Time{})
	if err != nil || n != 1 {
		t.Fatalf("down calls %d, %v; want 1", n, err)
	}

	q, _ := newTestParticipant(t, ParticipantConfig{Latency: 100 * time.Millisecond})
	q.SetDown(true)
	if got := push(t, q, "a", "s1", "action", 1, ""); got != http.StatusServiceUnavailable {
		t.Fatalf("set down: %d, want 503", got)
	}
	q.SetDown(false)
	start := time.Now()
	if got := push(t, q, "a", "s1", "action", 2, ""); got != 200 {
		t.Fatalf("back up: %d, want 200", got)
	}
	if took := time.Since(start); took < 100*time.Millisecond {
		t.Fatalf("answered in %v with 100ms of latency", took)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := q.WaitCalls(ctx, 2); err == nil {
		t.Fatal("WaitCalls returned with no third call")
	}
	if err := q.WaitCalls(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
}
