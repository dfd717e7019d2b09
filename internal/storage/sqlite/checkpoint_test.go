package sqlite_test

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/accord-saga/accord/internal/storage"
	"github.com/accord-saga/accord/internal/storage/sqlite"
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

// TestWriteAheadLogStaysBounded: under writes that never pause, with
// readers all the while, PASSIVE checkpoints alone let the log grow
// without end; past its limit the writer truncates it between batches.
func TestWriteAheadLogStaysBounded(t *testing.T) {
	defer sqlite.SetWALLimitFrames(256)() // 1 MiB
	path := filepath.Join(t.TempDir(), "accord.db")
	d := openAt(t, path, 4)
	ctx := t.Context()
	var epochs [4]int64
	for p := range 4 {
		l, err := d.LeaseAcquire(ctx, &storage.LeaseAcquireParams{Partition: p, Owner: "o", TTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		epochs[p] = l.Epoch
	}
	stop := time.Now().Add(3 * time.Second)
	var wg sync.WaitGroup
	payload := make([]byte, 4000)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := g % 4
			for i := 0; time.Now().Before(stop); i++ {
				_, err := d.Commit(ctx, &storage.CommitParams{Partition: p, Epoch: epochs[p], Appends: []storage.StreamAppend{{
					Stream: fmt.Sprintf("s/%d/%d", g, i), ExpectedVersion: storage.NoStream,
					Events: []storage.EventInput{{Type: "t", Data: payload}},
				}}})
				if err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Add(1)
	go func() { // a reader, all the while
		defer wg.Done()
		for time.Now().Before(stop) {
			if _, err := d.PartitionRead(ctx, &storage.PartitionReadParams{Partition: 0, FromPosition: 1, Limit: 100}); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	var largest int64
	for time.Now().Before(stop) {
		if fi, err := os.Stat(path + "-wal"); err == nil {
			largest = max(largest, fi.Size())
		}
		time.Sleep(20 * time.Millisecond)
	}
	wg.Wait()
	written := fileSize(t, path)
	t.Logf("largest log %d bytes; database %d bytes", largest, written)
	if largest > 16<<20 {
		t.Fatalf("the write-ahead log reached %d bytes with a limit of 1 MiB", largest)
	}
}
