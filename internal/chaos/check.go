package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/accord-saga/accord/sdk/client"
)

// Expect is one acknowledged saga and what its input asked for.
type Expect struct {
	ID string
	// Steps are the definition's steps, in order (they run one after the
	// other).
	Steps []string
	// FailAt is the step whose action is declined; "" for none.
	FailAt string
}

// Result is the outcome of an invariant check.
type Result struct {
	Sagas        int // acknowledged sagas checked
	Completed    int
	Compensated  int
	Lost         int // acknowledged, then unknown to the API
	Stuck        int // not terminal
	Duplicated   int // a step result recorded twice, or an effect applied twice
	Redeliveries int // calls for a key that had already been answered for good
	Violations   []string
	// StuckDetail describes one saga that is not terminal: its state and
	// log as the API shows them.
	StuckDetail string
}

// Failed reports whether any invariant was violated.
func (r *Result) Failed() bool { return len(r.Violations) > 0 }

func (r *Result) violate(format string, args ...any) {
	r.Violations = append(r.Violations, fmt.Sprintf(format, args...))
}

// answered are the outcomes of calls that reached the step's logic and
// were answered for good; a later call with the same key is a redelivery.
var answered = map[string]bool{
	OutcomeApplied: true, OutcomeReplayed: true, OutcomeNoop: true,
	OutcomeDeclined: true, OutcomeRefused: true,
}

// Check verifies the invariants over the ledger and the saga log read
// through the API:
//
//   - every acknowledged saga exists and is terminal;
//   - a completed saga had every step's action applied once and no
//     compensation;
//   - a compensated saga had exactly the steps whose action applied (or
//     whose outcome was unknown) compensated, in reverse order of
//     completion, in the ledger and in the log;
//   - no effect applied twice;
//   - no step result recorded twice in a saga's log, and one end;
//   - the final status is the one the input planned (completed without a
//     planned failure, compensated with one).
func Check(ctx context.Context, c *client.Client, ledger []Call, sagas []Expect) Result {
	bySaga := map[string][]Call{}
	keys := map[string]int{}
	res := Result{Sagas: len(sagas)}
	for _, call := range ledger {
		bySaga[call.SagaID] = append(bySaga[call.SagaID], call)
		if answered[call.Outcome] {
			if keys[call.IdempotencyKey] > 0 {
				res.Redeliveries++
			}
			keys[call.IdempotencyKey]++
		}
	}
	var mu sync.Mutex
	work := make(chan Expect)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for e := range work {
				var one Result
				checkSaga(ctx, c, bySaga[e.ID], e, &one)
				mu.Lock()
				res.Completed += one.Completed
				res.Compensated += one.Compensated
				res.Lost += one.Lost
				res.Stuck += one.Stuck
				res.Duplicated += one.Duplicated
				res.Violations = append(res.Violations, one.Violations...)
				if res.StuckDetail == "" {
					res.StuckDetail = one.StuckDetail
				}
				mu.Unlock()
			}
		}()
	}
	for _, e := range sagas {
		work <- e
	}
	close(work)
	wg.Wait()
	sort.Strings(res.Violations)
	return res
}

func checkSaga(ctx context.Context, c *client.Client, calls []Call, e Expect, res *Result) {
	s, err := c.GetSaga(ctx, e.ID)
	if client.IsNotFound(err) {
		res.Lost++
		res.violate("saga %s: acknowledged, then lost", e.ID)
		return
	}
	if err != nil {
		res.violate("saga %s: read: %v", e.ID, err)
		return
	}
	events, err := allEvents(ctx, c, e.ID)
	if err != nil {
		res.violate("saga %s: read log: %v", e.ID, err)
		return
	}

	// The ledger: effects applied, in order.
	applied := map[string]int{} // phase/step → count
	var actions, comps []string
	for _, call := range calls {
		if !call.Applied {
			continue
		}
		applied[call.Phase+"/"+call.Step]++
		if applied[call.Phase+"/"+call.Step] > 1 {
			res.Duplicated++
			res.violate("saga %s: %s of %s applied twice", e.ID, call.Phase, call.Step)
			continue
		}
		if call.Phase == "action" {
			actions = append(actions, call.Step)
		} else {
			comps = append(comps, call.Step)
		}
	}

	// The log: every attempt has at most one result; a step succeeds and
	// is compensated at most once.
	results := map[string]int{}
	var succeeded, compensated []string
	ends := 0
	flagged := map[string]bool{} // phase/step with a result recorded twice
	for _, ev := range events {
		switch ev.Type {
		case "saga.completed", "saga.compensated", "saga.cancelled":
			if ends++; ends > 1 {
				res.Duplicated++
				res.violate("saga %s: ended twice in the log (%s)", e.ID, ev.Type)
			}
		}
		var d struct {
			Step    string `json:"step"`
			Attempt int    `json:"attempt"`
		}
		_ = json.Unmarshal(ev.Data, &d)
		phase, kind, _ := strings.Cut(ev.Type, ".")
		switch kind {
		case "succeeded", "failed", "timed_out":
		default:
			continue
		}
		if phase != "step" && phase != "compensation" {
			continue
		}
		k := fmt.Sprintf("%s/%s/%d", phase, d.Step, d.Attempt)
		if results[k]++; results[k] > 1 {
			res.Duplicated++
			flagged[phase+"/"+d.Step] = true
			res.violate("saga %s: result of %s recorded twice", e.ID, k)
		}
		if kind == "succeeded" {
			if phase == "step" {
				succeeded = append(succeeded, d.Step)
			} else {
				compensated = append(compensated, d.Step)
			}
		}
	}
	for i, list := range [][]string{succeeded, compensated} {
		if dup := firstDuplicate(list); dup != "" {
			if !flagged[[]string{"step", "compensation"}[i]+"/"+dup] {
				res.Duplicated++
			}
			res.violate("saga %s: step %s succeeded (or was compensated) twice in the log: %v", e.ID, dup, list)
		}
	}

	if s.Terminal && ends == 0 && s.Status != client.StatusNeedsOperator {
		res.violate("saga %s: %s, but its log has no end", e.ID, s.Status)
	}
	if !s.Terminal {
		var b strings.Builder
		st, _ := json.MarshalIndent(s, "", "  ")
		fmt.Fprintf(&b, "%s\n", st)
		for _, ev := range events {
			fmt.Fprintf(&b, "%d %s %s %s\n", ev.Position, ev.Time.Format("15:04:05.000"), ev.Type, ev.Data)
		}
		res.StuckDetail = b.String()
		res.Stuck++
		res.violate("saga %s: not terminal (%s)", e.ID, s.Status)
		return
	}
	want := client.StatusCompleted
	if e.FailAt != "" {
		want = client.StatusCompensated
	}
	if s.Status != want {
		res.violate("saga %s: %s, want %s (fail at %q, failed step %q: %s)", e.ID, s.Status, want, e.FailAt, s.FailedStep, s.Reason)
	}
	switch s.Status {
	case client.StatusCompleted:
		res.Completed++
		if !slices.Equal(actions, e.Steps) || len(comps) > 0 {
			res.violate("saga %s: completed, but the participant applied actions %v and compensations %v", e.ID, actions, comps)
		}
		if !slices.Equal(succeeded, e.Steps) || len(compensated) > 0 {
			res.violate("saga %s: completed, but the log has successes %v and compensations %v", e.ID, succeeded, compensated)
		}
	case client.StatusCompensated:
		res.Compensated++
		// The steps to compensate: those whose action applied, and those
		// whose outcome the API calls unknown.
		need := slices.Clone(succeeded)
		for _, st := range s.Steps {
			if st.OutcomeUnknown && !slices.Contains(need, st.Name) {
				need = append(need, st.Name)
			}
		}
		if !slices.Equal(comps, reversed(actions)) {
			res.violate("saga %s: compensated, but the participant applied compensations %v for actions %v (want their reverse)", e.ID, comps, actions)
		}
		if !sameSet(compensated, need) {
			res.violate("saga %s: compensated %v in the log, want %v", e.ID, compensated, need)
		}
		if !slices.Equal(compensated, reversed(succeeded)) && sameSet(need, succeeded) {
			res.violate("saga %s: compensations %v not in reverse order of completion %v", e.ID, compensated, succeeded)
		}
		for _, a := range actions {
			if !slices.Contains(need, a) {
				res.violate("saga %s: the action of %s applied but the log neither has it succeed nor calls it unknown", e.ID, a)
			}
		}
	default:
		res.violate("saga %s: ended %s", e.ID, s.Status)
	}
}

func allEvents(ctx context.Context, c *client.Client, id string) ([]client.SagaEvent, error) {
	var out []client.SagaEvent
	opts := client.EventOptions{Limit: 1000}
	for {
		page, err := c.SagaEvents(ctx, id, opts)
		if err != nil {
			return nil, fmt.Errorf("chaos: events of %s: %w", id, err)
		}
		out = append(out, page.Items...)
		if page.NextCursor == "" {
			return out, nil
		}
		opts.Cursor = page.NextCursor
	}
}

func firstDuplicate(list []string) string {
	seen := map[string]bool{}
	for _, s := range list {
		if seen[s] {
			return s
		}
		seen[s] = true
	}
	return ""
}

func reversed(list []string) []string {
	out := slices.Clone(list)
	slices.Reverse(out)
	return out
}

func sameSet(a, b []string) bool {
	x, y := slices.Clone(a), slices.Clone(b)
	slices.Sort(x)
	slices.Sort(y)
	return slices.Equal(x, y)
}
