package api_test

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/accord-saga/accord/internal/bus"
)

// The fuzz targets drive the real handlers, engine and SQLite store with
// arbitrary requests. Whatever comes in, the answer is never a 5xx, and
// every error is a problem document. Their seeds run with go test; fuzz
// with, for example, go test -fuzz FuzzStartSaga ./internal/api.

// fuzzRequest sends one request in process. A request whose own deadline
// passed (a long poll the fuzzer asked for) may end in 503: that is the
// client leaving, not the server failing.
func fuzzRequest(t *testing.T, h http.Handler, req *http.Request, timeout time.Duration) {
	ctx, cancel := context.WithTimeout(req.Context(), timeout)
	defer cancel()
	req = req.WithContext(ctx)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code >= 500 {
		if rec.Code == http.StatusServiceUnavailable && ctx.Err() != nil {
			return
		}
		t.Fatalf("%s %s: status %d: %s", req.Method, req.URL, rec.Code, rec.Body)
	}
	if rec.Code >= 400 && rec.Header().Get("Content-Type") != "application/problem+json" {
		t.Fatalf("%s %s: status %d without a problem: %q %s", req.Method, req.URL, rec.Code, rec.Header().Get("Content-Type"), rec.Body)
	}
}

func newRequest(method, path string, body []byte, headers ...string) *http.Request {
	req := httptest.NewRequest(method, path, bytes.NewReader(body))
	for i := 0; i+1 < len(headers); i += 2 {
		if headers[i+1] != "" {
			req.Header[headers[i]] = []string{headers[i+1]}
		}
	}
	return req
}

func fuzzBundle(f *testing.F) *testBundle {
	b := setup(f)
	if _, _, err := b.eng.RegisterDefinition(context.Background(), []byte(orderDef)); err != nil {
		f.Fatal(err)
	}
	return b
}

func FuzzStartSaga(f *testing.F) {
	b := fuzzBundle(f)
	for _, seed := range []struct{ body, key, ct string }{
		{`{"definition": "order", "input": {"total": 10}}`, "", "application/json"},
		{`{"definition": "order", "version": 1, "input": [1, 2]}`, "k-1", "application/json"},
		{`{"definition": "order", "input": null}`, "k-1", ""},
		{`{"definition": "order", "version": 99}`, "", "application/json"},
		{`{"definition": "", "input": {}}`, "", "application/json"},
		{`{"definition": "order", "input": "\u0000"}`, "", "application/json"},
		{`{"definition": "order", "version": 1e400}`, "", "application/json"},
		{`{"definition": "order", "version": 2147483648}`, "", "application/json"},
		{`{"definition": ["order"]}`, "", "application/json"},
		{`[]`, "", "application/json"},
		{`null`, "", "application/json"},
		{`{"definition": "order"`, "", "application/json"},
		{`definition: order`, "", "application/yaml"},
		{``, "", "application/json"},
		{`{"definition": "order"}`, strings.Repeat("k", 600), "application/json; charset=utf-8"},
	} {
		f.Add([]byte(seed.body), seed.key, seed.ct)
	}
	f.Fuzz(func(t *testing.T, body []byte, key, contentType string) {
		fuzzRequest(t, b.handler, newRequest(http.MethodPost, "/v1/sagas", body, "Content-Type", contentType, "Idempotency-Key", key), 5*time.Second)
	})
}

func FuzzRegisterDefinition(f *testing.F) {
	b := fuzzBundle(f)
	for _, seed := range []struct{ body, ct, ifMatch string }{
		{orderDef, "application/yaml", ""},
		{orderDef, "text/yaml", `"nope"`},
		{orderDef, "", "*"},
		{strings.Replace(orderDef, "version: 1", "version: 2", 1), "application/yaml", `W/"x", "y"`},
		{`{"name": "j", "version": 1, "steps": [{"name": "a", "kind": "pivot", "action": {"queue": "q"}}]}`, "application/json", ""},
		{`{"name": "j", "version": 1, "steps": [{"name": "a", "after": ["a"], "action": {"queue": "q"}}]}`, "application/json", ""},
		{"name: x\nversion: 1\nsteps:\n  - &a {name: a}\n  - *a\n", "application/yaml", ""},
		{"name: x\nversion: 1\nsteps: !!binary AAAA\n", "application/yaml", ""},
		{"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[", "application/yaml", ""},
		{"{}", "application/json", ""},
		{"name: x", "text/plain", ""},
		{"name: x", "multipart/form-data; boundary", ""},
		{"", "", ""},
	} {
		f.Add([]byte(seed.body), seed.ct, seed.ifMatch)
	}
	f.Fuzz(func(t *testing.T, body []byte, contentType, ifMatch string) {
		fuzzRequest(t, b.handler, newRequest(http.MethodPost, "/v1/definitions", body, "Content-Type", contentType, "If-Match", ifMatch), 5*time.Second)
	})
}

func FuzzPoll(f *testing.F) {
	b := fuzzBundle(f)
	for _, seed := range []struct{ queue, body string }{
		{"orders", `{"max": 3, "visibility": "5s", "wait_ms": 10}`},
		{"orders", `{"max": 1000, "visibility_ms": 3600000}`},
		{"orders", `{"visibility": "1h1s"}`},
		{"orders", `{"wait": "100ms", "wait_ms": 100}`},
		{"orders", `{"visibility": "9223372036854775807ns"}`},
		{"orders", `{"visibility_ms": 9223372036854775807}`},
		{"_push", `{}`},
		{"", `{}`},
		{strings.Repeat("q", 600), `{}`},
		{"a/b", ``},
		{"orders", `{"max": -1}`},
		{"orders", `{"max": 1.5}`},
		{"orders", `{"max": "1"}`},
	} {
		f.Add(seed.queue, []byte(seed.body))
	}
	f.Fuzz(func(t *testing.T, queue string, body []byte) {
		path := "/v1/queues/" + url.PathEscape(queue) + "/tasks:poll"
		fuzzRequest(t, b.handler, newRequest(http.MethodPost, path, body, "Content-Type", "application/json"), 200*time.Millisecond)
	})
}

func FuzzCompleteTask(f *testing.F) {
	b := fuzzBundle(f)
	for _, seed := range []struct{ id, op, body string }{
		{"s/order/action/1", "complete", `{"claim_token": "c", "outcome": "success", "output": {"id": 1}}`},
		{"s/order/action/1", "complete", `{"claim_token": "c", "outcome": "failure", "error": {"code": "x", "message": "y"}}`},
		{"s/order/action/1", "complete", `{"claim_token": "c", "outcome": "retryable", "output": 1e999}`},
		{"", "complete", `{"claim_token": "c", "outcome": "success"}`},
		{strings.Repeat("t", 600), "complete", `{"claim_token": "c", "outcome": "success"}`},
		{"t", "heartbeat", `{"claim_token": "c", "visibility": "10s"}`},
		{"t", "heartbeat", `{"claim_token": "c", "visibility_ms": 0}`},
		{"t", "heartbeat", `{"claim_token": ""}`},
		{"t", "batch", `{"results": [{"task_id": "t", "claim_token": "c", "outcome": "success"}]}`},
		{"t", "batch", `{"results": [{"task_id": "", "claim_token": "c", "outcome": "success"}, {}]}`},
		{"t", "batch", `{"results": null}`},
	} {
		f.Add(seed.id, seed.op, []byte(seed.body))
	}
	f.Fuzz(func(t *testing.T, id, op string, body []byte) {
		path := "/v1/tasks:complete"
		switch op {
		case "complete", "heartbeat":
			path = "/v1/tasks/" + url.PathEscape(id) + "/" + op
		}
		fuzzRequest(t, b.handler, newRequest(http.MethodPost, path, body, "Content-Type", "application/json"), 5*time.Second)
	})
}

func FuzzListSagasQuery(f *testing.F) {
	b := fuzzBundle(f)
	for _, q := range []string{
		"", "limit=1", "limit=500&status=running&status=completed,cancelled", "definition=order&created_after=2024-01-01T00:00:00Z",
		"created_before=2024-01-01T00:00:00.123456789%2B02:00", "cursor=czEAMTcwMDAwMDAwMDAwMDAwMDAwMDAAYWJj",
		"cursor=czEAMTcwMAA", "cursor=" + strings.Repeat("A", 2000), "limit=0", "limit=99999999999999999999",
		"status=", "status=,,,", "created_after=0000-01-01T00:00:00Z", "%zz", "limit=1&limit=2",
	} {
		f.Add("sagas", q)
		f.Add("definitions", q)
		f.Add("events", q)
		f.Add("wait", q)
	}
	f.Add("wait", "timeout=1ns")
	f.Add("wait", "timeout=60s")
	f.Add("events", "cursor=ZTEAMTIz")
	f.Fuzz(func(t *testing.T, list, query string) {
		path := "/v1/sagas"
		switch list {
		case "definitions":
			path = "/v1/definitions"
		case "events":
			path = "/v1/sagas/no-such-saga/events"
		case "wait":
			path = "/v1/sagas/no-such-saga/wait"
		}
		req := httptest.NewRequest(http.MethodGet, path, nil)
		req.URL.RawQuery = query
		fuzzRequest(t, b.handler, req, 5*time.Second)
	})
}

func FuzzCancelSaga(f *testing.F) {
	b := fuzzBundle(f)
	for _, seed := range []struct{ id, body string }{
		{"no-such-saga", `{"reason": "r"}`},
		{"no-such-saga", ``},
		{"", `{}`},
		{strings.Repeat("s", 600), `{"reason": 5}`},
	} {
		f.Add(seed.id, []byte(seed.body), false)
		f.Add(seed.id, []byte(seed.body), true)
	}
	f.Fuzz(func(t *testing.T, id string, body []byte, retry bool) {
		op := "cancel"
		if retry {
			op = "retry"
		}
		path := "/v1/sagas/" + url.PathEscape(id) + "/" + op
		fuzzRequest(t, b.handler, newRequest(http.MethodPost, path, body, "Content-Type", "application/json"), 5*time.Second)
	})
}

// busFuzzBundle serves topic "t" with group "g" (and one message in it, so
// that receives and acks have something to claim).
func busFuzzBundle(f *testing.F) *testBundle {
	b := fuzzBundle(f)
	ctx := context.Background()
	if _, _, err := b.bus.PutTopic(ctx, "t", bus.TopicConfig{}); err != nil {
		f.Fatal(err)
	}
	if _, _, err := b.bus.CreateGroup(ctx, "t", "g", bus.GroupConfig{}, bus.GroupStart{}); err != nil {
		f.Fatal(err)
	}
	if _, err := b.bus.Publish(ctx, "t", []bus.Message{{Key: "k", Payload: []byte(`{"n":1}`)}}); err != nil {
		f.Fatal(err)
	}
	return b
}

func FuzzBusPublish(f *testing.F) {
	b := busFuzzBundle(f)
	for _, seed := range []struct{ topic, body string }{
		{"t", `{"messages": [{"key": "k", "payload": {"n": 2}, "headers": {"type": "x"}, "correlation_id": "c"}]}`},
		{"t", `{"messages": [{"idempotency_key": "i", "payload": 1}, {"idempotency_key": "i", "payload": 2}]}`},
		{"t", `{"messages": [{"key": "k", "tombstone": true}, {"key": "k", "tombstone": true, "payload": 1}]}`},
		{"t", `{"messages": [{"ttl": "1s"}, {"ttl": "-1s"}, {"ttl": "9999999h"}, {"ttl": "x"}]}`},
		{"t", `{"messages": [{"id": "", "payload": null}]}`},
		{"t", `{"messages": [{"headers": {"": "v"}}]}`},
		{"t", `{"messages": []}`},
		{"t", `{"messages": null}`},
		{"t", `{"messages": [{"payload": 1e999}]}`},
		{"t", `[]`},
		{"no-such", `{"messages": [{"payload": 1}]}`},
		{"", `{"messages": [{"payload": 1}]}`},
		{"-x", `{"messages": [{"payload": 1}]}`},
		{strings.Repeat("t", 200), `{"messages": [{"payload": 1}]}`},
	} {
		f.Add(seed.topic, []byte(seed.body))
	}
	f.Fuzz(func(t *testing.T, topic string, body []byte) {
		path := "/v1/topics/" + url.PathEscape(topic) + "/messages"
		fuzzRequest(t, b.handler, newRequest(http.MethodPost, path, body, "Content-Type", "application/json"), 5*time.Second)
	})
}

func FuzzBusReceive(f *testing.F) {
	b := busFuzzBundle(f)
	for _, seed := range []struct{ group, body string }{
		{"g", `{"max": 3, "wait": "10ms", "visibility": "1s"}`},
		{"g", `{"max": 1000, "visibility": "12h"}`},
		{"g", `{"visibility": "12h1s"}`},
		{"g", `{"wait": "9223372036854775807ns"}`},
		{"g", `{"max": 0}`},
		{"g", `{"max": -1}`},
		{"g", `{"max": 1.5}`},
		{"g", ``},
		{"g", `null`},
		{"nope", `{}`},
		{"", `{}`},
		{strings.Repeat("g", 300), `{}`},
	} {
		f.Add(seed.group, []byte(seed.body))
	}
	f.Fuzz(func(t *testing.T, group string, body []byte) {
		path := "/v1/topics/t/groups/" + url.PathEscape(group) + "/receive"
		fuzzRequest(t, b.handler, newRequest(http.MethodPost, path, body, "Content-Type", "application/json"), 200*time.Millisecond)
	})
}

func FuzzBusAck(f *testing.F) {
	b := busFuzzBundle(f)
	for _, seed := range []struct{ op, body string }{
		{"ack", `{"receipts": ["0.1.tok", "x", "", "1.99999999999999999999.t", "-1.1.t", "3.1."]}`},
		{"ack", `{"receipts": []}`},
		{"ack", `{"receipts": [1]}`},
		{"nack", `{"receipt": "0.1.tok", "reason": "r", "delay": "1s"}`},
		{"nack", `{"receipt": "0.1.tok", "dead_letter": true}`},
		{"nack", `{"receipt": "0.1.tok", "delay": "-1s"}`},
		{"nack", `{"receipt": "0.1.tok", "delay": "13h"}`},
		{"nack", `{"receipt": "."}`},
		{"heartbeat", `{"receipt": "0.1.tok", "extend": "1m"}`},
		{"heartbeat", `{"receipt": "0.1.tok", "extend": "0s"}`},
		{"heartbeat", `{"receipt": ""}`},
		{"replay", `{"ids": [1, 2]}`},
		{"replay", `{"all": true}`},
		{"purge", `{"ids": [-1]}`},
		{"purge", `{}`},
	} {
		f.Add(seed.op, []byte(seed.body))
	}
	f.Fuzz(func(t *testing.T, op string, body []byte) {
		path := "/v1/topics/t/groups/g/"
		switch op {
		case "replay", "purge":
			path += "dead-letters/" + op
		default:
			path += url.PathEscape(op)
		}
		fuzzRequest(t, b.handler, newRequest(http.MethodPost, path, body, "Content-Type", "application/json"), 5*time.Second)
	})
}

func FuzzBusGroup(f *testing.F) {
	b := busFuzzBundle(f)
	for _, seed := range []struct{ group, body string }{
		{"g2", `{"start": "beginning", "max_deliveries": 3, "ack_timeout": "10s", "backoff": {"initial": "1s", "max": "1m"}}`},
		{"g2", `{"start": "time", "start_at": "2024-01-01T00:00:00Z"}`},
		{"g2", `{"start": "time"}`},
		{"g2", `{"start": "time", "start_at": "0000-01-01T00:00:00Z"}`},
		{"g2", `{"webhook": {"url": "http://127.0.0.1:1/hook", "timeout": "1s", "concurrency": 2}}`},
		{"g2", `{"webhook": {"url": "::"}, "start_saga": {"definition": "order"}}`},
		{"g2", `{"start_saga": {"definition": "order", "version": -1}}`},
		{"g2", `{"ack_timeout": "1ns"}`},
		{"g2", `{"backoff": {"initial": "1h", "max": "1s"}}`},
		{"g2", `{"max_deliveries": 100000}`},
		{"g", `{"ack_timeout": "1m"}`},
		{"", `{}`},
		{".x", `{}`},
	} {
		f.Add(seed.group, []byte(seed.body), false)
	}
	f.Add("g", []byte(nil), true)
	f.Fuzz(func(t *testing.T, group string, body []byte, del bool) {
		method := http.MethodPut
		if del {
			method = http.MethodDelete
		}
		path := "/v1/topics/t/groups/" + url.PathEscape(group)
		fuzzRequest(t, b.handler, newRequest(method, path, body, "Content-Type", "application/json"), 5*time.Second)
	})
}

func FuzzBusTopic(f *testing.F) {
	b := busFuzzBundle(f)
	for _, seed := range []struct{ topic, body string }{
		{"t2", `{"default_ttl": "1h", "retention_age": "24h", "retention_bytes": 1000, "compact": true, "tombstone_retention": "1h", "dedup_window": "5m", "max_deliveries": 3}`},
		{"t2", `{"keep_forever": true}`},
		{"t2", `{"keep_forever": true, "retention_age": "1h"}`},
		{"t2", `{"retention_bytes": -1}`},
		{"t2", `{"dedup_window": "8761h"}`},
		{"t2", `{"default_ttl": 5}`},
		{"t2", ``},
		{"t", `{}`},
		{"", `{}`},
		{strings.Repeat("t", 129), `{}`},
	} {
		f.Add(seed.topic, []byte(seed.body))
	}
	f.Fuzz(func(t *testing.T, topic string, body []byte) {
		path := "/v1/topics/" + url.PathEscape(topic)
		fuzzRequest(t, b.handler, newRequest(http.MethodPut, path, body, "Content-Type", "application/json"), 5*time.Second)
	})
}
