package engine_test

import (
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/accord-saga/accord/internal/clock"
	"github.com/accord-saga/accord/internal/engine"
	"github.com/accord-saga/accord/internal/storage"
	"github.com/accord-saga/accord/internal/storage/sqlite"
)

// t0 is where the tests' manual clocks start.
var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// messages is a slog handler that keeps the message of every record.
type messages struct {
	mu   *sync.Mutex
	msgs *[]string
}

func newMessages() messages { return messages{mu: &sync.Mutex{}, msgs: new([]string)} }

func (m messages) Enabled(context.Context, slog.Level) bool { return true }
func (m messages) WithAttrs([]slog.Attr) slog.Handler       { return m }
func (m messages) WithGroup(string) slog.Handler            { return m }
func (m messages) Handle(_ context.Context, r slog.Record) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	*m.msgs = append(*m.msgs, r.Message)
	return nil
}

// matching returns the messages logged that contain one of words.
func (m messages) matching(words ...string) []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for _, msg := range *m.msgs {
		for _, w := range words {
			if strings.Contains(msg, w) {
				out = append(out, msg)
			}
		}
	}
	return out
}

// openSQLiteAt opens a fresh SQLite store whose clock is clk.
func openSQLiteAt(t *testing.T, clk *clock.Manual) *sqlite.Driver {
	t.Helper()
	d, err := sqlite.Open(context.Background(), sqlite.Config{Path: filepath.Join(t.TempDir(), "accord.db"), Partitions: testPartitions, Clock: clk})
	if err != nil {
		t.Fatalf("open sqlite: %v", err)
	}
	t.Cleanup(func() { _ = d.Close() })
	return d
}

// TestEmbeddedNodeKeepsLeasesUnderStarvation: on an embedded store (one
// process alone) the node starves — time runs on far past the lease TTL
// while none of the engine's goroutines, the lease loop included, gets to
// run — and then a push result arrives. It is committed, the saga goes on
// without calling the participant again, and when the lease loop runs late
// it renews rather than losing the partitions.
func TestEmbeddedNodeKeepsLeasesUnderStarvation(t *testing.T) {
	clk := clock.NewManual(t0)
	store := openSQLiteAt(t, clk)
	logs := newMessages()
	push := make(chanPush, 16)
	e := startEngine(t, store, func(c *engine.Config) {
		c.Clock = clk
		c.LeaseTTL = time.Second
		c.Push = push
		c.Logger = slog.New(logs)
	})
	register(t, e, pushDef)
	id := startSaga(t, e, "pushed", map[string]int{"n": 1})
	a := push.next(t)

	clk.Skip(30 * time.Second) // 30 lease TTLs, and nothing ran
	ctx := context.Background()
	if err := e.CompleteTask(ctx, engine.Result{TaskID: a.ID, ClaimToken: a.ClaimToken, Outcome: "success", Output: []byte(`{}`)}); err != nil {
		t.Fatalf("result after starvation: %v", err)
	}
	b := push.next(t)
	if b.Step != "b" {
		t.Fatalf("dispatched %s attempt %d after a's result, want step b", b.Step, b.Attempt)
	}

	// The lease loop gets to run at last: it renews every lease.
	clk.Advance(0)
	waitFor(t, "leases renewed", func() bool {
		leases, err := store.LeaseList(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range leases {
			if !l.ExpiresAt.After(clk.Now().Add(24 * time.Hour)) {
				return false
			}
		}
		return true
	})
	if err := e.CompleteTask(ctx, engine.Result{TaskID: b.ID, ClaimToken: b.ClaimToken, Outcome: "success", Output: []byte(`{}`)}); err != nil {
		t.Fatalf("result for b: %v", err)
	}
	if s := waitEnd(t, e, id); s.Status != "completed" {
		t.Fatalf("status %s, want completed", s.Status)
	}
	if n := e.OwnedPartitions(); n != testPartitions {
		t.Fatalf("owns %d partitions, want %d", n, testPartitions)
	}
	select {
	case again := <-push:
		t.Fatalf("participant called again: %s attempt %d", again.Step, again.Attempt)
	default:
	}
	if lost := logs.matching("lease lost", "fenced"); len(lost) > 0 {
		t.Fatalf("the node lost its own leases: %q", lost)
	}
}

// TestEmbeddedNodeTakesOverAfterCrash: the leases a crashed process left
// on an embedded store run for a long time (they never expire while it
// lives); the next process, whatever its node name, takes them at start.
func TestEmbeddedNodeTakesOverAfterCrash(t *testing.T) {
	clk := clock.NewManual(t0)
	store := openSQLiteAt(t, clk)
	ctx := context.Background()
	for p := range testPartitions {
		if _, err := store.LeaseAcquire(ctx, &storage.LeaseAcquireParams{Partition: p, Owner: "crashed", TTL: time.Hour}); err != nil {
			t.Fatal(err)
		}
	}
	e := startEngine(t, store, func(c *engine.Config) { c.Clock = clk; c.NodeID = "next" })
	if n := e.OwnedPartitions(); n != testPartitions {
		t.Fatalf("owns %d partitions after start, want %d", n, testPartitions)
	}
	register(t, e, pushDef)
	if _, err := e.StartSaga(ctx, engine.StartParams{Definition: "pushed", Input: []byte(`{}`)}); err != nil {
		t.Fatalf("start: %v", err)
	}
}
