package bus_test

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/accord-saga/accord/internal/bus"
	"github.com/accord-saga/accord/internal/engine"
	"github.com/accord-saga/accord/internal/storage"
	"github.com/accord-saga/accord/internal/storage/postgres/pgtest"
	"github.com/accord-saga/accord/internal/storage/sqlite"
)

const testPartitions = 4

type store = storage.Driver

// backends lists the stores every bus test runs on.
var backends = []struct {
	name string
	open func(t *testing.T) store
}{
	{"sqlite", func(t *testing.T) store {
		d, err := sqlite.Open(context.Background(), sqlite.Config{Path: filepath.Join(t.TempDir(), "accord.db"), Partitions: testPartitions})
		if err != nil {
			t.Fatalf("open sqlite: %v", err)
		}
		t.Cleanup(func() { _ = d.Close() })
		return d
	}},
	{"postgres", func(t *testing.T) store {
		url, schema := pgtest.Schema(t)
		d, err := pgtest.Open(context.Background(), url, schema, testPartitions)
		if err != nil {
			t.Fatalf("open postgres: %v", err)
		}
		t.Cleanup(func() { _ = d.Close() })
		return d
	}},
}

func forEachBackend(t *testing.T, f func(t *testing.T, open func(t *testing.T) store)) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			f(t, b.open)
		})
	}
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// node is an engine and a bus on one store.
type node struct {
	eng *engine.Engine
	bus *bus.Bus
}

// startNode starts an engine and a bus on s and stops them at cleanup.
func startNode(t *testing.T, s store, mod func(*bus.Config)) *node {
	t.Helper()
	var b *bus.Bus
	eng, err := engine.New(engine.Config{Store: s, Logger: quiet(), LeaseTTL: time.Minute, // no test here is about lease expiry; a busy machine must not lose leases
		OnPublish: func(topic string) { b.Notify(topic) }})
	if err != nil {
		t.Fatalf("new engine: %v", err)
	}
	cfg := bus.Config{Store: s, Publisher: eng, Sagas: eng, Logger: quiet(), PollInterval: 20 * time.Millisecond,
		ScanInterval: 100 * time.Millisecond}
	if mod != nil {
		mod(&cfg)
	}
	b, err = bus.New(cfg)
	if err != nil {
		t.Fatalf("new bus: %v", err)
	}
	if err := eng.Start(context.Background()); err != nil {
		t.Fatalf("start engine: %v", err)
	}
	if err := b.Start(context.Background()); err != nil {
		t.Fatalf("start bus: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := b.Stop(ctx); err != nil {
			t.Errorf("stop bus: %v", err)
		}
		if err := eng.Stop(ctx); err != nil {
			t.Errorf("stop engine: %v", err)
		}
	})
	return &node{eng: eng, bus: b}
}

func mustTopic(t *testing.T, b *bus.Bus, name string, cfg bus.TopicConfig) {
	t.Helper()
	if _, _, err := b.PutTopic(context.Background(), name, cfg); err != nil {
		t.Fatalf("put topic %s: %v", name, err)
	}
}

func mustGroup(t *testing.T, b *bus.Bus, topic, name string, cfg bus.GroupConfig, start bus.GroupStart) {
	t.Helper()
	if _, _, err := b.CreateGroup(context.Background(), topic, name, cfg, start); err != nil {
		t.Fatalf("create group %s/%s: %v", topic, name, err)
	}
}

func publish(t *testing.T, b *bus.Bus, topic string, msgs ...bus.Message) []bus.Published {
	t.Helper()
	res, err := b.Publish(context.Background(), topic, msgs)
	if err != nil {
		t.Fatalf("publish to %s: %v", topic, err)
	}
	return res
}

func receive(t *testing.T, b *bus.Bus, topic, group string, max int, wait time.Duration) []bus.Delivery {
	t.Helper()
	ds, err := b.Receive(context.Background(), topic, group, max, wait, 0)
	if err != nil {
		t.Fatalf("receive %s/%s: %v", topic, group, err)
	}
	return ds
}

func ack(t *testing.T, b *bus.Bus, topic, group string, ds ...bus.Delivery) {
	t.Helper()
	rs := make([]string, len(ds))
	for i, d := range ds {
		rs[i] = d.Receipt
	}
	res, err := b.Ack(context.Background(), topic, group, rs)
	if err != nil {
		t.Fatalf("ack: %v", err)
	}
	for i, e := range res {
		if e != nil {
			t.Fatalf("ack %d: %v", i, e)
		}
	}
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
