package client_test

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/accord-saga/accord/sdk/client"
	"github.com/accord-saga/accord/sdk/sdktest"
)

func TestBusTopicsAndGroups(t *testing.T) {
	t.Parallel()
	s := sdktest.NewServer(t)
	c, ctx := s.Client, ctxT(t)

	top, err := c.PutTopic(ctx, "orders", client.TopicConfig{DedupWindow: 10 * time.Minute, MaxDeliveries: 3})
	if err != nil || !top.Created || top.Config.DedupWindow != 10*time.Minute || top.Effective.RetentionAge != 7*24*time.Hour {
		t.Fatalf("put topic: %+v, %v", top, err)
	}
	if top, err := c.PutTopic(ctx, "orders", client.TopicConfig{KeepForever: true}); err != nil || top.Created || !top.Effective.KeepForever {
		t.Fatalf("replace topic: %+v, %v", top, err)
	}
	if got, err := c.GetTopic(ctx, "orders"); err != nil || got.Name != "orders" || !got.Config.KeepForever {
		t.Fatalf("get topic: %+v, %v", got, err)
	}
	if _, err := c.GetTopic(ctx, "nope"); !client.IsNotFound(err) || !hasProblem(err, client.ProblemTopicNotFound) {
		t.Fatalf("unknown topic: %v", err)
	}
	if _, err := c.PutTopic(ctx, "bad name", client.TopicConfig{}); !client.IsInvalid(err) {
		t.Fatalf("bad name: %v", err)
	}

	cfg := client.GroupConfig{Start: client.StartBeginning, AckTimeout: time.Minute, BackoffInitial: 10 * time.Millisecond}
	g, err := c.CreateGroup(ctx, "orders", "billing", cfg)
	if err != nil || !g.Created || g.Config.AckTimeout != time.Minute || g.Effective.MaxDeliveries != 5 || g.Effective.BackoffMax != 5*time.Minute {
		t.Fatalf("create group: %+v, %v", g, err)
	}
	if g, err := c.CreateGroup(ctx, "orders", "billing", cfg); err != nil || g.Created {
		t.Fatalf("create again: %+v, %v", g, err)
	}
	_, err = c.CreateGroup(ctx, "orders", "billing", client.GroupConfig{AckTimeout: 2 * time.Minute})
	if !client.IsConflict(err) || !hasProblem(err, client.ProblemGroupExists) {
		t.Fatalf("other configuration: %v", err)
	}
	if _, err := c.CreateGroup(ctx, "orders", "g2", client.GroupConfig{AckTimeout: time.Nanosecond}); !client.IsInvalid(err) {
		t.Fatalf("bad ack timeout: %v", err)
	}
	if gs, err := c.ListGroups(ctx, "orders"); err != nil || len(gs) != 1 || gs[0].Name != "billing" {
		t.Fatalf("list groups: %+v, %v", gs, err)
	}
	if g, err := c.GetGroup(ctx, "orders", "billing"); err != nil || g.Effective.AckTimeout != time.Minute {
		t.Fatalf("get group: %+v, %v", g, err)
	}
	if err := c.DeleteGroup(ctx, "orders", "billing"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetGroup(ctx, "orders", "billing"); !client.IsNotFound(err) || !hasProblem(err, client.ProblemGroupNotFound) {
		t.Fatalf("deleted group: %v", err)
	}
	if ts, err := c.ListTopics(ctx); err != nil || len(ts) != 1 {
		t.Fatalf("list topics: %+v, %v", ts, err)
	}
	if err := c.DeleteTopic(ctx, "orders"); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteTopic(ctx, "orders"); !client.IsNotFound(err) {
		t.Fatalf("delete again: %v", err)
	}
}

func hasProblem(err error, typ string) bool {
	var e *client.Error
	return errors.As(err, &e) && e.Type == typ
}

func TestBusPublishAndConsume(t *testing.T) {
	t.Parallel()
	s := sdktest.NewServer(t)
	c, ctx := s.Client, ctxT(t)
	if _, err := c.PutTopic(ctx, "jobs", client.TopicConfig{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateGroup(ctx, "jobs", "w", client.GroupConfig{MaxDeliveries: 2}); err != nil {
		t.Fatal(err)
	}

	// A waiting receive wakes on the publish.
	type received struct {
		ds  []client.Delivery
		err error
	}
	got := make(chan received, 1)
	go func() {
		ds, err := c.Receive(ctx, "jobs", "w", client.ReceiveOptions{Max: 10, Wait: 10 * time.Second})
		got <- received{ds, err}
	}()
	time.Sleep(50 * time.Millisecond)
	pub, err := c.Publish(ctx, "jobs",
		client.Message{Key: "a", Payload: map[string]int{"n": 1}, Headers: map[string]string{"type": "Job"}, CorrelationID: "flow-1"},
		client.Message{Key: "b", Payload: json.RawMessage(`"two"`), IdempotencyKey: "job-2"})
	if err != nil || len(pub) != 2 || pub[0].ID == "" || pub[1].Duplicate {
		t.Fatalf("publish: %+v, %v", pub, err)
	}
	r := <-got
	if r.err != nil || len(r.ds) == 0 {
		t.Fatalf("receive: %+v, %v", r.ds, r.err)
	}
	ds := r.ds
	if len(ds) < 2 {
		more, err := c.Receive(ctx, "jobs", "w", client.ReceiveOptions{Max: 10, Wait: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		ds = append(ds, more...)
	}
	byKey := map[string]client.Delivery{}
	for _, d := range ds {
		byKey[d.Key] = d
	}
	a, b := byKey["a"], byKey["b"]
	if a.ID != pub[0].ID || string(a.Payload) != `{"n":1}` || a.Headers["type"] != "Job" || a.CorrelationID != "flow-1" || a.Attempt != 1 || a.Receipt == "" {
		t.Fatalf("delivery a: %+v", a)
	}
	if string(b.Payload) != `"two"` || b.CorrelationID != b.ID {
		t.Fatalf("delivery b: %+v", b)
	}

	// The same idempotency key: the first message's id; other content: 409.
	dup, err := c.Publish(ctx, "jobs", client.Message{Key: "b", Payload: json.RawMessage(`"two"`), IdempotencyKey: "job-2"})
	if err != nil || !dup[0].Duplicate || dup[0].ID != pub[1].ID {
		t.Fatalf("duplicate: %+v, %v", dup, err)
	}
	_, err = c.Publish(ctx, "jobs", client.Message{Key: "b", Payload: "other", IdempotencyKey: "job-2"})
	if !client.IsIdempotencyMismatch(err) || !client.IsConflict(err) {
		t.Fatalf("mismatch: %v", err)
	}
	if _, err := c.Publish(ctx, "jobs", client.Message{Payload: func() {}}); err == nil {
		t.Fatal("a payload that does not marshal was sent")
	}
	if _, err := c.Publish(ctx, "nope", client.Message{Payload: 1}); !client.IsNotFound(err) {
		t.Fatalf("unknown topic: %v", err)
	}

	if err := c.HeartbeatMessage(ctx, "jobs", "w", a.Receipt, time.Minute); err != nil {
		t.Fatalf("heartbeat: %v", err)
	}
	errs, err := c.Ack(ctx, "jobs", "w", a.Receipt, a.Receipt, "garbage")
	if err != nil || len(errs) != 3 || errs[0] != nil || !client.IsReceiptLost(errs[1]) || !errors.Is(errs[1], client.ErrReceiptLost) || !client.IsInvalid(errs[2]) {
		t.Fatalf("ack: %v, %v", errs, err)
	}
	if err := c.HeartbeatMessage(ctx, "jobs", "w", a.Receipt, 0); !client.IsReceiptLost(err) {
		t.Fatalf("heartbeat after ack: %v", err)
	}
	if err := c.Nack(ctx, "jobs", "w", a.Receipt, client.NackOptions{}); !errors.Is(err, client.ErrReceiptLost) {
		t.Fatalf("nack after ack: %v", err)
	}

	// Nack: handed out again with attempt 2 and the history; nacked again,
	// it is dead-lettered on the next try (max deliveries 2).
	if err := c.Nack(ctx, "jobs", "w", b.Receipt, client.NackOptions{Reason: "busy", Delay: client.RedeliverNow}); err != nil {
		t.Fatal(err)
	}
	again, err := c.Receive(ctx, "jobs", "w", client.ReceiveOptions{Wait: 5 * time.Second, Visibility: time.Minute})
	if err != nil || len(again) != 1 || again[0].ID != b.ID || again[0].Attempt != 2 || len(again[0].History) != 1 ||
		again[0].History[0].Outcome != "nack" || again[0].History[0].Reason != "busy" {
		t.Fatalf("redelivery: %+v, %v", again, err)
	}
	if err := c.Nack(ctx, "jobs", "w", again[0].Receipt, client.NackOptions{Reason: "still busy", Delay: client.RedeliverNow}); err != nil {
		t.Fatal(err)
	}
	if ds, err := c.Receive(ctx, "jobs", "w", client.ReceiveOptions{Wait: 100 * time.Millisecond}); err != nil || len(ds) != 0 {
		t.Fatalf("handed out after max deliveries: %+v, %v", ds, err)
	}
	page, err := c.DeadLetters(ctx, "jobs", "w", client.DeadLetterOptions{})
	if err != nil || len(page.DeadLetters) != 1 || page.DeadLetters[0].Message.ID != b.ID || page.DeadLetters[0].Attempts != 2 ||
		len(page.DeadLetters[0].History) != 2 || page.NextAfter != 0 {
		t.Fatalf("dead letters: %+v, %v", page, err)
	}
	if n, err := c.ReplayDeadLetters(ctx, "jobs", "w", page.DeadLetters[0].ID); err != nil || n != 1 {
		t.Fatalf("replay: %d, %v", n, err)
	}
	replayed, err := c.Receive(ctx, "jobs", "w", client.ReceiveOptions{Wait: 5 * time.Second})
	if err != nil || len(replayed) != 1 || replayed[0].ID != b.ID {
		t.Fatalf("replayed: %+v, %v", replayed, err)
	}
	if err := c.Nack(ctx, "jobs", "w", replayed[0].Receipt, client.NackOptions{Reason: "poison", DeadLetter: true}); err != nil {
		t.Fatal(err)
	}
	if n, err := c.PurgeDeadLetters(ctx, "jobs", "w"); err != nil || n != 1 {
		t.Fatalf("purge all: %d, %v", n, err)
	}

	tr, err := c.Trace(ctx, "flow-1")
	if err != nil || len(tr.Messages) != 1 || tr.Messages[0].ID != pub[0].ID || len(tr.Messages[0].Groups) != 1 || tr.Messages[0].Groups[0].Status != "done" {
		t.Fatalf("trace: %+v, %v", tr, err)
	}
	if _, err := c.Trace(ctx, "no-such-flow"); !client.IsNotFound(err) {
		t.Fatalf("unknown flow: %v", err)
	}
	if st, err := c.Stalled(ctx, 10); err != nil || st.StallAfter == "" {
		t.Fatalf("stalled: %+v, %v", st, err)
	}
	if ms, err := c.ReadMessages(ctx, "jobs", pub[0].Partition, 0, 10); err != nil || len(ms) == 0 {
		t.Fatalf("read messages: %+v, %v", ms, err)
	}
	if _, err := c.Receive(ctx, "jobs", "nope", client.ReceiveOptions{}); !client.IsNotFound(err) || !hasProblem(err, client.ProblemGroupNotFound) {
		t.Fatalf("unknown group: %v", err)
	}
}
