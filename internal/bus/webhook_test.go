package bus_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/accord-saga/accord/internal/bus"
	"github.com/accord-saga/accord/internal/dispatch"
	"github.com/accord-saga/accord/internal/engine"
)

// A webhook group is consumed by the server: 2xx acks, 5xx retries with
// backoff, another 4xx dead-letters; the allowlist is checked when the
// group is created.
func TestWebhookGroup(t *testing.T) {
	var mu sync.Mutex
	calls := map[string]int{}
	got := map[string]bool{}
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var m struct {
			ID      string          `json:"id"`
			Payload json.RawMessage `json:"payload"`
			Attempt int             `json:"attempt"`
		}
		_ = json.Unmarshal(body, &m)
		mu.Lock()
		defer mu.Unlock()
		calls[m.ID]++
		switch {
		case string(m.Payload) == `"reject"`:
			w.WriteHeader(http.StatusUnprocessableEntity)
		case string(m.Payload) == `"flaky"` && calls[m.ID] < 3:
			w.WriteHeader(http.StatusServiceUnavailable)
		default:
			if r.Header.Get("Idempotency-Key") != m.ID || r.Header.Get("Accord-Topic") != "docs" {
				w.WriteHeader(http.StatusBadRequest)
				return
			}
			got[m.ID] = true
			w.WriteHeader(http.StatusNoContent)
		}
	}))
	defer hook.Close()
	push, err := dispatch.New(dispatch.Config{Allow: []string{"127.0.0.1"}, Logger: quiet(),
		Complete: func(context.Context, engine.Result) error { return nil }}) // no saga pushes here
	if err != nil {
		t.Fatal(err)
	}
	n := startNode(t, backends[0].open(t), func(c *bus.Config) { c.Webhooks = push; c.CheckURL = push.CheckURL })
	b := n.bus
	ctx := context.Background()
	mustTopic(t, b, "docs", bus.TopicConfig{})
	if _, _, err := b.CreateGroup(ctx, "docs", "bad", bus.GroupConfig{Webhook: &bus.Webhook{URL: "http://10.9.9.9/hook"}}, bus.GroupStart{}); err == nil {
		t.Fatal("a webhook outside the allowlist was accepted")
	}
	mustGroup(t, b, "docs", "hook", bus.GroupConfig{
		Webhook: &bus.Webhook{URL: hook.URL + "/approved"},
		Backoff: bus.Backoff{Initial: bus.Duration(10 * time.Millisecond)},
	}, bus.GroupStart{})
	publish(t, b, "docs",
		bus.Message{ID: "ok", Payload: json.RawMessage(`"fine"`)},
		bus.Message{ID: "flaky", Payload: json.RawMessage(`"flaky"`)},
		bus.Message{ID: "rejected", Payload: json.RawMessage(`"reject"`)})
	eventually(t, 15*time.Second, "ok and flaky delivered, rejected dead-lettered", func() bool {
		mu.Lock()
		done := got["ok"] && got["flaky"]
		mu.Unlock()
		dl, err := b.DeadLetters(ctx, "docs", "hook", 0, 10)
		return done && err == nil && len(dl) == 1 && dl[0].Message.ID == "rejected"
	})
	mu.Lock()
	defer mu.Unlock()
	if calls["flaky"] != 3 || calls["rejected"] != 1 {
		t.Fatalf("calls = %v: want flaky called 3 times (2 × 503, then 204) and rejected once", calls)
	}
}
