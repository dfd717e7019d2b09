package engine

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/accord-saga/accord/internal/storage/sqlite"
)

// newInternalEngine starts an engine on a fresh SQLite store.
func newInternalEngine(t *testing.T) *Engine {
	t.Helper()
	store, err := sqlite.Open(context.Background(), sqlite.Config{Path: filepath.Join(t.TempDir(), "accord.db"), Partitions: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	e, err := New(Config{Store: store, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), LeaseTTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Stop(context.Background()) })
	return e
}

// TestStoppedPartitionSaysWhy: a caller that reaches a partition's loop
// after it was fenced or its lease was lost is told the node does not own
// the partition (the caller may retry elsewhere), never "engine: stopped",
// which means the whole engine is shutting down.
func TestStoppedPartitionSaysWhy(t *testing.T) {
	e := newInternalEngine(t)
	stops := map[string]func(p *partition){
		"fenced":     func(p *partition) { p.fenced(); <-p.done },
		"lease lost": func(p *partition) { e.dropPartition(p) },
	}
	id := 0
	for name, stop := range stops {
		p := e.owned[id]
		if p == nil {
			t.Fatalf("partition %d not owned", id)
		}
		id++
		stop(p)
		for range 50 {
			for _, kind := range []requestKind{reqStart, reqResult} {
				_, err := p.call(context.Background(), &request{kind: kind})
				if !errors.Is(err, ErrNotOwner) {
					t.Fatalf("%s: call of kind %d: %v, want ErrNotOwner", name, kind, err)
				}
			}
		}
	}
}
