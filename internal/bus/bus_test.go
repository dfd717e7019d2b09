package bus_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/accord-saga/accord/internal/bus"
	"github.com/accord-saga/accord/internal/engine"
	"github.com/accord-saga/accord/internal/storage"
)

func TestPublishReceiveAck(t *testing.T) {
	forEachBackend(t, func(t *testing.T, open func(t *testing.T) store) {
		n := startNode(t, open(t), nil)
		b := n.bus
		mustTopic(t, b, "orders", bus.TopicConfig{})
		mustGroup(t, b, "orders", "billing", bus.GroupConfig{}, bus.GroupStart{})
		mustGroup(t, b, "orders", "shipping", bus.GroupConfig{}, bus.GroupStart{})
		res := publish(t, b, "orders",
			bus.Message{Key: "o-1", Payload: json.RawMessage(`{"n":1}`), Headers: map[string]string{"kind": "OrderPlaced"}},
			bus.Message{Payload: json.RawMessage(`{"n":2}`)})
		if len(res) != 2 || res[0].ID == "" || res[0].Position < 1 || res[0].Duplicate {
			t.Fatalf("publish results = %+v", res)
		}
		for _, g := range []string{"billing", "shipping"} {
			ds := receive(t, b, "orders", g, 10, time.Second)
			if len(ds) != 2 {
				t.Fatalf("%s received %d messages, want 2 (each group gets every message)", g, len(ds))
			}
			for _, d := range ds {
				if d.Attempt != 1 || d.Receipt == "" || d.Message.CorrelationID != d.Message.ID {
					t.Fatalf("%s delivery = %+v", g, d)
				}
			}
			ack(t, b, "orders", g, ds...)
			if more := receive(t, b, "orders", g, 10, 0); len(more) != 0 {
				t.Fatalf("%s: %d messages after ack, want none", g, len(more))
			}
		}
		// An acked receipt is no longer valid.
		if _, err := b.Ack(context.Background(), "orders", "billing", []string{"0.1.nope"}); err != nil {
			t.Fatalf("ack of a stale receipt: %v", err)
		}
		errs, _ := b.Ack(context.Background(), "orders", "billing", []string{"0.1.nope", "garbage"})
		if !errors.Is(errs[0], bus.ErrReceiptLost) || !errors.Is(errs[1], bus.ErrInvalid) {
			t.Fatalf("stale/garbage receipts = %v", errs)
		}
	})
}

func TestKeyOrderAndNack(t *testing.T) {
	forEachBackend(t, func(t *testing.T, open func(t *testing.T) store) {
		n := startNode(t, open(t), nil)
		b := n.bus
		mustTopic(t, b, "t", bus.TopicConfig{})
		mustGroup(t, b, "t", "g", bus.GroupConfig{}, bus.GroupStart{})
		publish(t, b, "t", bus.Message{Key: "a", Payload: json.RawMessage(`1`)}, bus.Message{Key: "a", Payload: json.RawMessage(`2`)},
			bus.Message{Key: "b", Payload: json.RawMessage(`3`)})
		ds := receive(t, b, "t", "g", 10, time.Second)
		if len(ds) != 2 || string(ds[0].Message.Payload) == "2" || string(ds[1].Message.Payload) == "2" {
			t.Fatalf("first receive = %d messages (%v), want a/1 and b/3 only: a/2 waits for a/1", len(ds), payloads(ds))
		}
		var a1 bus.Delivery
		for _, d := range ds {
			if d.Message.Key == "a" {
				a1 = d
			} else {
				ack(t, b, "t", "g", d)
			}
		}
		// A nack keeps a/1 first: a/2 still waits. The delay outlasts the
		// receive that checks it on a busy machine; the receive after it
		// waits for the redelivery, with a last guard.
		if err := b.Nack(context.Background(), "t", "g", a1.Receipt, "db down", 3*time.Second, false); err != nil {
			t.Fatalf("nack: %v", err)
		}
		if ds := receive(t, b, "t", "g", 10, 0); len(ds) != 0 {
			t.Fatalf("after nack: %v handed out, want nothing until a/1's delay passes", payloads(ds))
		}
		ds = receive(t, b, "t", "g", 10, bus.MaxWait)
		if len(ds) != 1 || string(ds[0].Message.Payload) != "1" || ds[0].Attempt != 2 {
			t.Fatalf("redelivery = %+v, want a/1 attempt 2", ds)
		}
		if h := ds[0].History; len(h) != 1 || h[0].Outcome != "nack" || h[0].Reason != "db down" || h[0].Attempt != 1 {
			t.Fatalf("history = %+v", h)
		}
		ack(t, b, "t", "g", ds[0])
		ds = receive(t, b, "t", "g", 10, 2*time.Second)
		if len(ds) != 1 || string(ds[0].Message.Payload) != "2" {
			t.Fatalf("after a/1's ack got %v, want a/2", payloads(ds))
		}
		ack(t, b, "t", "g", ds[0])
	})
}

func payloads(ds []bus.Delivery) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.Message.Key + "/" + string(d.Message.Payload)
	}
	return out
}

// A message whose consumers die mid-message (claims expire) and nack goes
// to the dead letters after exactly max_deliveries hand-outs.
func TestDeadLetterAfterExactlyN(t *testing.T) {
	forEachBackend(t, func(t *testing.T, open func(t *testing.T) store) {
		n := startNode(t, open(t), nil)
		b := n.bus
		ctx := context.Background()
		mustTopic(t, b, "t", bus.TopicConfig{})
		mustGroup(t, b, "t", "g", bus.GroupConfig{MaxDeliveries: 3, Backoff: bus.Backoff{Initial: bus.Duration(time.Millisecond)}}, bus.GroupStart{})
		publish(t, b, "t", bus.Message{Key: "k", ID: "poison", Payload: json.RawMessage(`"bad"`)}, bus.Message{Key: "k", ID: "next"})
		handed := 0
		for attempt := 1; attempt <= 3; attempt++ {
			ds, err := b.Receive(ctx, "t", "g", 1, 3*time.Second, 150*time.Millisecond)
			if err != nil || len(ds) != 1 || ds[0].Message.ID != "poison" || ds[0].Attempt != attempt {
				t.Fatalf("attempt %d: %+v, %v", attempt, ds, err)
			}
			handed++
			if attempt == 2 {
				if err := b.Nack(ctx, "t", "g", ds[0].Receipt, "parse error", -1, false); err != nil {
					t.Fatalf("nack: %v", err)
				}
			}
			// Attempts 1 and 3: the consumer "dies"; the claim expires.
		}
		// The next hand-out would be the 4th: it goes to the dead letters,
		// and "next" (same key) is released.
		ds, err := b.Receive(ctx, "t", "g", 1, 3*time.Second, 0)
		if err != nil || len(ds) != 1 || ds[0].Message.ID != "next" {
			t.Fatalf("after the poison message: %+v, %v", ds, err)
		}
		ack(t, b, "t", "g", ds[0])
		dl, err := b.DeadLetters(ctx, "t", "g", 0, 10)
		if err != nil || len(dl) != 1 {
			t.Fatalf("dead letters = %+v, %v", dl, err)
		}
		if dl[0].Deliveries != 3 || dl[0].Message.ID != "poison" || handed != 3 {
			t.Fatalf("dead letter = %+v after %d hand-outs, want 3", dl[0], handed)
		}
		// Replay brings it back with its history: its attempts number on
		// (4, not 1), and it gets a fresh budget of 3 deliveries.
		if n, err := b.ReplayDeadLetters(ctx, "t", "g", nil); err != nil || n != 1 {
			t.Fatalf("replay = %d, %v", n, err)
		}
		for attempt := 4; attempt <= 6; attempt++ {
			ds = receive(t, b, "t", "g", 1, 3*time.Second)
			if len(ds) != 1 || ds[0].Message.ID != "poison" || ds[0].Attempt != attempt || len(ds[0].History) != attempt-1 {
				t.Fatalf("replayed delivery, attempt %d: %+v", attempt, ds)
			}
			if h := ds[0].History[1]; h.Attempt != 2 || h.Outcome != "nack" || h.Reason != "parse error" {
				t.Fatalf("replayed delivery lost its history: %+v", ds[0].History)
			}
			if err := b.Nack(ctx, "t", "g", ds[0].Receipt, "still bad", 0, false); err != nil {
				t.Fatalf("nack: %v", err)
			}
		}
		if ds, err := b.Receive(ctx, "t", "g", 1, 100*time.Millisecond, 0); err != nil || len(ds) != 0 {
			t.Fatalf("after the replay's budget: %+v, %v", ds, err)
		}
		dl, err = b.DeadLetters(ctx, "t", "g", 0, 10)
		if err != nil || len(dl) != 1 || dl[0].Deliveries != 6 {
			t.Fatalf("dead letters after the replay's budget = %+v, %v", dl, err)
		}
		if n, err := b.PurgeDeadLetters(ctx, "t", "g", nil); err != nil || n != 1 {
			t.Fatalf("purge = %d, %v", n, err)
		}
	})
}

func TestPublishIdempotentAndTTL(t *testing.T) {
	forEachBackend(t, func(t *testing.T, open func(t *testing.T) store) {
		n := startNode(t, open(t), nil)
		b := n.bus
		ctx := context.Background()
		mustTopic(t, b, "t", bus.TopicConfig{})
		mustGroup(t, b, "t", "g", bus.GroupConfig{}, bus.GroupStart{})
		m := bus.Message{Key: "k", IdempotencyKey: "evt-1", Payload: json.RawMessage(`{"a":1}`)}
		first := publish(t, b, "t", m)
		again := publish(t, b, "t", m, m)
		for _, r := range again {
			if !r.Duplicate || r.ID != first[0].ID {
				t.Fatalf("republish = %+v, want duplicate of %s", r, first[0].ID)
			}
		}
		m.Payload = json.RawMessage(`{"a":2}`)
		if _, err := b.Publish(ctx, "t", []bus.Message{m}); !errors.Is(err, engine.ErrIdempotencyMismatch) {
			t.Fatalf("reuse of a key for other content: %v", err)
		}
		publish(t, b, "t", bus.Message{Key: "short", TTL: 50 * time.Millisecond})
		time.Sleep(100 * time.Millisecond)
		ds := receive(t, b, "t", "g", 10, time.Second)
		if len(ds) != 1 || ds[0].Message.ID != first[0].ID {
			t.Fatalf("received %+v, want only the deduplicated message (the other expired)", payloads(ds))
		}
	})
}

func TestGroupStarts(t *testing.T) {
	forEachBackend(t, func(t *testing.T, open func(t *testing.T) store) {
		n := startNode(t, open(t), nil)
		b := n.bus
		mustTopic(t, b, "t", bus.TopicConfig{})
		publish(t, b, "t", bus.Message{ID: "old"})
		mustGroup(t, b, "t", "from-end", bus.GroupConfig{}, bus.GroupStart{})
		mustGroup(t, b, "t", "from-start", bus.GroupConfig{}, bus.GroupStart{From: "beginning"})
		publish(t, b, "t", bus.Message{ID: "new"})
		if ds := receive(t, b, "t", "from-end", 10, time.Second); len(ds) != 1 || ds[0].Message.ID != "new" {
			t.Fatalf("from-end got %+v", ds)
		}
		if ds := receive(t, b, "t", "from-start", 10, time.Second); len(ds) != 2 {
			t.Fatalf("from-start got %d messages, want 2", len(ds))
		}
		if _, _, err := b.CreateGroup(context.Background(), "t", "from-end", bus.GroupConfig{MaxDeliveries: 9}, bus.GroupStart{}); !errors.Is(err, bus.ErrGroupExists) {
			t.Fatalf("re-create with other config: %v", err)
		}
		if _, _, err := b.CreateGroup(context.Background(), "nope", "g", bus.GroupConfig{}, bus.GroupStart{}); !errors.Is(err, bus.ErrTopicNotFound) {
			t.Fatalf("group of a missing topic: %v", err)
		}
	})
}

func TestBadInput(t *testing.T) {
	n := startNode(t, backends[0].open(t), nil)
	b := n.bus
	ctx := context.Background()
	mustTopic(t, b, "t", bus.TopicConfig{})
	mustGroup(t, b, "t", "g", bus.GroupConfig{}, bus.GroupStart{})
	cases := []struct {
		name  string
		err   error
		field string
	}{
		{"bad topic name", func() error { _, _, err := b.PutTopic(ctx, "a/b", bus.TopicConfig{}); return err }(), "topic"},
		{"negative ttl", func() error { _, _, err := b.PutTopic(ctx, "x", bus.TopicConfig{DefaultTTL: -1}); return err }(), "default_ttl"},
		{"bad payload", func() error {
			_, err := b.Publish(ctx, "t", []bus.Message{{Payload: json.RawMessage(`{`)}})
			return err
		}(), "messages[0].payload"},
		{"tombstone without key", func() error { _, err := b.Publish(ctx, "t", []bus.Message{{Tombstone: true}}); return err }(), "messages[0].key"},
		{"no messages", func() error { _, err := b.Publish(ctx, "t", nil); return err }(), "messages"},
		{"receive max", func() error { _, err := b.Receive(ctx, "t", "g", 0, 0, 0); return err }(), "max"},
		{"bad receipt", func() error { return b.Nack(ctx, "t", "g", "x.y.z", "", 0, false) }(), "receipt"},
		{"webhook and saga", func() error {
			_, _, err := b.CreateGroup(ctx, "t", "h", bus.GroupConfig{StartSaga: &bus.Trigger{Definition: "d"}, Webhook: &bus.Webhook{URL: "http://x"}}, bus.GroupStart{})
			return err
		}(), "webhook"},
		{"bad start", func() error {
			_, _, err := b.CreateGroup(ctx, "t", "h", bus.GroupConfig{}, bus.GroupStart{From: "yesterday"})
			return err
		}(), "start"},
	}
	for _, c := range cases {
		var ie *bus.InvalidError
		if !errors.As(c.err, &ie) || ie.Field != c.field {
			t.Errorf("%s: err = %v, want an InvalidError naming %q", c.name, c.err, c.field)
		}
	}
	if _, err := b.Publish(ctx, "missing", []bus.Message{{}}); !errors.Is(err, bus.ErrTopicNotFound) {
		t.Errorf("publish to a missing topic: %v", err)
	}
	if _, err := b.Receive(ctx, "t", "missing", 1, 0, 0); !errors.Is(err, bus.ErrGroupNotFound) {
		t.Errorf("receive from a missing group: %v", err)
	}
}

func TestTraceAndStalled(t *testing.T) {
	n := startNode(t, backends[0].open(t), func(c *bus.Config) { c.StallAfter = 50 * time.Millisecond })
	b := n.bus
	ctx := context.Background()
	mustTopic(t, b, "tickets", bus.TopicConfig{})
	mustTopic(t, b, "classified", bus.TopicConfig{})
	mustGroup(t, b, "tickets", "classifier", bus.GroupConfig{}, bus.GroupStart{})
	mustGroup(t, b, "classified", "notifier", bus.GroupConfig{}, bus.GroupStart{})
	first := publish(t, b, "tickets", bus.Message{Key: "t-1", CorrelationID: "flow-1"})
	ds := receive(t, b, "tickets", "classifier", 1, time.Second)
	ack(t, b, "tickets", "classifier", ds...)
	publish(t, b, "classified", bus.Message{Key: "t-1", CorrelationID: "flow-1"})
	tr, err := b.Trace(ctx, "flow-1")
	if err != nil || len(tr) != 2 {
		t.Fatalf("trace = %+v, %v", tr, err)
	}
	if tr[0].Message.ID != first[0].ID || tr[0].Groups[0].Status != "done" || tr[1].Groups[0].Status != "pending" {
		t.Fatalf("trace statuses = %+v / %+v", tr[0].Groups, tr[1].Groups)
	}
	time.Sleep(100 * time.Millisecond)
	st, err := b.Stalled(ctx, 10)
	if err != nil || len(st) != 1 || st[0].Group != "notifier" || st[0].Message.CorrelationID != "flow-1" {
		t.Fatalf("stalled = %+v, %v", st, err)
	}
}

// A saga step whose target is a topic publishes its input with the step,
// and a group with start_saga starts a saga per message, once.
func TestSagasAndTopics(t *testing.T) {
	forEachBackend(t, func(t *testing.T, open func(t *testing.T) store) {
		n := startNode(t, open(t), nil)
		b, eng := n.bus, n.eng
		ctx := context.Background()
		mustTopic(t, b, "order-events", bus.TopicConfig{})
		mustGroup(t, b, "order-events", "audit", bus.GroupConfig{}, bus.GroupStart{})
		def := `{"name":"announce","version":1,"steps":[{"name":"placed","kind":"pivot","action":{"topic":"order-events"},"input":{"order":"${input.order}"}}]}`
		if _, _, err := eng.RegisterDefinition(ctx, []byte(def)); err != nil {
			t.Fatalf("register: %v", err)
		}
		started, err := eng.StartSaga(ctx, engine.StartParams{Definition: "announce", Input: json.RawMessage(`{"order":"o-9"}`)})
		if err != nil {
			t.Fatalf("start: %v", err)
		}
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		s, err := eng.Wait(wctx, started.SagaID)
		if err != nil || s.Status != "completed" {
			t.Fatalf("saga = %+v, %v", s, err)
		}
		ds := receive(t, b, "order-events", "audit", 10, time.Second)
		if len(ds) != 1 || string(ds[0].Message.Payload) != `{"order":"o-9"}` || ds[0].Message.CorrelationID != started.SagaID {
			t.Fatalf("published by the saga: %+v", ds)
		}
		ack(t, b, "order-events", "audit", ds...)

		// A topic that starts sagas.
		mustTopic(t, b, "signups", bus.TopicConfig{})
		if _, _, err := eng.RegisterDefinition(ctx, []byte(`{"name":"welcome","version":1,"steps":[{"name":"greet","kind":"pivot","action":{"topic":"order-events"}}]}`)); err != nil {
			t.Fatalf("register: %v", err)
		}
		mustGroup(t, b, "signups", "onboarding", bus.GroupConfig{StartSaga: &bus.Trigger{Definition: "welcome"}}, bus.GroupStart{})
		for i := range 3 {
			publish(t, b, "signups", bus.Message{Payload: json.RawMessage(fmt.Sprintf(`{"user":%d}`, i))})
		}
		eventually(t, 15*time.Second, "three welcome sagas publish to order-events", func() bool {
			ds, err := b.Receive(ctx, "order-events", "audit", 10, 0, 0)
			if err != nil {
				t.Fatal(err)
			}
			if len(ds) > 0 {
				ack(t, b, "order-events", "audit", ds...)
			}
			got, err := eng.ListSagas(ctx, &storage.SagaListParams{Definition: "welcome", Statuses: []string{"completed"}, Limit: 100})
			if err != nil {
				t.Fatal(err)
			}
			return len(got) == 3
		})
	})
}

func TestSweepRetentionAndCompaction(t *testing.T) {
	forEachBackend(t, func(t *testing.T, open func(t *testing.T) store) {
		n := startNode(t, open(t), nil)
		b := n.bus
		ctx := context.Background()
		mustTopic(t, b, "short", bus.TopicConfig{RetentionAge: bus.Duration(time.Millisecond)})
		mustTopic(t, b, "latest", bus.TopicConfig{Compact: true, KeepForever: true})
		mustGroup(t, b, "short", "g", bus.GroupConfig{}, bus.GroupStart{})
		publish(t, b, "short", bus.Message{Key: "a"}, bus.Message{Key: "b"})
		publish(t, b, "latest", bus.Message{Key: "a", Payload: json.RawMessage(`1`)}, bus.Message{Key: "a", Payload: json.RawMessage(`2`)},
			bus.Message{Key: "b", Payload: json.RawMessage(`3`)})
		time.Sleep(20 * time.Millisecond)
		if swept := b.Sweep(ctx); swept != 3 {
			t.Fatalf("swept %d messages, want 3 (2 past retention, 1 compacted away)", swept)
		}
		if ds := receive(t, b, "short", "g", 10, 0); len(ds) != 0 {
			t.Fatalf("deliveries of swept messages remain: %v", payloads(ds))
		}
		mustGroup(t, b, "latest", "reader", bus.GroupConfig{}, bus.GroupStart{From: "beginning"})
		ds := receive(t, b, "latest", "reader", 10, time.Second)
		got := map[string]string{}
		for _, d := range ds {
			got[d.Message.Key] = string(d.Message.Payload)
		}
		if len(ds) != 2 || got["a"] != "2" || got["b"] != "3" {
			t.Fatalf("compacted topic read from the beginning: %v, want a=2 and b=3", payloads(ds))
		}
	})
}
