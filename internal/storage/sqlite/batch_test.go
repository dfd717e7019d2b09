package sqlite

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/accord-saga/accord/internal/storage"
)

// These tests line writes up in the writer's queue behind a write that
// blocks it, so that the next batch holds exactly those writes, in order:
// what group commit does under load, made deterministic.

type blockedWriter struct {
	t       *testing.T
	d       *Driver
	release chan struct{}
	wg      sync.WaitGroup
}

// block stops d's writer inside a write until run is called.
func block(t *testing.T, d *Driver) *blockedWriter {
	t.Helper()
	b := &blockedWriter{t: t, d: d, release: make(chan struct{})}
	started := make(chan struct{})
	b.wg.Go(func() {
		_ = d.w.exec(context.Background(), func(*wtx) error {
			close(started)
			<-b.release
			return nil
		})
	})
	<-started
	return b
}

// queue starts fn, which makes one write, and waits until the write is in
// the queue.
func (b *blockedWriter) queue(fn func()) {
	b.t.Helper()
	n := len(b.d.w.queue)
	b.wg.Go(fn)
	deadline := time.Now().Add(10 * time.Second)
	for len(b.d.w.queue) == n {
		if time.Now().After(deadline) {
			b.t.Fatal("write never reached the queue")
		}
		runtime.Gosched()
	}
}

// run unblocks the writer and waits for every queued write.
func (b *blockedWriter) run() {
	close(b.release)
	b.wg.Wait()
}

func openTest(t *testing.T, partitions int) (*Driver, storage.Lease) {
	t.Helper()
	d, err := Open(t.Context(), Config{Path: filepath.Join(t.TempDir(), "accord.db"), Partitions: partitions})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	l, err := d.LeaseAcquire(t.Context(), &storage.LeaseAcquireParams{Partition: 0, Owner: "a", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return d, l
}

func appendOne(ctx context.Context, d *Driver, epoch, expected int64, stream string) (*storage.CommitResult, error) {
	return d.Commit(ctx, &storage.CommitParams{Partition: 0, Epoch: epoch, Appends: []storage.StreamAppend{{
		Stream: stream, ExpectedVersion: expected, Events: []storage.EventInput{{Type: "a"}, {Type: "b"}},
	}}})
}

// A takeover in the middle of a batch fences the commits queued after it,
// although the batch read the partition's lease before the takeover.
func TestBatchTakeoverFencesLaterCommits(t *testing.T) {
	ctx := t.Context()
	d, old := openTest(t, 2)
	b := block(t, d)
	var errBefore, errAfter, errNew error
	var taken storage.Lease
	b.queue(func() { _, errBefore = appendOne(ctx, d, old.Epoch, storage.AnyVersion, "before") })
	b.queue(func() {
		var err error
		taken, err = d.LeaseAcquire(ctx, &storage.LeaseAcquireParams{Partition: 0, Owner: "a", TTL: time.Hour})
		if err != nil {
			t.Error(err)
		}
	})
	b.queue(func() { _, errAfter = appendOne(ctx, d, old.Epoch, storage.AnyVersion, "after") })
	b.queue(func() { _, errNew = appendOne(ctx, d, old.Epoch+1, storage.AnyVersion, "new") })
	b.run()

	if errBefore != nil || errNew != nil {
		t.Fatalf("commits before the takeover and at the new epoch: %v, %v", errBefore, errNew)
	}
	if !errors.Is(errAfter, storage.ErrFenced) {
		t.Fatalf("old-epoch commit queued after the takeover: %v, want ErrFenced", errAfter)
	}
	if taken.Epoch != old.Epoch+1 {
		t.Fatalf("takeover epoch %d, want %d", taken.Epoch, old.Epoch+1)
	}
	if head, _ := d.PartitionHead(ctx, 0); head != 4 {
		t.Fatalf("head = %d, want 4", head)
	}
}

// A commit that fails inside a batch uses no positions and leaves the
// commits around it whole.
func TestBatchFailedCommitLeavesNoGap(t *testing.T) {
	ctx := t.Context()
	d, l := openTest(t, 1)
	b := block(t, d)
	results := make([]*storage.CommitResult, 3)
	errs := make([]error, 3)
	for i, expected := range []int64{storage.NoStream, 5, 2} { // the second conflicts
		b.queue(func() { results[i], errs[i] = appendOne(ctx, d, l.Epoch, expected, "s") })
	}
	b.run()
	if errs[0] != nil || errs[2] != nil || !errors.Is(errs[1], storage.ErrVersionConflict) {
		t.Fatalf("errors = %v, want nil, a version conflict, nil", errs)
	}
	if results[0].Events[0].Position != 1 || results[2].Events[0].Position != 3 || results[2].Events[1].Version != 4 {
		t.Fatalf("positions %d.. and %d.., want 1.. and 3..", results[0].Events[0].Position, results[2].Events[0].Position)
	}
	if !results[0].Now.Equal(results[2].Now) {
		t.Fatalf("commits of one batch at %v and %v, want the one transaction time", results[0].Now, results[2].Now)
	}
	if head, _ := d.PartitionHead(ctx, 0); head != 4 {
		t.Fatalf("head = %d, want 4", head)
	}
	evs, err := d.PartitionRead(ctx, &storage.PartitionReadParams{Partition: 0, FromPosition: 1, Limit: 10})
	if err != nil || len(evs) != 4 {
		t.Fatalf("partition holds %d events (%v), want 4", len(evs), err)
	}
}

// A write whose caller gave up before the writer reached it is not
// applied, and the rest of its batch is.
func TestBatchSkipsCancelledWrites(t *testing.T) {
	d, l := openTest(t, 1)
	b := block(t, d)
	gone, cancel := context.WithCancel(t.Context())
	var errGone, errKept error
	b.queue(func() { _, errGone = appendOne(gone, d, l.Epoch, storage.AnyVersion, "gone") })
	b.queue(func() { _, errKept = appendOne(t.Context(), d, l.Epoch, storage.AnyVersion, "kept") })
	cancel()
	b.run()
	if !errors.Is(errGone, context.Canceled) || errKept != nil {
		t.Fatalf("errors = %v, %v; want canceled and nil", errGone, errKept)
	}
	if _, err := d.StreamInfo(t.Context(), "gone"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("the cancelled write was applied: %v", err)
	}
	if info, err := d.StreamInfo(t.Context(), "kept"); err != nil || info.Version != 2 {
		t.Fatalf("kept stream: %+v, %v", info, err)
	}
}

// A write that hits a database error (here a NOT NULL constraint, which no
// Driver method lets through) fails alone: its batch runs again without it.
func TestBatchDatabaseErrorFailsOnlyItsWrite(t *testing.T) {
	ctx := t.Context()
	d, l := openTest(t, 1)
	b := block(t, d)
	var errA, errBad, errB error
	var resB *storage.CommitResult
	b.queue(func() { _, errA = appendOne(ctx, d, l.Epoch, storage.NoStream, "a") })
	b.queue(func() {
		errBad = d.w.exec(ctx, func(tx *wtx) error {
			_, err := tx.s.definitionInsert.Exec("d", 1, nil, "h", tx.now)
			return err
		})
	})
	b.queue(func() { resB, errB = appendOne(ctx, d, l.Epoch, storage.NoStream, "b") })
	b.run()
	if errA != nil || errB != nil {
		t.Fatalf("the good writes of the batch failed: %v, %v", errA, errB)
	}
	if errBad == nil || isOutcome(errBad) {
		t.Fatalf("the bad write: %v, want its database error", errBad)
	}
	if resB.Events[0].Position != 3 {
		t.Fatalf("b got position %d, want 3", resB.Events[0].Position)
	}
	if head, _ := d.PartitionHead(ctx, 0); head != 4 {
		t.Fatalf("head = %d, want 4", head)
	}
}

// A task claim whose batch is rolled back and run again (another write of
// the batch hit a database error) hands out the claims of the run that was
// committed, and only those: a claim of the rolled-back run has a token
// the store never kept.
func TestBatchRetryHandsOutCommittedClaims(t *testing.T) {
	ctx := t.Context()
	d, l := openTest(t, 1)
	if _, err := d.Commit(ctx, &storage.CommitParams{Partition: 0, Epoch: l.Epoch,
		TaskInserts: []storage.TaskInsert{{ID: "t1", Queue: "q", Payload: []byte(`{}`)}}}); err != nil {
		t.Fatal(err)
	}
	b := block(t, d)
	var claimed []storage.Task
	var errClaim, errBad error
	b.queue(func() {
		claimed, errClaim = d.TaskClaim(ctx, &storage.TaskClaimParams{Queue: "q", Limit: 8, Visibility: time.Minute})
	})
	b.queue(func() {
		errBad = d.w.exec(ctx, func(tx *wtx) error {
			_, err := tx.s.definitionInsert.Exec("d", 1, nil, "h", tx.now)
			return err
		})
	})
	b.run()
	if errClaim != nil || errBad == nil {
		t.Fatalf("claim: %v; the bad write: %v, want its database error", errClaim, errBad)
	}
	if len(claimed) != 1 {
		t.Fatalf("claimed %d tasks, want 1: %+v", len(claimed), claimed)
	}
	row, err := d.TaskGet(ctx, "t1")
	if err != nil || row.ClaimToken != claimed[0].ClaimToken {
		t.Fatalf("stored token %q (%v), handed out %q", row.ClaimToken, err, claimed[0].ClaimToken)
	}
}

// The contract's own answers (a definition in use, deleted) roll back only
// their write: the rest of the batch is not run a second time.
func TestBatchDefinitionAnswersAreOutcomes(t *testing.T) {
	for _, err := range []error{storage.ErrDefinitionInUse, storage.ErrDefinitionDeleted} {
		if !isOutcome(fmt.Errorf("wrapped: %w", err)) {
			t.Errorf("%v is not an outcome: it would abort its whole batch", err)
		}
	}
}
