package sqlite_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/accord-saga/accord/internal/storage"
)

// TestCheckpointerMovesTheLog: the writer makes no checkpoints of its own,
// so only the checkpointer can move committed pages from the write-ahead
// log into the database file. The file grows while the store is open.
func TestCheckpointerMovesTheLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "accord.db")
	d := openAt(t, path, 1)
	ctx := t.Context()
	l, err := d.LeaseAcquire(ctx, &storage.LeaseAcquireParams{Partition: 0, Owner: "o", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	before := fileSize(t, path)
	payload := make([]byte, 2000)
	for i := range 500 {
		_, err := d.Commit(ctx, &storage.CommitParams{Partition: 0, Epoch: l.Epoch, Appends: []storage.StreamAppend{{
			Stream: fmt.Sprintf("s/%d", i), ExpectedVersion: storage.NoStream,
			Events: []storage.EventInput{{Type: "t", Data: payload}},
		}}})
		if err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for fileSize(t, path) < before+500*2000 {
		if time.Now().After(deadline) {
			t.Fatalf("database file %d bytes, was %d: nothing was checkpointed into it", fileSize(t, path), before)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}
