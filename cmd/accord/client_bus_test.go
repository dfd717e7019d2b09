package main

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/accord-saga/accord/sdk/client"
	"github.com/accord-saga/accord/sdk/sdktest"
)

func TestCLITopics(t *testing.T) {
	t.Parallel()
	s := sdktest.NewServer(t)

	code, out := cli(t, s.URL, "topic", "create", "orders", "--dedup-window", "10m", "--max-deliveries", "3")
	wantCode(t, code, out, 0)
	if !strings.Contains(out, "topic orders created") {
		t.Fatalf("create: %s", out)
	}
	code, out = cli(t, s.URL, "topic", "create", "orders", "--keep-forever", "-o", "json")
	wantCode(t, code, out, 0)
	var tp client.Topic
	if err := json.Unmarshal([]byte(out), &tp); err != nil || tp.Created || !tp.Config.KeepForever || !strings.Contains(out, `"dedup_window": "1h0m0s"`) {
		t.Fatalf("replace -o json: %v\n%s", err, out)
	}
	code, out = cli(t, s.URL, "topic", "create", "bad name")
	wantCode(t, code, out, codeUsage)
	code, out = cli(t, s.URL, "topic", "create", "x", "--dedup-window", "an hour")
	wantCode(t, code, out, codeUsage)

	code, out = cli(t, s.URL, "topic", "list")
	wantCode(t, code, out, 0)
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 2 || !strings.HasPrefix(lines[0], "TOPIC") || !strings.HasPrefix(lines[1], "orders") {
		t.Fatalf("list:\n%s", out)
	}

	code, out = cli(t, s.URL, "topic", "publish", "orders", `{"total": 10}`, "--key", "o-1", "--id", "m-1",
		"--correlation-id", "flow-1", "--header", "type=OrderPlaced", "--idempotency-key", "place-o-1")
	wantCode(t, code, out, 0)
	if !strings.Contains(out, "message m-1 published") {
		t.Fatalf("publish: %s", out)
	}
	code, out = cli(t, s.URL, "topic", "publish", "orders", `{"total": 10}`, "--key", "o-1", "--header", "type=OrderPlaced",
		"--idempotency-key", "place-o-1", "-o", "json")
	wantCode(t, code, out, 0)
	var pub client.Published
	if err := json.Unmarshal([]byte(out), &pub); err != nil || !pub.Duplicate || pub.ID != "m-1" {
		t.Fatalf("publish again: %v\n%s", err, out)
	}
	code, out = cli(t, s.URL, "topic", "publish", "orders", `{"total": 11}`, "--key", "o-1", "--header", "type=OrderPlaced",
		"--idempotency-key", "place-o-1")
	wantCode(t, code, out, codeConflict)
	code, out = cliIn(t, s.URL, `["from", "stdin"]`, "topic", "publish", "orders")
	wantCode(t, code, out, 0)
	code, out = cli(t, s.URL, "topic", "publish", "orders", "not json")
	wantCode(t, code, out, codeUsage)
	code, out = cli(t, s.URL, "topic", "publish", "orders", "1", "--header", "novalue")
	wantCode(t, code, out, codeUsage)
	code, out = cli(t, s.URL, "topic", "publish", "nope", "1")
	wantCode(t, code, out, codeNotFound)

	code, out = cli(t, s.URL, "topic", "get", "orders")
	wantCode(t, code, out, 0)
	if !strings.Contains(out, "retention:      forever") || !strings.Contains(out, "no consumer groups") {
		t.Fatalf("get:\n%s", out)
	}
	code, out = cli(t, s.URL, "topic", "delete", "orders")
	wantCode(t, code, out, 0)
	code, out = cli(t, s.URL, "topic", "get", "orders")
	wantCode(t, code, out, codeNotFound)
}

func TestCLIGroups(t *testing.T) {
	t.Parallel()
	s := sdktest.NewServer(t)
	code, out := cli(t, s.URL, "topic", "create", "orders")
	wantCode(t, code, out, 0)

	code, out = cli(t, s.URL, "group", "create", "orders", "billing", "--start", "beginning", "--ack-timeout", "1m", "--max-deliveries", "3")
	wantCode(t, code, out, 0)
	if !strings.Contains(out, "group billing of topic orders created") {
		t.Fatalf("create: %s", out)
	}
	code, out = cli(t, s.URL, "group", "create", "orders", "billing", "--start", "beginning", "--ack-timeout", "1m", "--max-deliveries", "3")
	wantCode(t, code, out, 0)
	if !strings.Contains(out, "unchanged") {
		t.Fatalf("create again: %s", out)
	}
	code, out = cli(t, s.URL, "group", "create", "orders", "billing", "--ack-timeout", "2m")
	wantCode(t, code, out, codeConflict)
	code, out = cli(t, s.URL, "group", "create", "orders", "late", "--start-at", "2024-05-01T12:00:00Z", "-o", "json")
	wantCode(t, code, out, 0)
	code, out = cli(t, s.URL, "group", "create", "orders", "bad", "--start-at", "yesterday")
	wantCode(t, code, out, codeUsage)
	code, out = cli(t, s.URL, "group", "create", "orders", "bad", "--start", "middle")
	wantCode(t, code, out, codeUsage)
	code, out = cli(t, s.URL, "group", "create", "nope", "g")
	wantCode(t, code, out, codeNotFound)

	code, out = cli(t, s.URL, "group", "create", "orders", "starter", "--start-saga", "order", "--start-saga-version", "2")
	wantCode(t, code, out, 0)
	code, out = cli(t, s.URL, "group", "create", "orders", "bad", "--start-saga-version", "2")
	wantCode(t, code, out, codeUsage)
	code, out = cli(t, s.URL, "group", "create", "orders", "bad", "--webhook", "http://127.0.0.1:1/hook")
	wantCode(t, code, out, codeUsage) // this server pushes to no webhook

	code, out = cli(t, s.URL, "group", "list", "orders")
	wantCode(t, code, out, 0)
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 4 || !strings.HasPrefix(lines[0], "GROUP") || !strings.Contains(out, "pull") ||
		!strings.Contains(out, "starts saga order") {
		t.Fatalf("list:\n%s", out)
	}
	if _, err := s.Client.Publish(context.Background(), "orders", client.Message{Key: "o-1", Payload: 1}); err != nil {
		t.Fatal(err)
	}
	code, out = cli(t, s.URL, "group", "get", "orders", "billing")
	wantCode(t, code, out, 0)
	for _, want := range []string{"ack timeout:    1m0s", "max deliveries: 3", "PARTITION", "PENDING"} {
		if !strings.Contains(out, want) {
			t.Fatalf("get lacks %q:\n%s", want, out)
		}
	}
	code, out = cli(t, s.URL, "group", "get", "orders", "billing", "-o", "json")
	wantCode(t, code, out, 0)
	var g client.Group
	if err := json.Unmarshal([]byte(out), &g); err != nil || g.Effective.AckTimeout != time.Minute || len(g.Partitions) == 0 {
		t.Fatalf("get -o json: %v\n%s", err, out)
	}
	code, out = cli(t, s.URL, "group", "delete", "orders", "billing")
	wantCode(t, code, out, 0)
	code, out = cli(t, s.URL, "group", "get", "orders", "billing")
	wantCode(t, code, out, codeNotFound)
	code, out = cli(t, s.URL, "group", "get", "orders")
	wantCode(t, code, out, codeUsage)
}

func TestCLIDeadLetters(t *testing.T) {
	t.Parallel()
	s := sdktest.NewServer(t)
	ctx := context.Background()
	if _, err := s.Client.PutTopic(ctx, "jobs", client.TopicConfig{}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Client.CreateGroup(ctx, "jobs", "w", client.GroupConfig{}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{`"a"`, `"b"`} {
		if _, err := s.Client.Publish(ctx, "jobs", client.Message{Payload: json.RawMessage(p)}); err != nil {
			t.Fatal(err)
		}
	}
	deadLetter := func(reason string) {
		ds, err := s.Client.Receive(ctx, "jobs", "w", client.ReceiveOptions{Max: 10, Wait: 5 * time.Second})
		if err != nil || len(ds) == 0 {
			t.Fatalf("receive: %v, %v", ds, err)
		}
		for _, d := range ds {
			if err := s.Client.Nack(ctx, "jobs", "w", d.Receipt, client.NackOptions{Reason: reason, DeadLetter: true}); err != nil {
				t.Fatal(err)
			}
		}
	}
	deadLetter("poison")
	code, out := cli(t, s.URL, "dlq", "list", "jobs", "w", "-o", "json")
	wantCode(t, code, out, 0)
	var dl []client.DeadLetter
	if err := json.Unmarshal([]byte(out), &dl); err != nil || len(dl) != 2 || dl[0].Reason != "poison" {
		t.Fatalf("list -o json: %v\n%s", err, out)
	}
	code, out = cli(t, s.URL, "dlq", "list", "jobs", "w")
	wantCode(t, code, out, 0)
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 3 || !strings.HasPrefix(lines[0], "ID") || !strings.Contains(out, "poison") {
		t.Fatalf("list:\n%s", out)
	}
	code, out = cli(t, s.URL, "dlq", "replay", "jobs", "w")
	wantCode(t, code, out, codeUsage)
	code, out = cli(t, s.URL, "dlq", "replay", "jobs", "w", "--all", "--id", "1")
	wantCode(t, code, out, codeUsage)
	code, out = cli(t, s.URL, "dlq", "replay", "jobs", "w", "--id", strconv.FormatInt(dl[0].ID, 10))
	wantCode(t, code, out, 0)
	if !strings.Contains(out, "1 dead letters replayed") {
		t.Fatalf("replay: %s", out)
	}
	deadLetter("again")
	code, out = cli(t, s.URL, "dlq", "purge", "jobs", "w", "--all")
	wantCode(t, code, out, 0)
	if !strings.Contains(out, "2 dead letters purged") {
		t.Fatalf("purge: %s", out)
	}
	code, out = cli(t, s.URL, "dlq", "list", "nope", "w")
	wantCode(t, code, out, codeNotFound)
}

func TestCLITraceAndStalled(t *testing.T) {
	t.Parallel()
	s := sdktest.NewServer(t)
	ctx := context.Background()
	for _, tp := range []string{"orders", "payments"} {
		if _, err := s.Client.PutTopic(ctx, tp, client.TopicConfig{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, g := range [][2]string{{"orders", "billing"}, {"orders", "shipping"}, {"payments", "ledger"}} {
		if _, err := s.Client.CreateGroup(ctx, g[0], g[1], client.GroupConfig{}); err != nil {
			t.Fatal(err)
		}
	}
	code, out := cli(t, s.URL, "topic", "publish", "orders", "1", "--id", "placed-1", "--key", "o-1", "--correlation-id", "flow-9")
	wantCode(t, code, out, 0)
	code, out = cli(t, s.URL, "topic", "publish", "payments", "2", "--id", "paid-1", "--correlation-id", "flow-9")
	wantCode(t, code, out, 0)
	ds, err := s.Client.Receive(ctx, "orders", "billing", client.ReceiveOptions{Wait: 5 * time.Second})
	if err != nil || len(ds) != 1 {
		t.Fatalf("receive: %v, %v", ds, err)
	}
	if _, err := s.Client.Ack(ctx, "orders", "billing", ds[0].Receipt); err != nil {
		t.Fatal(err)
	}

	code, out = cli(t, s.URL, "trace", "flow-9")
	wantCode(t, code, out, 0)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "MESSAGE") {
		t.Fatalf("trace:\n%s", out)
	}
	for i, want := range [][]string{{"placed-1", "orders", "o-1", "billing", "done", "1"}, {"shipping", "pending", "0"}, {"paid-1", "payments", "-", "ledger", "pending"}} {
		f := strings.Fields(lines[i+1])
		for _, w := range want {
			if !strings.Contains(strings.Join(f, " "), w) {
				t.Fatalf("trace line %d lacks %q:\n%s", i+1, w, out)
			}
		}
	}
	code, out = cli(t, s.URL, "trace", "flow-9", "-o", "json")
	wantCode(t, code, out, 0)
	var tr client.Trace
	if err := json.Unmarshal([]byte(out), &tr); err != nil || len(tr.Messages) != 2 || tr.Messages[1].ID != "paid-1" {
		t.Fatalf("trace -o json: %v\n%s", err, out)
	}
	code, out = cli(t, s.URL, "trace", "no-such-flow")
	wantCode(t, code, out, codeNotFound)
	code, out = cli(t, s.URL, "trace")
	wantCode(t, code, out, codeUsage)

	code, out = cli(t, s.URL, "stalled")
	wantCode(t, code, out, 0)
	if !strings.Contains(out, "no message has waited longer than 5m0s") {
		t.Fatalf("stalled: %s", out)
	}
	code, out = cli(t, s.URL, "stalled", "-o", "json")
	wantCode(t, code, out, 0)
	var st client.Stalled
	if err := json.Unmarshal([]byte(out), &st); err != nil || st.StallAfter != "5m0s" {
		t.Fatalf("stalled -o json: %v\n%s", err, out)
	}
	code, out = cli(t, s.URL, "stalled", "--limit", "0")
	wantCode(t, code, out, codeUsage)
	code, out = cli(t, s.URL, "stalled", "--limit", "x")
	wantCode(t, code, out, codeUsage)
}
