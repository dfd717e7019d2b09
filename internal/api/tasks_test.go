package api_test

import (
	"net/http"
	"net/url"
	"testing"

	"github.com/accord-saga/accord/internal/api"
)

func taskPath(id, op string) string { return "/v1/tasks/" + url.PathEscape(id) + "/" + op }

func TestTasks(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.registerOrder(t)
	id := b.start(t, "order", map[string]any{"total": 10}).ID

	task := b.pollOne(t, "orders")
	if task.SagaID != id || task.Step != "order" || task.Phase != "action" || task.Attempt != 1 || task.Operation != "create_order" ||
		task.ClaimToken == "" || task.IdempotencyKey == "" || task.Deliveries != 1 || string(task.Input) != `{"total":10}` {
		t.Fatalf("task %+v", task)
	}

	t.Run("queues", func(t *testing.T) {
		r := b.do(t, http.MethodGet, "/v1/queues", nil)
		wantStatus(t, r, http.StatusOK)
		var l api.QueueList
		r.json(t, &l)
		if len(l.Queues) != 1 || l.Queues[0].Queue != "orders" || l.Queues[0].InFlight != 1 || l.Queues[0].Depth != 0 {
			t.Fatalf("queues %+v", l)
		}
	})
	t.Run("empty poll", func(t *testing.T) {
		r := b.do(t, http.MethodPost, "/v1/queues/orders/tasks:poll", map[string]any{"max": 5, "wait_ms": 30})
		wantStatus(t, r, http.StatusOK)
		var l api.TaskList
		r.json(t, &l)
		if len(l.Tasks) != 0 {
			t.Fatalf("a claimed task was handed out again: %+v", l.Tasks)
		}
	})

	heartbeat := func(token string) *response {
		return b.do(t, http.MethodPost, taskPath(task.ID, "heartbeat"), map[string]any{"claim_token": token, "visibility_ms": 60000})
	}
	wantStatus(t, heartbeat(task.ClaimToken), http.StatusNoContent)
	p := heartbeat("not-the-token").problem(t)
	if p.Status != http.StatusConflict || p.Type != api.TypeClaimLost {
		t.Fatalf("heartbeat with a stale token: %+v", p)
	}
	p = b.do(t, http.MethodPost, taskPath(task.ID, "complete"), map[string]any{"claim_token": "stale", "outcome": "success"}).problem(t)
	if p.Status != http.StatusConflict || p.Type != api.TypeClaimLost {
		t.Fatalf("complete with a stale token: %+v", p)
	}

	b.complete(t, task, "success", map[string]any{"id": "o-1"})
	p = b.do(t, http.MethodPost, taskPath(task.ID, "complete"), map[string]any{"claim_token": task.ClaimToken, "outcome": "success"}).problem(t)
	if p.Status != http.StatusNotFound || p.Type != api.TypeNotFound {
		t.Fatalf("second completion: %+v", p)
	}
	p = heartbeat(task.ClaimToken).problem(t)
	if p.Status != http.StatusConflict || p.Type != api.TypeClaimLost {
		t.Fatalf("heartbeat of a completed task: %+v", p)
	}
}

func TestClaimLost(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.registerOrder(t)
	b.start(t, "order", nil)

	r := b.do(t, http.MethodPost, "/v1/queues/orders/tasks:poll", map[string]any{"max": 1, "wait": "5s", "visibility": "20ms"})
	var l api.TaskList
	r.json(t, &l)
	if len(l.Tasks) != 1 {
		t.Fatalf("tasks %+v", l)
	}
	stale := l.Tasks[0]
	// The claim expires; the long poll hands the task to another worker.
	fresh := b.pollOne(t, "orders")
	if fresh.ID != stale.ID || fresh.ClaimToken == stale.ClaimToken || fresh.Deliveries != 2 {
		t.Fatalf("stale %+v, fresh %+v", stale, fresh)
	}
	p := b.do(t, http.MethodPost, taskPath(stale.ID, "complete"), map[string]any{"claim_token": stale.ClaimToken, "outcome": "success"}).problem(t)
	if p.Type != api.TypeClaimLost {
		t.Fatalf("problem %+v", p)
	}
	b.complete(t, fresh, "success", nil)
}

func TestCompleteBatch(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.registerOrder(t)
	for range 3 {
		b.start(t, "order", nil)
	}
	r := b.do(t, http.MethodPost, "/v1/queues/orders/tasks:poll", map[string]any{"max": 10, "wait": "5s"})
	var l api.TaskList
	r.json(t, &l)
	for len(l.Tasks) < 3 {
		l.Tasks = append(l.Tasks, b.pollOne(t, "orders"))
	}
	results := []map[string]any{
		{"task_id": l.Tasks[0].ID, "claim_token": l.Tasks[0].ClaimToken, "outcome": "success", "output": map[string]any{"id": 1}},
		{"task_id": l.Tasks[1].ID, "claim_token": "stale", "outcome": "success"},
		{"task_id": "no-such-task", "claim_token": "x", "outcome": "failure", "error": map[string]any{"code": "c", "message": "m"}},
		{"task_id": l.Tasks[2].ID, "claim_token": l.Tasks[2].ClaimToken, "outcome": "retryable", "error": map[string]any{"code": "busy"}},
	}
	r = b.do(t, http.MethodPost, "/v1/tasks:complete", map[string]any{"results": results})
	wantStatus(t, r, http.StatusOK)
	var st api.TaskResultStatuses
	r.json(t, &st)
	want := []int{200, 409, 404, 200}
	if len(st.Results) != len(want) {
		t.Fatalf("results %+v", st)
	}
	for i, w := range want {
		got := st.Results[i]
		if got.Status != w || got.TaskID != results[i]["task_id"] || (w != 200) != (got.Problem != nil) {
			t.Fatalf("result %d: %+v, want status %d", i, got, w)
		}
	}
	if st.Results[1].Problem.Type != api.TypeClaimLost {
		t.Fatalf("problem %+v", st.Results[1].Problem)
	}
	// The retryable result schedules attempt 2.
	retry := b.pollOne(t, "orders")
	if retry.ID == l.Tasks[2].ID || retry.SagaID != l.Tasks[2].SagaID || retry.Attempt != 2 {
		t.Fatalf("retry %+v after %+v", retry, l.Tasks[2])
	}
}
