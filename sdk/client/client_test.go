package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/accord-saga/accord/sdk/client"
	"github.com/accord-saga/accord/sdk/sdktest"
)

const orderDef = `name: order
version: 1
steps:
  - name: reserve
    action: {queue: stock}
    compensation: {queue: stock, name: release}
  - name: ship
    kind: pivot
    action: {queue: shipping}
`

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestDefinitions(t *testing.T) {
	t.Parallel()
	s := sdktest.NewServer(t)
	c, ctx := s.Client, ctxT(t)

	def, created, err := c.RegisterDefinition(ctx, []byte(orderDef), client.ContentTypeYAML)
	if err != nil || !created || def.Name != "order" || def.Version != 1 || def.ETag != `"`+def.Hash+`"` {
		t.Fatalf("register: %+v, %v, %v", def, created, err)
	}
	if _, created, err := c.RegisterDefinition(ctx, []byte(orderDef), ""); err != nil || created {
		t.Fatalf("register again: created %v, err %v", created, err)
	}
	_, _, err = c.RegisterDefinition(ctx, []byte(strings.Replace(orderDef, "release", "unreserve", 1)), client.ContentTypeYAML)
	if !client.IsConflict(err) {
		t.Fatalf("conflicting content: %v", err)
	}

	v2 := strings.Replace(orderDef, "version: 1", "version: 2", 1)
	if _, _, err := c.RegisterDefinitionIfMatch(ctx, []byte(v2), client.ContentTypeYAML, def.ETag); err != nil {
		t.Fatalf("register v2 if match: %v", err)
	}
	v3 := strings.Replace(orderDef, "version: 1", "version: 3", 1)
	_, _, err = c.RegisterDefinitionIfMatch(ctx, []byte(v3), client.ContentTypeYAML, def.ETag)
	if !client.IsPreconditionFailed(err) {
		t.Fatalf("stale If-Match: %v", err)
	}

	latest, err := c.GetDefinition(ctx, "order", 0)
	if err != nil || latest.Version != 2 || latest.ETag == "" || !json.Valid(latest.Definition) {
		t.Fatalf("latest: %+v, %v", latest, err)
	}
	if v1, err := c.GetDefinition(ctx, "order", 1); err != nil || v1.Hash != def.Hash {
		t.Fatalf("v1: %+v, %v", v1, err)
	}
	if _, err := c.GetDefinition(ctx, "nope", 0); !client.IsNotFound(err) {
		t.Fatalf("unknown definition: %v", err)
	}

	var versions []int
	for page, err := range c.DefinitionPages(ctx, client.DefinitionListOptions{Name: "order", Limit: 1}) {
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range page.Items {
			versions = append(versions, d.Version)
		}
	}
	if len(versions) != 2 || versions[0] != 1 || versions[1] != 2 {
		t.Fatalf("versions %v", versions)
	}

	_, _, err = c.RegisterDefinition(ctx, []byte("name: bad\nversion: 1\nsteps: [{name: a}]\n"), client.ContentTypeYAML)
	var e *client.Error
	if !client.IsInvalid(err) || !errors.As(err, &e) || e.Type != client.ProblemValidation || len(e.Errors) == 0 || e.Errors[0].Location == "" {
		t.Fatalf("invalid definition: %#v", err)
	}
}

// TestDefinitionDisableDelete: a version is disabled, enabled, disabled
// and deleted through the client; a start that names a disabled version
// and the deletion of a version a running saga uses say why they fail.
func TestDefinitionDisableDelete(t *testing.T) {
	t.Parallel()
	s := sdktest.NewServer(t)
	c, ctx := s.Client, ctxT(t)
	for _, doc := range []string{orderDef, strings.Replace(orderDef, "version: 1", "version: 2", 1)} {
		if _, _, err := c.RegisterDefinition(ctx, []byte(doc), client.ContentTypeYAML); err != nil {
			t.Fatal(err)
		}
	}
	started, err := c.StartSaga(ctx, client.StartRequest{Definition: "order", Version: 2})
	if err != nil {
		t.Fatal(err)
	}
	err = c.DeleteDefinition(ctx, "order", 2)
	if n, ok := client.DefinitionInUseCount(err); !client.IsDefinitionInUse(err) || !client.IsConflict(err) || !ok || n != 1 {
		t.Fatalf("delete of a version in use: %v (count %d, %v)", err, n, ok)
	}
	if d, err := c.DisableDefinition(ctx, "order", 2); err != nil || d.Enabled || d.Version != 2 {
		t.Fatalf("disable: %+v, %v", d, err)
	}
	if latest, err := c.GetDefinition(ctx, "order", 0); err != nil || latest.Version != 1 || !latest.Enabled {
		t.Fatalf("latest with version 2 disabled: %+v, %v", latest, err)
	}
	if _, err := c.StartSaga(ctx, client.StartRequest{Definition: "order", Version: 2}); !client.IsDefinitionDisabled(err) {
		t.Fatalf("start of the disabled version: %v", err)
	}
	if d, err := c.EnableDefinition(ctx, "order", 2); err != nil || !d.Enabled {
		t.Fatalf("enable: %+v, %v", d, err)
	}
	if _, err := c.CancelSaga(ctx, started.ID, "done with it"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.DisableDefinition(ctx, "order", 2); err != nil {
		t.Fatal(err)
	}
	// Nobody serves the saga's queues: cancelled, it has not ended, and
	// the version stays in use.
	if err := c.DeleteDefinition(ctx, "order", 2); !client.IsDefinitionInUse(err) {
		t.Fatalf("delete while the saga compensates: %v", err)
	}
	if err := c.DeleteDefinition(ctx, "order", 3); !client.IsNotFound(err) {
		t.Fatalf("delete of a version never registered: %v", err)
	}
	page, err := c.ListDefinitions(ctx, client.DefinitionListOptions{Name: "order"})
	if err != nil || len(page.Items) != 2 || !page.Items[0].Enabled || page.Items[1].Enabled {
		t.Fatalf("list: %+v, %v", page, err)
	}
}

func TestSagaLifecycle(t *testing.T) {
	t.Parallel()
	s := sdktest.NewServer(t)
	c, ctx := s.Client, ctxT(t)
	s.Register(t, orderDef)

	res, err := c.StartSaga(ctx, client.StartRequest{Definition: "order", Input: map[string]any{"sku": "a-1"}})
	if err != nil || !res.Created || res.ID == "" || res.IdempotencyKey == "" {
		t.Fatalf("start: %+v, %v", res, err)
	}
	again, err := c.StartSaga(ctx, client.StartRequest{Definition: "order", Input: map[string]any{"sku": "a-1"}, IdempotencyKey: res.IdempotencyKey})
	if err != nil || again.Created || again.ID != res.ID {
		t.Fatalf("repeat: %+v, %v", again, err)
	}
	_, err = c.StartSaga(ctx, client.StartRequest{Definition: "order", Input: map[string]any{"sku": "b-2"}, IdempotencyKey: res.IdempotencyKey})
	if !client.IsIdempotencyMismatch(err) {
		t.Fatalf("mismatch: %v", err)
	}
	if _, err := c.StartSaga(ctx, client.StartRequest{Definition: "order", Input: func() {}}); err == nil {
		t.Fatal("an input that does not marshal was sent")
	}

	sg, err := c.GetSaga(ctx, res.ID)
	if err != nil || sg.Status != client.StatusRunning || len(sg.Steps) != 2 || string(sg.Input) != `{"sku":"a-1"}` {
		t.Fatalf("get: %+v, %v", sg, err)
	}
	if _, err := c.GetSaga(ctx, "nope"); !client.IsNotFound(err) {
		t.Fatalf("unknown saga: %v", err)
	}
	if _, err := c.RetrySaga(ctx, res.ID); !client.IsConflict(err) {
		t.Fatalf("retry of a running saga: %v", err)
	}

	watched := make(chan []string, 1)
	go func() {
		var seen []string
		err := c.WatchSaga(ctx, res.ID, func(st client.SagaStatus) error {
			seen = append(seen, st.Status)
			return nil
		})
		if err != nil {
			t.Errorf("watch: %v", err)
		}
		watched <- seen
	}()

	for _, q := range []string{"stock", "shipping"} {
		tasks, err := c.Poll(ctx, q, client.PollOptions{Max: 5, Wait: 10 * time.Second, Visibility: time.Minute})
		if err != nil || len(tasks) != 1 {
			t.Fatalf("poll %s: %+v, %v", q, tasks, err)
		}
		task := tasks[0]
		if err := c.Heartbeat(ctx, task.ID, task.ClaimToken, time.Minute); err != nil {
			t.Fatalf("heartbeat: %v", err)
		}
		if err := c.Heartbeat(ctx, task.ID, "stale", time.Minute); !client.IsClaimLost(err) {
			t.Fatalf("stale heartbeat: %v", err)
		}
		if err := c.Complete(ctx, client.TaskResult{TaskID: task.ID, ClaimToken: task.ClaimToken, Outcome: client.OutcomeSuccess,
			Output: json.RawMessage(`{"step":"` + task.Step + `"}`)}); err != nil {
			t.Fatalf("complete: %v", err)
		}
		if err := c.Complete(ctx, client.TaskResult{TaskID: task.ID, ClaimToken: task.ClaimToken, Outcome: client.OutcomeSuccess}); !client.IsNotFound(err) {
			t.Fatalf("second completion: %v", err)
		}
	}
	done, err := c.WaitSaga(ctx, res.ID)
	if err != nil || done.Status != client.StatusCompleted || string(done.Steps[1].Output) != `{"step":"ship"}` {
		t.Fatalf("wait: %+v, %v", done, err)
	}
	seen := <-watched
	if len(seen) == 0 || seen[len(seen)-1] != client.StatusCompleted {
		t.Fatalf("watched %v", seen)
	}
	if _, err := c.CancelSaga(ctx, res.ID, "too late"); !client.IsSagaEnded(err) {
		t.Fatalf("cancel after the end: %v", err)
	}

	events, err := c.SagaEvents(ctx, res.ID, client.EventOptions{})
	if err != nil || len(events.Items) < 4 || events.Items[0].Type != "saga.started" {
		t.Fatalf("events: %+v, %v", events, err)
	}
}

func TestListAndCancel(t *testing.T) {
	t.Parallel()
	s := sdktest.NewServer(t)
	c, ctx := s.Client, ctxT(t)
	s.Register(t, orderDef)
	ids := map[string]bool{}
	for range 5 {
		res, err := c.StartSaga(ctx, client.StartRequest{Definition: "order"})
		if err != nil {
			t.Fatal(err)
		}
		ids[res.ID] = true
	}
	var first string
	for id := range ids {
		first = id
		break
	}
	cancelled, err := c.CancelSaga(ctx, first, "test")
	if err != nil || cancelled.Status != client.StatusCompensating || cancelled.Note != "test" {
		t.Fatalf("cancel: %+v, %v", cancelled, err)
	}

	pages, seen := 0, 0
	for page, err := range c.SagaPages(ctx, client.ListOptions{Limit: 2}) {
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, s := range page.Items {
			if !ids[s.ID] {
				t.Fatalf("unknown saga %s", s.ID)
			}
			seen++
		}
	}
	if pages != 3 || seen != 5 {
		t.Fatalf("%d pages, %d sagas", pages, seen)
	}
	page, err := c.ListSagas(ctx, client.ListOptions{Status: []string{client.StatusCompensating}, Definition: "order",
		CreatedAfter: time.Now().Add(-time.Hour), CreatedBefore: time.Now().Add(time.Hour)})
	if err != nil || len(page.Items) != 1 || page.Items[0].ID != first {
		t.Fatalf("filtered: %+v, %v", page, err)
	}
	_, err = c.ListSagas(ctx, client.ListOptions{Status: []string{"bogus"}})
	var e *client.Error
	if !errors.As(err, &e) || e.Status != http.StatusUnprocessableEntity || e.Errors[0].Location != "query.status" {
		t.Fatalf("bad status: %v", err)
	}
}

func TestCompleteBatchAndQueues(t *testing.T) {
	t.Parallel()
	s := sdktest.NewServer(t)
	c, ctx := s.Client, ctxT(t)
	s.Register(t, orderDef)
	for range 2 {
		if _, err := c.StartSaga(ctx, client.StartRequest{Definition: "order"}); err != nil {
			t.Fatal(err)
		}
	}
	var tasks []client.Task
	for len(tasks) < 2 {
		got, err := c.Poll(ctx, "stock", client.PollOptions{Max: 2, Wait: 10 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		tasks = append(tasks, got...)
	}
	qs, err := c.Queues(ctx)
	if err != nil || len(qs) != 1 || qs[0].Queue != "stock" || qs[0].InFlight != 2 {
		t.Fatalf("queues: %+v, %v", qs, err)
	}
	st, err := c.CompleteBatch(ctx, []client.TaskResult{
		{TaskID: tasks[0].ID, ClaimToken: tasks[0].ClaimToken, Outcome: client.OutcomeSuccess, Output: map[string]int{"n": 1}},
		{TaskID: tasks[1].ID, ClaimToken: "stale", Outcome: client.OutcomeFailure, ErrorCode: "x"},
	})
	if err != nil || len(st) != 2 || st[0].Err != nil || !client.IsClaimLost(st[1].Err) {
		t.Fatalf("batch: %+v, %v", st, err)
	}
}

// TestRetries checks the retry policy against a server that fails on
// purpose.
func TestRetries(t *testing.T) {
	t.Parallel()
	var calls atomic.Int32
	failures := int32(2)
	problem := `{"type":"` + client.ProblemOverloaded + `","title":"Service Unavailable","status":503}`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := calls.Add(1)
		if n <= failures {
			w.Header().Set("Retry-After", "0")
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte(problem))
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"id":"s1","status":"running","created":true}`))
	}))
	defer srv.Close()
	ctx := ctxT(t)

	c, err := client.New(srv.URL, client.WithBackoff(time.Millisecond, time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.StartSaga(ctx, client.StartRequest{Definition: "x"})
	if err != nil || res.ID != "s1" || calls.Load() != 3 {
		t.Fatalf("start after two refusals: %+v, %v, %d calls", res, err, calls.Load())
	}

	calls.Store(0)
	none, _ := client.New(srv.URL, client.WithRetries(0))
	_, err = none.StartSaga(ctx, client.StartRequest{Definition: "x"})
	var e *client.Error
	if !client.IsUnavailable(err) || !errors.As(err, &e) || e.Type != client.ProblemOverloaded || calls.Load() != 1 {
		t.Fatalf("without retries: %v, %d calls", err, calls.Load())
	}

	// A 503 that is not a refusal is not repeated for a cancel.
	problem = `{"type":"` + client.ProblemUnavailable + `","title":"Service Unavailable","status":503}`
	calls.Store(0)
	if _, err := c.CancelSaga(ctx, "s1", ""); !client.IsUnavailable(err) || calls.Load() != 1 {
		t.Fatalf("cancel: %v, %d calls", err, calls.Load())
	}

	// Nobody listening: unavailable, and the context bounds the retries.
	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()
	dc, _ := client.New(dead.URL, client.WithBackoff(time.Millisecond, 2*time.Millisecond))
	if _, err := dc.GetSaga(ctx, "s1"); !client.IsUnavailable(err) {
		t.Fatalf("unreachable: %v", err)
	}

	if _, err := client.New("127.0.0.1:7780"); err == nil {
		t.Fatal("a URL without a scheme was accepted")
	}
}
