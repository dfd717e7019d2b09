package api_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/accord-saga/accord/internal/api"
)

func (b *testBundle) start(t *testing.T, def string, input any, headers ...string) api.StartedSaga {
	t.Helper()
	r := b.do(t, http.MethodPost, "/v1/sagas", map[string]any{"definition": def, "input": input}, headers...)
	if r.status != http.StatusCreated && r.status != http.StatusOK {
		t.Fatalf("start: status %d: %s", r.status, r.body)
	}
	var s api.StartedSaga
	r.json(t, &s)
	return s
}

// pollOne claims one task of a queue, waiting for it.
func (b *testBundle) pollOne(t *testing.T, queue string) api.Task {
	t.Helper()
	r := b.do(t, http.MethodPost, "/v1/queues/"+queue+"/tasks:poll", map[string]any{"max": 1, "wait": "10s"})
	wantStatus(t, r, http.StatusOK)
	var l api.TaskList
	r.json(t, &l)
	if len(l.Tasks) != 1 {
		t.Fatalf("poll %s: %d tasks", queue, len(l.Tasks))
	}
	return l.Tasks[0]
}

func (b *testBundle) complete(t *testing.T, task api.Task, outcome string, output any) {
	t.Helper()
	body := map[string]any{"claim_token": task.ClaimToken, "outcome": outcome, "output": output}
	if outcome != "success" {
		body["error"] = map[string]any{"code": "boom", "message": "it failed"}
	}
	wantStatus(t, b.do(t, http.MethodPost, "/v1/tasks/"+url.PathEscape(task.ID)+"/complete", body), http.StatusNoContent)
}

func (b *testBundle) wait(t *testing.T, id string) api.Saga {
	t.Helper()
	r := b.do(t, http.MethodGet, "/v1/sagas/"+id+"/wait?timeout=20s", nil)
	wantStatus(t, r, http.StatusOK)
	var s api.Saga
	r.json(t, &s)
	if !s.Terminal {
		t.Fatalf("saga %s still %s after waiting", id, s.Status)
	}
	return s
}

// runOrder drives an order saga to completion through the task API.
func (b *testBundle) runOrder(t *testing.T, id string) {
	t.Helper()
	for _, q := range []string{"orders", "payments", "inventory", "shipping"} {
		task := b.pollOne(t, q)
		if task.SagaID != id {
			t.Fatalf("task of saga %s, want %s", task.SagaID, id)
		}
		b.complete(t, task, "success", map[string]any{"done": task.Step})
	}
}

func TestStartSaga(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.registerOrder(t)

	r := b.do(t, http.MethodPost, "/v1/sagas", map[string]any{"definition": "order", "input": map[string]any{"total": 10}})
	wantStatus(t, r, http.StatusCreated)
	var s api.StartedSaga
	r.json(t, &s)
	if s.ID == "" || !s.Created || s.Status != "running" {
		t.Fatalf("started %+v", s)
	}
	if loc := r.header.Get("Location"); loc != "/v1/sagas/"+s.ID {
		t.Fatalf("Location %q", loc)
	}

	t.Run("idempotency key", func(t *testing.T) {
		body := map[string]any{"definition": "order", "input": map[string]any{"total": 20}}
		first := b.do(t, http.MethodPost, "/v1/sagas", body, "Idempotency-Key", "order-20")
		wantStatus(t, first, http.StatusCreated)
		again := b.do(t, http.MethodPost, "/v1/sagas", body, "Idempotency-Key", "order-20")
		wantStatus(t, again, http.StatusOK)
		var a, c api.StartedSaga
		first.json(t, &a)
		again.json(t, &c)
		if a.ID != c.ID || c.Created || c.Status != "running" {
			t.Fatalf("first %+v, repeat %+v", a, c)
		}
		body["input"] = map[string]any{"total": 21}
		p := b.do(t, http.MethodPost, "/v1/sagas", body, "Idempotency-Key", "order-20").problem(t)
		if p.Status != http.StatusUnprocessableEntity || p.Type != api.TypeIdempotencyMismatch {
			t.Fatalf("problem %+v", p)
		}
	})
	t.Run("unknown definition", func(t *testing.T) {
		p := b.do(t, http.MethodPost, "/v1/sagas", map[string]any{"definition": "nope"}).problem(t)
		if p.Status != http.StatusNotFound || !namesField(p, "body.definition") {
			t.Fatalf("problem %+v", p)
		}
		p = b.do(t, http.MethodPost, "/v1/sagas", map[string]any{"definition": "order", "version": 7}).problem(t)
		if p.Status != http.StatusNotFound {
			t.Fatalf("problem %+v", p)
		}
	})
}

func TestGetSagaAndLifecycle(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.registerOrder(t)
	id := b.start(t, "order", map[string]any{"total": 10}).ID

	r := b.do(t, http.MethodGet, "/v1/sagas/"+id, nil)
	wantStatus(t, r, http.StatusOK)
	tag := r.header.Get("ETag")
	var s api.Saga
	r.json(t, &s)
	if s.ID != id || s.Status != "running" || s.Terminal || len(s.Steps) != 4 || s.Definition != "order" || s.DefinitionVersion != 1 {
		t.Fatalf("saga %+v", s)
	}
	if s.Steps[0].Status != "running" || s.Steps[0].Attempts != 1 || s.Steps[1].Status != "pending" {
		t.Fatalf("steps %+v", s.Steps)
	}
	if string(s.Input) != `{"total":10}` {
		t.Fatalf("input %s", s.Input)
	}
	wantStatus(t, b.do(t, http.MethodGet, "/v1/sagas/"+id, nil, "If-None-Match", tag), http.StatusNotModified)

	// A wait that times out answers with the saga as it is.
	r = b.do(t, http.MethodGet, "/v1/sagas/"+id+"/wait?timeout=50ms", nil)
	wantStatus(t, r, http.StatusOK)
	r.json(t, &s)
	if s.Terminal {
		t.Fatalf("saga ended early: %+v", s)
	}

	b.runOrder(t, id)
	s = b.wait(t, id)
	if s.Status != "completed" || s.EndedAt.IsZero() {
		t.Fatalf("saga %+v", s)
	}
	if got := string(s.Steps[3].Output); got != `{"done":"shipping"}` {
		t.Fatalf("shipping output %s", got)
	}
	if r := b.do(t, http.MethodGet, "/v1/sagas/"+id, nil, "If-None-Match", tag); r.status != http.StatusOK {
		t.Fatalf("the ETag did not change as the saga moved: %d", r.status)
	}

	t.Run("events", func(t *testing.T) {
		var all []api.SagaEvent
		cursor := ""
		for range 100 {
			r := b.do(t, http.MethodGet, "/v1/sagas/"+id+"/events?limit=3&cursor="+cursor, nil)
			wantStatus(t, r, http.StatusOK)
			var page api.SagaEventList
			r.json(t, &page)
			all = append(all, page.Items...)
			if page.NextCursor == "" {
				break
			}
			cursor = page.NextCursor
		}
		if len(all) < 6 || all[0].Type != "saga.started" || all[len(all)-1].Type != "saga.completed" {
			t.Fatalf("events %+v", all)
		}
		for i, ev := range all {
			if ev.Position != int64(i+1) || ev.Time.IsZero() || len(ev.Data) == 0 {
				t.Fatalf("event %d: %+v", i, ev)
			}
		}
		p := b.do(t, http.MethodGet, "/v1/sagas/nope/events", nil).problem(t)
		if p.Status != http.StatusNotFound {
			t.Fatalf("problem %+v", p)
		}
	})
	t.Run("not found", func(t *testing.T) {
		for _, path := range []string{"/v1/sagas/nope", "/v1/sagas/nope/wait?timeout=1s", "/v1/sagas/" + strings.Repeat("x", 600)} {
			p := b.do(t, http.MethodGet, path, nil).problem(t)
			if p.Status != http.StatusNotFound || p.Type != api.TypeNotFound {
				t.Fatalf("%s: problem %+v", path, p)
			}
		}
	})
	t.Run("cancel after the end", func(t *testing.T) {
		p := b.do(t, http.MethodPost, "/v1/sagas/"+id+"/cancel", map[string]any{"reason": "late"}).problem(t)
		if p.Status != http.StatusConflict || p.Type != api.TypeSagaEnded {
			t.Fatalf("problem %+v", p)
		}
	})
}

func TestListSagas(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.registerOrder(t)
	wantStatus(t, b.postDefinition(t, "application/json", fmt.Sprintf(twoStepJSON, 1)), http.StatusCreated)
	var ids []string
	for i := range 7 {
		def := "order"
		if i%2 == 1 {
			def = "pay"
		}
		ids = append(ids, b.start(t, def, map[string]any{"i": i}).ID)
	}
	cancelled := ids[0]
	wantStatus(t, b.do(t, http.MethodPost, "/v1/sagas/"+cancelled+"/cancel", map[string]any{"reason": "test"}), http.StatusOK)

	list := func(query string) ([]string, string) {
		t.Helper()
		r := b.do(t, http.MethodGet, "/v1/sagas?"+query, nil)
		wantStatus(t, r, http.StatusOK)
		var page api.SagaList
		r.json(t, &page)
		var got []string
		for _, s := range page.Items {
			got = append(got, s.ID)
		}
		return got, page.NextCursor
	}

	// Pages of 3, newest first, cover all seven once.
	var paged []string
	cursor := ""
	for pages := 0; ; pages++ {
		if pages > 5 {
			t.Fatal("pagination does not end")
		}
		got, next := list("limit=3&cursor=" + url.QueryEscape(cursor))
		paged = append(paged, got...)
		if next == "" {
			break
		}
		cursor = next
	}
	if len(paged) != 7 {
		t.Fatalf("paged %d sagas: %v", len(paged), paged)
	}
	seen := map[string]bool{}
	for _, id := range paged {
		if seen[id] {
			t.Fatalf("saga %s twice", id)
		}
		seen[id] = true
	}

	if got, _ := list("definition=pay"); len(got) != 3 {
		t.Fatalf("definition filter: %v", got)
	}
	got, _ := list("status=compensating&status=cancelled")
	if len(got) != 1 || got[0] != cancelled {
		t.Fatalf("status filter: %v, want [%s]", got, cancelled)
	}
	if got, _ := list("status=running,compensating,cancelled"); len(got) != 7 {
		t.Fatalf("comma status filter: %v", got)
	}
	future := url.QueryEscape(time.Now().Add(time.Hour).UTC().Format(time.RFC3339))
	if got, _ := list("created_after=" + future); len(got) != 0 {
		t.Fatalf("created_after in the future: %v", got)
	}
	if got, _ := list("created_before=" + future); len(got) != 7 {
		t.Fatalf("created_before in the future: %v", got)
	}
}

func TestCancelAndRetry(t *testing.T) {
	t.Parallel()
	b := setup(t)
	wantStatus(t, b.postDefinition(t, "application/yaml", `name: fragile
version: 1
steps:
  - name: reserve
    action: {queue: stock}
    compensation: {queue: stock, name: release}
    compensation_retry: {max_attempts: 1}
  - name: charge
    action: {queue: cards}
    compensation: {queue: cards}
    retry: {max_attempts: 1}
`), http.StatusCreated)
	wantStatus(t, b.postDefinition(t, "application/yaml", `name: onlypivot
version: 1
steps:
  - name: book
    kind: pivot
    action: {queue: books}
`), http.StatusCreated)

	t.Run("past the pivot", func(t *testing.T) {
		id := b.start(t, "onlypivot", nil).ID
		p := b.do(t, http.MethodPost, "/v1/sagas/"+id+"/cancel", nil).problem(t)
		if p.Status != http.StatusConflict || p.Type != api.TypePastPivot {
			t.Fatalf("problem %+v", p)
		}
	})
	t.Run("unknown saga", func(t *testing.T) {
		for _, op := range []string{"cancel", "retry"} {
			p := b.do(t, http.MethodPost, "/v1/sagas/nope/"+op, nil).problem(t)
			if p.Status != http.StatusNotFound {
				t.Fatalf("%s: problem %+v", op, p)
			}
		}
	})
	t.Run("needs an operator, then retried", func(t *testing.T) {
		id := b.start(t, "fragile", nil).ID
		p := b.do(t, http.MethodPost, "/v1/sagas/"+id+"/retry", nil).problem(t)
		if p.Status != http.StatusConflict || p.Type != api.TypeNotNeedsOperator {
			t.Fatalf("retry of a running saga: problem %+v", p)
		}
		b.complete(t, b.pollOne(t, "stock"), "success", nil)
		b.complete(t, b.pollOne(t, "cards"), "failure", nil)
		comp := b.pollOne(t, "stock")
		if comp.Phase != "compensation" || comp.Operation != "release" {
			t.Fatalf("task %+v", comp)
		}
		b.complete(t, comp, "failure", nil)
		s := b.wait(t, id)
		if s.Status != "needs_operator" {
			t.Fatalf("status %s", s.Status)
		}
		r := b.do(t, http.MethodPost, "/v1/sagas/"+id+"/retry", nil)
		wantStatus(t, r, http.StatusOK)
		r.json(t, &s)
		if s.Status != "compensating" {
			t.Fatalf("after retry: %s", s.Status)
		}
		b.complete(t, b.pollOne(t, "stock"), "success", nil)
		if s := b.wait(t, id); s.Status != "compensated" {
			t.Fatalf("status %s", s.Status)
		}
	})
	t.Run("cancel", func(t *testing.T) {
		id := b.start(t, "fragile", nil).ID
		r := b.do(t, http.MethodPost, "/v1/sagas/"+id+"/cancel", map[string]any{"reason": "customer asked"})
		wantStatus(t, r, http.StatusOK)
		var s api.Saga
		r.json(t, &s)
		if s.Status != "compensating" || s.Note != "customer asked" {
			t.Fatalf("after cancel: %+v", s)
		}
		// The in-flight action answers; its compensation runs.
		b.complete(t, b.pollOne(t, "stock"), "success", nil)
		b.complete(t, b.pollOne(t, "stock"), "success", nil)
		if s := b.wait(t, id); s.Status != "cancelled" {
			t.Fatalf("status %s", s.Status)
		}
	})
}

func TestWatchSaga(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.registerOrder(t)
	id := b.start(t, "order", nil).ID

	req, err := http.NewRequest(http.MethodGet, b.srv.URL+"/v1/sagas/"+id+"/watch", nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := b.srv.Client().Do(req.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("status %d, content type %q", res.StatusCode, res.Header.Get("Content-Type"))
	}
	events := make(chan api.SagaStatusEvent, 100)
	go func() {
		defer close(events)
		sc := bufio.NewScanner(res.Body)
		for sc.Scan() {
			if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				var ev api.SagaStatusEvent
				if err := json.Unmarshal([]byte(data), &ev); err != nil {
					t.Errorf("event %q: %v", data, err)
					return
				}
				events <- ev
			}
		}
	}()
	first := <-events
	if first.ID != id || first.Status != "running" || len(first.Steps) != 4 {
		t.Fatalf("first event %+v", first)
	}
	b.runOrder(t, id)
	var last api.SagaStatusEvent
	n := 1
	for ev := range events {
		last = ev
		n++
	}
	if !last.Terminal || last.Status != "completed" {
		t.Fatalf("last of %d events: %+v", n, last)
	}

	p := b.do(t, http.MethodGet, "/v1/sagas/nope/watch", nil).problem(t)
	if p.Status != http.StatusNotFound {
		t.Fatalf("problem %+v", p)
	}
}
