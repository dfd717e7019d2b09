package subscriber_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/accord-saga/accord/sdk/client"
	"github.com/accord-saga/accord/sdk/sdktest"
	"github.com/accord-saga/accord/sdk/subscriber"
)

const wait = 30 * time.Second

func setup(t *testing.T, topic, group string, cfg client.GroupConfig) (*client.Client, context.Context) {
	t.Helper()
	srv := sdktest.NewServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	t.Cleanup(cancel)
	if _, err := srv.Client.PutTopic(ctx, topic, client.TopicConfig{}); err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Client.CreateGroup(ctx, topic, group, cfg); err != nil {
		t.Fatal(err)
	}
	return srv.Client, ctx
}

func startSub(t *testing.T, s *subscriber.Subscriber) {
	t.Helper()
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		if err := s.Stop(ctx); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
}

// Against a real bus: an error is nacked with its text, and the message
// comes back with that reason in its history; a Permanent error
// dead-letters the message at once; Publish keeps the flow's correlation
// id.
func TestAgainstServer(t *testing.T) {
	c, ctx := setup(t, "jobs", "workers", client.GroupConfig{BackoffInitial: 20 * time.Millisecond, BackoffMax: 50 * time.Millisecond})
	if _, err := c.PutTopic(ctx, "jobs-done", client.TopicConfig{}); err != nil {
		t.Fatal(err)
	}
	type seen struct {
		attempt int
		history []subscriber.Attempt
	}
	var mu sync.Mutex
	calls := map[string][]seen{}
	finished := make(chan string, 10)
	s := subscriber.New(c, "jobs", "workers", func(ctx context.Context, m *subscriber.Message) error {
		mu.Lock()
		calls[m.Key] = append(calls[m.Key], seen{m.Attempt, m.History})
		mu.Unlock()
		switch {
		case m.Key == "flaky" && m.Attempt == 1:
			return errors.New("first try fails")
		case m.Key == "poison":
			defer func() { finished <- m.Key }()
			return subscriber.Permanent(errors.New("cannot parse"))
		}
		_, err := subscriber.Publish(ctx, c, "jobs-done", client.Message{Key: m.Key, Payload: map[string]string{"job": m.Key}})
		finished <- m.Key
		return err
	}, subscriber.Options{Concurrency: 3, Wait: time.Second, Middleware: []subscriber.Middleware{subscriber.Recoverer, subscriber.CorrelationID}})
	startSub(t, s)
	pub, err := c.Publish(ctx, "jobs",
		client.Message{Key: "ok", CorrelationID: "flow-ok", Payload: 1},
		client.Message{Key: "flaky", Payload: 2},
		client.Message{Key: "poison", Payload: 3})
	if err != nil {
		t.Fatal(err)
	}
	done := map[string]bool{}
	for len(done) < 3 {
		select {
		case k := <-finished:
			done[k] = true
		case <-ctx.Done():
			t.Fatalf("finished %v", done)
		}
	}
	mu.Lock()
	flaky := calls["flaky"]
	mu.Unlock()
	if len(flaky) != 2 || flaky[1].attempt != 2 || len(flaky[1].history) != 1 || flaky[1].history[0].Reason != "first try fails" {
		t.Errorf("flaky deliveries %+v: want a second with the first's reason", flaky)
	}
	// The poison message is a dead letter after one attempt.
	for {
		page, err := c.DeadLetters(ctx, "jobs", "workers", client.DeadLetterOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(page.DeadLetters) == 1 {
			dl := page.DeadLetters[0]
			if dl.Message.Key != "poison" || dl.Attempts != 1 || dl.Reason != "cannot parse" {
				t.Errorf("dead letter %+v", dl)
			}
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("no dead letter")
		case <-time.After(20 * time.Millisecond):
		}
	}
	// The event published in reaction carries the flow's correlation id.
	tr, err := c.Trace(ctx, "flow-ok")
	if err != nil {
		t.Fatal(err)
	}
	if len(tr.Messages) != 2 || tr.Messages[0].ID != pub[0].ID || tr.Messages[1].Topic != "jobs-done" {
		t.Errorf("trace of flow-ok: %+v", tr.Messages)
	}
	if pub[1].ID == "" {
		t.Fatal("no id")
	}
	tr, err = c.Trace(ctx, pub[1].ID) // the flaky message started its own flow
	if err != nil {
		t.Fatal(err)
	}
	if len(tr.Messages) != 2 {
		t.Errorf("trace of the flaky job: %+v", tr.Messages)
	}
}

// A handler that runs much longer than the group's ack timeout keeps its
// message: the subscriber's heartbeats (by default every third of the
// group's ack timeout) extend the claim, so the message is handled once.
func TestHeartbeatKeepsLongHandlersClaim(t *testing.T) {
	// An ack timeout long enough that a busy machine does not delay two
	// heartbeats in a row past it.
	c, ctx := setup(t, "slow", "workers", client.GroupConfig{AckTimeout: time.Second})
	var mu sync.Mutex
	attempts := []int{}
	done := make(chan struct{}, 10)
	s := subscriber.New(c, "slow", "workers", func(ctx context.Context, m *subscriber.Message) error {
		mu.Lock()
		attempts = append(attempts, m.Attempt)
		mu.Unlock()
		// Work for three ack timeouts.
		select {
		case <-time.After(3 * time.Second):
		case <-ctx.Done():
			return ctx.Err()
		}
		done <- struct{}{}
		return nil
	}, subscriber.Options{Concurrency: 2, Wait: time.Second})
	startSub(t, s)
	if _, err := c.Publish(ctx, "slow", client.Message{Payload: "x"}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatal("handler did not finish")
	}
	// Acked: the group has nothing pending.
	for {
		g, err := c.GetGroup(ctx, "slow", "workers")
		if err != nil {
			t.Fatal(err)
		}
		pending := 0
		for _, p := range g.Partitions {
			pending += p.Pending
		}
		if pending == 0 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("still pending: %+v", g.Partitions)
		case <-time.After(20 * time.Millisecond):
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(attempts) != "[1]" {
		t.Fatalf("attempts %v, want one delivery", attempts)
	}
}

func TestStartNeedsTheGroup(t *testing.T) {
	c, ctx := setup(t, "jobs", "workers", client.GroupConfig{})
	s := subscriber.New(c, "jobs", "nobody", func(context.Context, *subscriber.Message) error { return nil }, subscriber.Options{})
	if err := s.Start(ctx); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("Start = %v, want not found", err)
	}
	if err := s.Stop(ctx); err != nil {
		t.Fatalf("Stop of an unstarted subscriber: %v", err)
	}
}
