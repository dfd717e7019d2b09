package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/accord-saga/accord/sdk/client"
)

// fakeAPI serves GET /v1/sagas/{id} and /v1/sagas/{id}/events from
// canned sagas and logs, so that the checker can be tested on histories
// no correct server would produce.
type fakeSaga struct {
	status   string
	terminal bool
	steps    []client.Step
	events   []string // "type step attempt"
}

func fakeAPI(t *testing.T, sagas map[string]fakeSaga) *client.Client {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rest, _ := strings.CutPrefix(r.URL.Path, "/v1/sagas/")
		id, op, _ := strings.Cut(rest, "/")
		s, ok := sagas[id]
		if !ok {
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprint(w, `{"type":"https://accord.dev/problems/not-found","title":"not found","status":404}`)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		if op == "events" {
			page := client.EventPage{}
			for i, e := range s.events {
				var typ, step string
				var attempt int
				fmt.Sscan(e, &typ, &step, &attempt)
				data, _ := json.Marshal(map[string]any{"type": typ, "step": step, "attempt": attempt})
				page.Items = append(page.Items, client.SagaEvent{Position: int64(i + 1), Type: typ, Data: data})
			}
			_ = json.NewEncoder(w).Encode(page)
			return
		}
		_ = json.NewEncoder(w).Encode(client.Saga{ID: id, Status: s.status, Terminal: s.terminal, Steps: s.steps})
	}))
	t.Cleanup(srv.Close)
	c, err := client.New(srv.URL, client.WithRetries(0))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func applied(saga, phase string, steps ...string) []Call {
	var out []Call
	for _, s := range steps {
		out = append(out, Call{SagaID: saga, Step: s, Phase: phase, IdempotencyKey: saga + "/" + s + "/" + phase, Outcome: OutcomeApplied, Applied: true})
	}
	return out
}

func TestCheck(t *testing.T) {
	steps := []string{"s1", "s2", "s3"}
	completedLog := []string{"saga.started - 0", "step.succeeded s1 1", "step.succeeded s2 1", "step.succeeded s3 1", "saga.completed - 0"}
	compensatedLog := []string{"saga.started - 0", "step.succeeded s1 1", "step.succeeded s2 1", "step.failed s3 1",
		"compensation.succeeded s2 1", "compensation.succeeded s1 1", "saga.compensated - 0"}
	for _, tc := range []struct {
		name   string
		saga   fakeSaga
		ledger []Call
		failAt string
		want   string // a violation's substring; "" for none
		count  func(Result) int
	}{
		{name: "completed", saga: fakeSaga{status: "completed", terminal: true, events: completedLog},
			ledger: applied("a", "action", steps...)},
		{name: "compensated", failAt: "s3", saga: fakeSaga{status: "compensated", terminal: true, events: compensatedLog},
			ledger: append(applied("a", "action", "s1", "s2"), applied("a", "compensation", "s2", "s1")...)},
		{name: "lost", want: "lost", count: func(r Result) int { return r.Lost }},
		{name: "stuck", saga: fakeSaga{status: "running", events: completedLog[:2]}, ledger: applied("a", "action", "s1"),
			want: "not terminal", count: func(r Result) int { return r.Stuck }},
		{name: "effect twice", saga: fakeSaga{status: "completed", terminal: true, events: completedLog},
			ledger: append(applied("a", "action", steps...), applied("a", "action", "s2")...),
			want:   "applied twice", count: func(r Result) int { return r.Duplicated }},
		{name: "result twice", saga: fakeSaga{status: "completed", terminal: true,
			events: append([]string{"step.succeeded s1 1"}, completedLog...)},
			ledger: applied("a", "action", steps...), want: "recorded twice", count: func(r Result) int { return r.Duplicated }},
		{name: "ended twice", saga: fakeSaga{status: "completed", terminal: true, events: append(completedLog, "saga.completed - 0")},
			ledger: applied("a", "action", steps...), want: "ended twice", count: func(r Result) int { return r.Duplicated }},
		{name: "compensated in order", failAt: "s3", saga: fakeSaga{status: "compensated", terminal: true, events: compensatedLog},
			ledger: append(applied("a", "action", "s1", "s2"), applied("a", "compensation", "s1", "s2")...), want: "want their reverse"},
		{name: "compensation missing", failAt: "s3", saga: fakeSaga{status: "compensated", terminal: true, events: compensatedLog},
			ledger: append(applied("a", "action", "s1", "s2"), applied("a", "compensation", "s2")...), want: "want their reverse"},
		{name: "unknown outcome not compensated", failAt: "s3", saga: fakeSaga{status: "compensated", terminal: true,
			steps:  []client.Step{{Name: "s3", OutcomeUnknown: true}},
			events: compensatedLog}, ledger: append(applied("a", "action", "s1", "s2"), applied("a", "compensation", "s2", "s1")...),
			want: "compensated [s2 s1] in the log, want"},
		{name: "completed with a compensation", saga: fakeSaga{status: "completed", terminal: true, events: completedLog},
			ledger: append(applied("a", "action", steps...), applied("a", "compensation", "s3")...), want: "completed, but"},
		{name: "unplanned status", failAt: "s2", saga: fakeSaga{status: "completed", terminal: true, events: completedLog},
			ledger: applied("a", "action", steps...), want: "want compensated"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sagas := map[string]fakeSaga{}
			if tc.saga.status != "" {
				sagas["a"] = tc.saga
			}
			res := Check(context.Background(), fakeAPI(t, sagas), tc.ledger, []Expect{{ID: "a", Steps: steps, FailAt: tc.failAt}})
			if tc.want == "" {
				if res.Failed() {
					t.Fatalf("violations on a correct history: %v", res.Violations)
				}
				return
			}
			if !strings.Contains(strings.Join(res.Violations, "\n"), tc.want) {
				t.Fatalf("violations %q, want one containing %q", res.Violations, tc.want)
			}
			if tc.count != nil && tc.count(res) != 1 {
				t.Fatalf("count %d, want 1 (%+v)", tc.count(res), res)
			}
		})
	}
}

func TestCheckCountsRedeliveries(t *testing.T) {
	ledger := applied("a", "action", "s1")
	ledger = append(ledger,
		Call{SagaID: "a", Step: "s1", Phase: "action", IdempotencyKey: "a/s1/action", Outcome: OutcomeReplayed},
		Call{SagaID: "a", Step: "s2", Phase: "action", IdempotencyKey: "a/s2/action", Outcome: OutcomeInjected},
		Call{SagaID: "a", Step: "s2", Phase: "action", IdempotencyKey: "a/s2/action", Outcome: OutcomeDeclined},
		Call{SagaID: "a", Step: "s2", Phase: "action", IdempotencyKey: "a/s2/action", Outcome: OutcomeDeclined},
	)
	res := Check(context.Background(), fakeAPI(t, nil), ledger, nil)
	if res.Redeliveries != 2 {
		t.Fatalf("redeliveries %d, want 2 (a replayed action and a declined one again)", res.Redeliveries)
	}
}
