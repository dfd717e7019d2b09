package api_test

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/accord-saga/accord/internal/api"
	"github.com/accord-saga/accord/internal/bus"
	"github.com/accord-saga/accord/internal/storage"
	"github.com/accord-saga/accord/internal/storage/sqlite"
)

// busTopic creates a topic and a group through the API.
func (b *testBundle) busTopic(t testing.TB, topic, group string, groupCfg map[string]any) {
	t.Helper()
	wantStatus(t, b.do(t, http.MethodPut, "/v1/topics/"+topic, map[string]any{}), http.StatusCreated)
	if group != "" {
		var body any
		if groupCfg != nil {
			body = groupCfg
		}
		wantStatus(t, b.do(t, http.MethodPut, "/v1/topics/"+topic+"/groups/"+group, body), http.StatusCreated)
	}
}

func (b *testBundle) publish(t testing.TB, topic string, msgs ...map[string]any) []api.PublishResult {
	t.Helper()
	r := b.do(t, http.MethodPost, "/v1/topics/"+topic+"/messages", map[string]any{"messages": msgs})
	wantStatus(t, r, http.StatusOK)
	var res api.PublishResults
	r.json(t, &res)
	if len(res.Results) != len(msgs) {
		t.Fatalf("publish: %d results for %d messages", len(res.Results), len(msgs))
	}
	return res.Results
}

func (b *testBundle) receive(t testing.TB, topic, group string, body map[string]any) []api.Delivery {
	t.Helper()
	var send any
	if body != nil {
		send = body
	}
	r := b.do(t, http.MethodPost, "/v1/topics/"+topic+"/groups/"+group+"/receive", send)
	wantStatus(t, r, http.StatusOK)
	var l api.DeliveryList
	r.json(t, &l)
	return l.Messages
}

func (b *testBundle) nack(t testing.TB, topic, group string, body map[string]any) {
	t.Helper()
	wantStatus(t, b.do(t, http.MethodPost, "/v1/topics/"+topic+"/groups/"+group+"/nack", body), http.StatusNoContent)
}

func TestBusRoundTrip(t *testing.T) {
	t.Parallel()
	b := setup(t)

	r := b.do(t, http.MethodPut, "/v1/topics/orders", map[string]any{"dedup_window": "10m", "max_deliveries": 3})
	wantStatus(t, r, http.StatusCreated)
	var topic api.Topic
	r.json(t, &topic)
	if topic.Name != "orders" || topic.Config.DedupWindow != "10m0s" || topic.Effective.RetentionAge != "168h0m0s" || topic.Effective.MaxDeliveries != 3 {
		t.Fatalf("topic %+v", topic)
	}
	wantStatus(t, b.do(t, http.MethodPut, "/v1/topics/orders", map[string]any{"dedup_window": "10m", "max_deliveries": 3}), http.StatusOK)
	r = b.do(t, http.MethodGet, "/v1/topics", nil)
	var topics api.TopicList
	r.json(t, &topics)
	if len(topics.Topics) != 1 || topics.Topics[0].Name != "orders" {
		t.Fatalf("topics %+v", topics)
	}

	cfg := map[string]any{"ack_timeout": "1m", "backoff": map[string]any{"initial": "10ms", "max": "1s"}}
	r = b.do(t, http.MethodPut, "/v1/topics/orders/groups/billing", cfg)
	wantStatus(t, r, http.StatusCreated)
	var g api.Group
	r.json(t, &g)
	if g.Name != "billing" || g.Effective.AckTimeout != "1m0s" || g.Effective.MaxDeliveries != 3 || g.Config.Backoff.Initial != "10ms" {
		t.Fatalf("group %+v", g)
	}
	wantStatus(t, b.do(t, http.MethodPut, "/v1/topics/orders/groups/billing", cfg), http.StatusOK)
	p := b.do(t, http.MethodPut, "/v1/topics/orders/groups/billing", map[string]any{"ack_timeout": "2m"}).problem(t)
	if p.Status != http.StatusConflict || p.Type != api.TypeGroupExists {
		t.Fatalf("group with other configuration: %+v", p)
	}

	// A waiting receive wakes on the publish.
	got := make(chan []api.Delivery, 1)
	go func() { got <- b.receive(t, "orders", "billing", map[string]any{"max": 10, "wait": "10s"}) }()
	time.Sleep(50 * time.Millisecond)
	res := b.publish(t, "orders", map[string]any{
		"key": "o-1", "payload": map[string]any{"total": 10}, "headers": map[string]string{"type": "OrderPlaced"}, "correlation_id": "flow-1",
	})
	if res[0].ID == "" || res[0].Position < 1 || res[0].Duplicate {
		t.Fatalf("publish %+v", res)
	}
	ds := <-got
	if len(ds) != 1 {
		t.Fatalf("deliveries %+v", ds)
	}
	d := ds[0]
	if d.ID != res[0].ID || d.Key != "o-1" || d.Attempt != 1 || d.Receipt == "" || string(d.Payload) != `{"total":10}` ||
		d.Headers["type"] != "OrderPlaced" || d.CorrelationID != "flow-1" || d.Topic != "orders" || len(d.History) != 0 {
		t.Fatalf("delivery %+v", d)
	}
	wantStatus(t, b.do(t, http.MethodPost, "/v1/topics/orders/groups/billing/heartbeat", map[string]any{"receipt": d.Receipt, "extend": "30s"}), http.StatusNoContent)

	r = b.do(t, http.MethodPost, "/v1/topics/orders/groups/billing/ack", map[string]any{"receipts": []string{d.Receipt, d.Receipt, "nonsense", "0.1.\x00"}})
	wantStatus(t, r, http.StatusOK)
	var acks api.AckResults
	r.json(t, &acks)
	if len(acks.Results) != 4 || acks.Results[3].Status != 422 || acks.Results[0].Status != 200 || acks.Results[1].Status != 409 || acks.Results[1].Problem.Type != api.TypeReceiptLost ||
		acks.Results[2].Status != 422 || !namesField(*acks.Results[2].Problem, "body.receipts[2]") {
		t.Fatalf("acks %s", r.body)
	}
	p = b.do(t, http.MethodPost, "/v1/topics/orders/groups/billing/nack", map[string]any{"receipt": d.Receipt}).problem(t)
	if p.Status != http.StatusConflict || p.Type != api.TypeReceiptLost || !namesField(p, "body.receipt") {
		t.Fatalf("nack of an acked message: %+v", p)
	}
	p = b.do(t, http.MethodPost, "/v1/topics/orders/groups/billing/heartbeat", map[string]any{"receipt": d.Receipt}).problem(t)
	if p.Status != http.StatusConflict || p.Type != api.TypeReceiptLost {
		t.Fatalf("heartbeat of an acked message: %+v", p)
	}
	if ds := b.receive(t, "orders", "billing", map[string]any{"wait": "50ms"}); len(ds) != 0 {
		t.Fatalf("an acked message was handed out again: %+v", ds)
	}

	r = b.do(t, http.MethodGet, "/v1/topics/orders/groups/billing", nil)
	wantStatus(t, r, http.StatusOK)
	r.json(t, &g)
	for _, st := range g.Partitions {
		if st.Pending != 0 || st.InFlight != 0 {
			t.Fatalf("group stats %s", r.body)
		}
	}
	r = b.do(t, http.MethodGet, "/v1/topics/orders/groups", nil)
	var groups api.GroupList
	r.json(t, &groups)
	if len(groups.Groups) != 1 || groups.Groups[0].Name != "billing" || groups.Groups[0].Partitions != nil {
		t.Fatalf("groups %s", r.body)
	}

	r = b.do(t, http.MethodGet, "/v1/topics/orders/messages?partition="+strconv.Itoa(res[0].Partition)+"&from=1&limit=10", nil)
	wantStatus(t, r, http.StatusOK)
	var msgs api.BusMessageList
	r.json(t, &msgs)
	if len(msgs.Messages) != 1 || msgs.Messages[0].ID != res[0].ID || string(msgs.Messages[0].Payload) != `{"total":10}` {
		t.Fatalf("messages %s", r.body)
	}

	wantStatus(t, b.do(t, http.MethodDelete, "/v1/topics/orders/groups/billing", nil), http.StatusNoContent)
	if p := b.do(t, http.MethodGet, "/v1/topics/orders/groups/billing", nil).problem(t); p.Type != api.TypeGroupNotFound || p.Status != 404 {
		t.Fatalf("deleted group: %+v", p)
	}
	wantStatus(t, b.do(t, http.MethodDelete, "/v1/topics/orders", nil), http.StatusNoContent)
	if p := b.do(t, http.MethodGet, "/v1/topics/orders", nil).problem(t); p.Type != api.TypeTopicNotFound || !namesField(p, "path.topic") {
		t.Fatalf("deleted topic: %+v", p)
	}
}

func TestBusKeyOrder(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.busTopic(t, "events", "g", nil)
	b.publish(t, "events",
		map[string]any{"key": "a", "payload": 1}, map[string]any{"key": "a", "payload": 2},
		map[string]any{"key": "b", "payload": 3}, map[string]any{"key": "a", "payload": 4})

	ds := b.receive(t, "events", "g", map[string]any{"max": 10})
	payloads := map[string]bool{}
	for _, d := range ds {
		payloads[string(d.Payload)] = true
	}
	if len(ds) != 2 || !payloads["1"] || !payloads["3"] {
		t.Fatalf("first receive: want the head of each key (1 and 3), got %+v", ds)
	}
	if more := b.receive(t, "events", "g", map[string]any{"max": 10}); len(more) != 0 {
		t.Fatalf("a later message of a key in flight was handed out: %+v", more)
	}
	var headA api.Delivery
	for _, d := range ds {
		if d.Key == "a" {
			headA = d
		}
	}
	// Acked in any order, key a moves on one message at a time.
	wantStatus(t, b.do(t, http.MethodPost, "/v1/topics/events/groups/g/ack", map[string]any{"receipts": []string{headA.Receipt}}), http.StatusOK)
	for _, want := range []string{"2", "4"} {
		ds := b.receive(t, "events", "g", map[string]any{"max": 10, "wait": "2s"})
		if len(ds) != 1 || string(ds[0].Payload) != want {
			t.Fatalf("want %s alone, got %+v", want, ds)
		}
		wantStatus(t, b.do(t, http.MethodPost, "/v1/topics/events/groups/g/ack", map[string]any{"receipts": []string{ds[0].Receipt}}), http.StatusOK)
	}
}

func TestBusNackAndDeadLetters(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.busTopic(t, "jobs", "w", map[string]any{"max_deliveries": 2})
	id := b.publish(t, "jobs", map[string]any{"key": "k", "payload": "job"})[0].ID

	d := b.receive(t, "jobs", "w", nil)[0]
	b.nack(t, "jobs", "w", map[string]any{"receipt": d.Receipt, "reason": "db down", "delay": "0s"})
	d = b.receive(t, "jobs", "w", map[string]any{"wait": "2s"})[0]
	if d.ID != id || d.Attempt != 2 || len(d.History) != 1 || d.History[0].Attempt != 1 || d.History[0].Outcome != "nack" ||
		d.History[0].Reason != "db down" || d.History[0].At.IsZero() {
		t.Fatalf("redelivery %+v", d)
	}
	// Handed out twice, nacked twice: the next try dead-letters it.
	b.nack(t, "jobs", "w", map[string]any{"receipt": d.Receipt, "reason": "still down", "delay": "0s"})
	if ds := b.receive(t, "jobs", "w", map[string]any{"wait": "100ms"}); len(ds) != 0 {
		t.Fatalf("handed out after max_deliveries: %+v", ds)
	}
	r := b.do(t, http.MethodGet, "/v1/topics/jobs/groups/w/dead-letters", nil)
	wantStatus(t, r, http.StatusOK)
	var dl api.DeadLetterList
	r.json(t, &dl)
	if len(dl.DeadLetters) != 1 {
		t.Fatalf("dead letters %s", r.body)
	}
	dead := dl.DeadLetters[0]
	if dead.Message.ID != id || dead.Attempts != 2 || len(dead.History) != 2 || dead.History[1].Reason != "still down" || string(dead.Message.Payload) != `"job"` {
		t.Fatalf("dead letter %s", r.body)
	}

	r = b.do(t, http.MethodPost, "/v1/topics/jobs/groups/w/dead-letters/replay", map[string]any{"ids": []int64{dead.ID}})
	wantStatus(t, r, http.StatusOK)
	var n api.Count
	r.json(t, &n)
	if n.Count != 1 {
		t.Fatalf("replay %s", r.body)
	}
	d = b.receive(t, "jobs", "w", map[string]any{"wait": "2s"})[0]
	if d.ID != id {
		t.Fatalf("replayed %+v", d)
	}
	// A message that can never succeed goes to the dead letters at once.
	b.nack(t, "jobs", "w", map[string]any{"receipt": d.Receipt, "reason": "poison", "dead_letter": true})
	r = b.do(t, http.MethodGet, "/v1/topics/jobs/groups/w/dead-letters?limit=1", nil)
	r.json(t, &dl)
	if len(dl.DeadLetters) != 1 || dl.DeadLetters[0].Reason != "poison" || dl.NextAfter == 0 {
		t.Fatalf("dead letters %s", r.body)
	}
	r = b.do(t, http.MethodPost, "/v1/topics/jobs/groups/w/dead-letters/purge", map[string]any{"all": true})
	wantStatus(t, r, http.StatusOK)
	r.json(t, &n)
	if n.Count != 1 {
		t.Fatalf("purge %s", r.body)
	}
	r = b.do(t, http.MethodGet, "/v1/topics/jobs/groups/w/dead-letters", nil)
	r.json(t, &dl)
	if len(dl.DeadLetters) != 0 {
		t.Fatalf("after purge %s", r.body)
	}
}

func TestBusDuplicatePublish(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.busTopic(t, "pay", "", nil)
	msg := map[string]any{"key": "p-1", "idempotency_key": "charge-1", "payload": map[string]any{"amount": 5}}
	first := b.publish(t, "pay", msg)[0]
	again := b.publish(t, "pay", msg)[0]
	if first.Duplicate || !again.Duplicate || again.ID != first.ID {
		t.Fatalf("first %+v, again %+v", first, again)
	}
	other := map[string]any{"key": "p-1", "idempotency_key": "charge-1", "payload": map[string]any{"amount": 6}}
	r := b.do(t, http.MethodPost, "/v1/topics/pay/messages", map[string]any{"messages": []any{map[string]any{"payload": 1}, other}})
	p := r.problem(t)
	if p.Status != http.StatusConflict || p.Type != api.TypeIdempotencyMismatch || !namesField(p, "body.messages[1].idempotency_key") {
		t.Fatalf("other content: %s", r.body)
	}
}

func TestBusTraceAndStalled(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{stallAfter: time.Millisecond})
	b.busTopic(t, "orders", "shipping", nil)
	wantStatus(t, b.do(t, http.MethodPut, "/v1/topics/orders/groups/billing", nil), http.StatusCreated)
	b.busTopic(t, "payments", "ledger", nil)

	placed := b.publish(t, "orders", map[string]any{"key": "o-1", "payload": 1, "correlation_id": "flow-7"})[0]
	paid := b.publish(t, "payments", map[string]any{"key": "o-1", "payload": 2, "correlation_id": "flow-7"})[0]
	b.publish(t, "orders", map[string]any{"key": "o-2", "payload": 3})
	d := b.receive(t, "orders", "billing", map[string]any{"max": 1})[0]
	if d.ID != placed.ID {
		// o-2 came first; ack it and take o-1.
		wantStatus(t, b.do(t, http.MethodPost, "/v1/topics/orders/groups/billing/ack", map[string]any{"receipts": []string{d.Receipt}}), http.StatusOK)
		d = b.receive(t, "orders", "billing", map[string]any{"max": 1})[0]
	}
	wantStatus(t, b.do(t, http.MethodPost, "/v1/topics/orders/groups/billing/ack", map[string]any{"receipts": []string{d.Receipt}}), http.StatusOK)
	b.receive(t, "payments", "ledger", nil)

	r := b.do(t, http.MethodGet, "/v1/traces/flow-7", nil)
	wantStatus(t, r, http.StatusOK)
	var tr api.Trace
	r.json(t, &tr)
	if tr.CorrelationID != "flow-7" || len(tr.Messages) != 2 || tr.Messages[0].ID != placed.ID || tr.Messages[1].ID != paid.ID {
		t.Fatalf("trace %s", r.body)
	}
	status := map[string]string{}
	for _, m := range tr.Messages {
		for _, g := range m.Groups {
			status[m.Topic+"/"+g.Group] = g.Status
		}
	}
	if status["orders/billing"] != "done" || status["orders/shipping"] != "pending" || status["payments/ledger"] != "in_flight" {
		t.Fatalf("trace statuses %v: %s", status, r.body)
	}
	if p := b.do(t, http.MethodGet, "/v1/traces/no-such-flow", nil).problem(t); p.Status != 404 || !namesField(p, "path.correlation_id") {
		t.Fatalf("unknown flow: %+v", p)
	}

	time.Sleep(10 * time.Millisecond)
	r = b.do(t, http.MethodGet, "/v1/bus/stalled?limit=100", nil)
	wantStatus(t, r, http.StatusOK)
	var st api.StalledList
	r.json(t, &st)
	seen := map[string]bool{}
	for _, m := range st.Messages {
		seen[m.Message.Topic+"/"+m.Group+"/"+m.Message.ID] = true
	}
	if st.StallAfter != "1ms" || !seen["orders/shipping/"+placed.ID] || !seen["payments/ledger/"+paid.ID] || seen["orders/billing/"+placed.ID] {
		t.Fatalf("stalled %s", r.body)
	}
}

// TestBusBadInput sends the bus endpoints requests that are wrong: each is
// a 4xx problem naming the field.
func TestBusBadInput(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.busTopic(t, "t", "g", nil)
	bigPayload := `{"messages": [{"payload": "` + strings.Repeat("x", api.DefaultMaxBodyBytes) + `"}]}`
	cases := []struct {
		name, method, path, body string
		status                   int
		typ, field               string
	}{
		{"topic: bad name", "PUT", "/v1/topics/-bad", `{}`, 422, api.TypeValidation, "path.topic"},
		{"topic: name too long", "PUT", "/v1/topics/" + strings.Repeat("t", 129), `{}`, 422, api.TypeValidation, "path.topic"},
		{"topic: bad duration", "PUT", "/v1/topics/t2", `{"dedup_window": "an hour"}`, 422, api.TypeValidation, "body.dedup_window"},
		{"topic: negative duration", "PUT", "/v1/topics/t2", `{"default_ttl": "-1s"}`, 422, api.TypeValidation, "body.default_ttl"},
		{"topic: retention and keep forever", "PUT", "/v1/topics/t2", `{"retention_age": "1h", "keep_forever": true}`, 422, api.TypeValidation, "body.retention_age"},
		{"topic: unknown field", "PUT", "/v1/topics/t2", `{"retention": "1h"}`, 422, api.TypeValidation, "body.retention"},
		{"topic: unknown", "GET", "/v1/topics/nope", ``, 404, api.TypeTopicNotFound, "path.topic"},
		{"topic: delete unknown", "DELETE", "/v1/topics/nope", ``, 404, api.TypeTopicNotFound, "path.topic"},

		{"publish: unknown topic", "POST", "/v1/topics/nope/messages", `{"messages": [{"payload": 1}]}`, 404, api.TypeTopicNotFound, "path.topic"},
		{"publish: no messages", "POST", "/v1/topics/t/messages", `{"messages": []}`, 422, api.TypeValidation, "body.messages"},
		{"publish: invalid JSON payload", "POST", "/v1/topics/t/messages", `{"messages": [{"payload": {"a": }}]}`, 400, api.TypeBadRequest, "body"},
		{"publish: oversized payload", "POST", "/v1/topics/t/messages", bigPayload, 413, api.TypePayloadTooLarge, ""},
		{"publish: bad ttl", "POST", "/v1/topics/t/messages", `{"messages": [{"payload": 1}, {"payload": 2, "ttl": "1 day"}]}`, 422, api.TypeValidation, "body.messages[1].ttl"},
		{"publish: tombstone without key", "POST", "/v1/topics/t/messages", `{"messages": [{"tombstone": true}]}`, 422, api.TypeValidation, "body.messages[0].key"},
		{"publish: key too long", "POST", "/v1/topics/t/messages", `{"messages": [{"key": "` + strings.Repeat("k", 257) + `"}]}`, 422, api.TypeValidation, "body.messages[0].key"},
		{"publish: header of the wrong type", "POST", "/v1/topics/t/messages", `{"messages": [{"headers": {"a": 1}}]}`, 422, api.TypeValidation, "body.messages[0].headers.a"},

		{"read: bad partition", "GET", "/v1/topics/t/messages?partition=99", ``, 422, api.TypeValidation, "query.partition"},
		{"read: negative from", "GET", "/v1/topics/t/messages?from=-1", ``, 422, api.TypeValidation, "query.from"},

		{"group: bad name", "PUT", "/v1/topics/t/groups/a%20b", `{}`, 422, api.TypeValidation, "path.group"},
		{"group: unknown topic", "PUT", "/v1/topics/nope/groups/g", `{}`, 404, api.TypeTopicNotFound, "path.topic"},
		{"group: bad ack timeout", "PUT", "/v1/topics/t/groups/g2", `{"ack_timeout": "30"}`, 422, api.TypeValidation, "body.ack_timeout"},
		{"group: ack timeout too short", "PUT", "/v1/topics/t/groups/g2", `{"ack_timeout": "1ms"}`, 422, api.TypeValidation, "body.ack_timeout"},
		{"group: bad backoff", "PUT", "/v1/topics/t/groups/g2", `{"backoff": {"initial": "1s", "max": "1ms"}}`, 422, api.TypeValidation, "body.backoff.max"},
		{"group: unknown start", "PUT", "/v1/topics/t/groups/g2", `{"start": "middle"}`, 422, api.TypeValidation, "body.start"},
		{"group: time without start_at", "PUT", "/v1/topics/t/groups/g2", `{"start": "time"}`, 422, api.TypeValidation, "body.start_at"},
		{"group: bad start_at", "PUT", "/v1/topics/t/groups/g2", `{"start": "time", "start_at": "yesterday"}`, 422, api.TypeValidation, "body.start_at"},
		{"group: webhook without url", "PUT", "/v1/topics/t/groups/g2", `{"webhook": {"url": ""}}`, 422, api.TypeValidation, "body.webhook"},
		{"group: unknown", "GET", "/v1/topics/t/groups/nope", ``, 404, api.TypeGroupNotFound, "path.group"},
		{"groups: unknown topic", "GET", "/v1/topics/nope/groups", ``, 404, api.TypeTopicNotFound, "path.topic"},

		{"receive: unknown group", "POST", "/v1/topics/t/groups/nope/receive", `{}`, 404, api.TypeGroupNotFound, "path.group"},
		{"receive: max over the limit", "POST", "/v1/topics/t/groups/g/receive", `{"max": 1001}`, 422, api.TypeValidation, "body.max"},
		{"receive: bad wait", "POST", "/v1/topics/t/groups/g/receive", `{"wait": "forever"}`, 422, api.TypeValidation, "body.wait"},
		{"receive: wait over the max", "POST", "/v1/topics/t/groups/g/receive", `{"wait": "61s"}`, 422, api.TypeValidation, "body.wait"},
		{"receive: negative visibility", "POST", "/v1/topics/t/groups/g/receive", `{"visibility": "-1s"}`, 422, api.TypeValidation, "body.visibility"},
		{"ack: no receipts", "POST", "/v1/topics/t/groups/g/ack", `{"receipts": []}`, 422, api.TypeValidation, "body.receipts"},
		{"nack: bad receipt", "POST", "/v1/topics/t/groups/g/nack", `{"receipt": "x"}`, 422, api.TypeValidation, "body.receipt"},
		{"nack: stale receipt", "POST", "/v1/topics/t/groups/g/nack", `{"receipt": "0.1.tok"}`, 409, api.TypeReceiptLost, "body.receipt"},
		{"nack: bad delay", "POST", "/v1/topics/t/groups/g/nack", `{"receipt": "0.1.tok", "delay": "soon"}`, 422, api.TypeValidation, "body.delay"},
		{"heartbeat: missing receipt", "POST", "/v1/topics/t/groups/g/heartbeat", `{}`, 422, api.TypeValidation, "receipt"},
		{"heartbeat: bad extend", "POST", "/v1/topics/t/groups/g/heartbeat", `{"receipt": "0.1.tok", "extend": "13h"}`, 422, api.TypeValidation, "body.extend"},
		{"dead letters: bad limit", "GET", "/v1/topics/t/groups/g/dead-letters?limit=0", ``, 422, api.TypeValidation, "query.limit"},
		{"replay: nothing selected", "POST", "/v1/topics/t/groups/g/dead-letters/replay", `{}`, 422, api.TypeValidation, "body.ids"},
		{"purge: ids and all", "POST", "/v1/topics/t/groups/g/dead-letters/purge", `{"ids": [1], "all": true}`, 422, api.TypeValidation, "body.ids"},
		{"trace: id too long", "GET", "/v1/traces/" + strings.Repeat("c", 257), ``, 422, api.TypeValidation, "path.correlation_id"},
		{"publish: NUL in a key", "POST", "/v1/topics/t/messages", `{"messages": [{"key": "a\u0000b"}]}`, 422, api.TypeValidation, "body.messages[0].key"},
		{"publish: NUL in a correlation id", "POST", "/v1/topics/t/messages", `{"messages": [{"payload": 1}, {"correlation_id": "\u0000"}]}`, 422, api.TypeValidation, "body.messages[1].correlation_id"},
		{"heartbeat: NUL in a receipt", "POST", "/v1/topics/t/groups/g/heartbeat", `{"receipt": "0.1.\u0000"}`, 422, api.TypeValidation, "body.receipt"},
		{"nack: NUL in a reason", "POST", "/v1/topics/t/groups/g/nack", `{"receipt": "0.1.t", "reason": "\u0000"}`, 422, api.TypeValidation, "body.reason"},
		// Ids travel in webhook headers: a control character (C0, DEL, C1)
		// is refused at the door, not sent to trip an endpoint's breaker.
		{"publish: CR LF in an id", "POST", "/v1/topics/t/messages", `{"messages": [{"id": "a\r\nb"}]}`, 422, api.TypeValidation, "body.messages[0].id"},
		{"publish: CR LF in a correlation id", "POST", "/v1/topics/t/messages", `{"messages": [{"correlation_id": "x\r\nInjected: 1"}]}`, 422, api.TypeValidation, "body.messages[0].correlation_id"},
		{"publish: tab in a key", "POST", "/v1/topics/t/messages", `{"messages": [{"key": "a\tb"}]}`, 422, api.TypeValidation, "body.messages[0].key"},
		{"publish: DEL in an idempotency key", "POST", "/v1/topics/t/messages", `{"messages": [{"idempotency_key": "a\u007fb"}]}`, 422, api.TypeValidation, "body.messages[0].idempotency_key"},
		{"publish: C1 in an id", "POST", "/v1/topics/t/messages", `{"messages": [{"id": "a\u0085b"}]}`, 422, api.TypeValidation, "body.messages[0].id"},
		{"trace: LF in the correlation id", "GET", "/v1/traces/a%0Ab", ``, 422, api.TypeValidation, "path"},
		{"group: CR in the name", "PUT", "/v1/topics/t/groups/a%0Db", `{}`, 422, api.TypeValidation, "path"},
		{"nack: line breaks in a reason are fine", "POST", "/v1/topics/t/groups/g/nack", `{"receipt": "0.1.tok", "reason": "line one\nline two"}`, 409, api.TypeReceiptLost, "body.receipt"},
		{"trace: not UTF-8", "GET", "/v1/traces/%FF%00", ``, 422, api.TypeValidation, "path"}, // refused for the whole path, before routing
		{"stalled: bad limit", "GET", "/v1/bus/stalled?limit=5000", ``, 422, api.TypeValidation, "query.limit"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var body any
			if c.method == http.MethodPost || c.method == http.MethodPut {
				body = []byte(c.body)
			}
			r := b.do(t, c.method, c.path, body)
			if r.status != c.status {
				t.Fatalf("status %d, want %d: %.300s", r.status, c.status, r.body)
			}
			p := r.problem(t)
			if p.Type != c.typ || p.Detail == "" {
				t.Fatalf("type %q, want %q: %.300s", p.Type, c.typ, r.body)
			}
			if c.field != "" && !namesField(p, c.field) {
				t.Fatalf("no error names %q: %.300s", c.field, r.body)
			}
		})
	}
}

// TestBusReceiveIsLongPoll: a receive may wait longer than the request
// timeout, and a receive beyond the long-poll cap is refused at once. The
// topic is made through the bus, not through a request that the 50 ms
// timeout would race on a busy machine; the second receive is sent once
// the first holds the one long-poll slot (its first claim), not after a
// sleep.
func TestBusReceiveIsLongPoll(t *testing.T) {
	t.Parallel()
	claims := make(chan struct{}, 1)
	b := setup(t, setupOpts{
		apiConfig: func(c *api.Config) { c.RequestTimeout = 50 * time.Millisecond; c.MaxLongPolls = 1 },
		wrapStore: func(d storage.Driver) storage.Driver { return &claimSignal{Driver: d.(*sqlite.Driver), claims: claims} },
	})
	ctx := context.Background()
	if _, _, err := b.bus.PutTopic(ctx, "t", bus.TopicConfig{}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.bus.CreateGroup(ctx, "t", "g", bus.GroupConfig{}, bus.GroupStart{}); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	done := make(chan *response, 1)
	go func() {
		done <- b.do(t, http.MethodPost, "/v1/topics/t/groups/g/receive", map[string]any{"wait": "400ms"})
	}()
	select {
	case <-claims:
	case r := <-done:
		t.Fatalf("the first receive ended before it claimed: %d %s", r.status, r.body)
	case <-time.After(time.Minute):
		t.Fatal("the first receive never claimed")
	}
	// The one long-poll slot is taken: a second receive is refused at once.
	p := b.do(t, http.MethodPost, "/v1/topics/t/groups/g/receive", map[string]any{"wait": "1s"}).problem(t)
	if p.Status != http.StatusServiceUnavailable || p.Type != api.TypeOverloaded {
		t.Fatalf("second receive: %+v", p)
	}
	r := <-done
	wantStatus(t, r, http.StatusOK)
	var l api.DeliveryList
	r.json(t, &l)
	if len(l.Messages) != 0 || time.Since(began) < 400*time.Millisecond {
		t.Fatalf("receive answered %+v after %s", l.Messages, time.Since(began))
	}
}

// claimSignal is the test store, telling claims of deliveries on claims
// (when nobody is waiting there, the signal is dropped).
type claimSignal struct {
	*sqlite.Driver
	claims chan<- struct{}
}

func (s *claimSignal) DeliveryClaim(ctx context.Context, p *storage.DeliveryClaimParams) (*storage.DeliveryClaimResult, error) {
	select {
	case s.claims <- struct{}{}:
	default:
	}
	return s.Driver.DeliveryClaim(ctx, p)
}

// TestBusExpiredClaim: a consumer that never answers loses its claim; the
// message is handed out again with the attempt counted as expired, and the
// group's backlog shows it.
func TestBusExpiredClaim(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.busTopic(t, "t", "g", nil)
	res := b.publish(t, "t", map[string]any{"key": "k", "payload": 1}, map[string]any{"key": "k", "payload": 2})

	// The claim outlasts the backlog check on a busy machine; the receive
	// after it waits for the claim to expire, with a last guard.
	d := b.receive(t, "t", "g", map[string]any{"max": 10, "visibility": "3s"})
	if len(d) != 1 || d[0].ID != res[0].ID {
		t.Fatalf("first receive %+v", d)
	}
	r := b.do(t, http.MethodGet, "/v1/topics/t/groups/g", nil)
	var g api.Group
	r.json(t, &g)
	var pending, inFlight, blocked int
	for _, p := range g.Partitions {
		pending, inFlight, blocked = pending+p.Pending, inFlight+p.InFlight, blocked+p.Blocked
	}
	if pending != 2 || inFlight != 1 || blocked != 1 {
		t.Fatalf("backlog %s", r.body)
	}

	again := b.receive(t, "t", "g", map[string]any{"max": 10, "wait": "60s"})
	if len(again) != 1 || again[0].ID != res[0].ID || again[0].Attempt != 2 || len(again[0].History) != 1 ||
		again[0].History[0].Outcome != "expired" || again[0].Receipt == d[0].Receipt {
		t.Fatalf("after the claim expired: %+v", again)
	}
	r = b.do(t, http.MethodPost, "/v1/topics/t/groups/g/ack", map[string]any{"receipts": []string{d[0].Receipt, again[0].Receipt}})
	var acks api.AckResults
	r.json(t, &acks)
	if acks.Results[0].Status != http.StatusConflict || acks.Results[1].Status != http.StatusOK {
		t.Fatalf("acks %s", r.body)
	}
}
