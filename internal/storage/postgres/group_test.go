package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/accord-saga/accord/internal/storage"
	"github.com/accord-saga/accord/internal/storage/postgres"
	"github.com/accord-saga/accord/internal/storage/postgres/pgtest"
)

// oneWorker opens a store whose commits all go through one coalescer
// worker, and leases every partition.
func oneWorker(t *testing.T, partitions int) (*postgres.Driver, []int64) {
	t.Helper()
	url, schema := pgtest.Schema(t)
	d, err := postgres.Open(t.Context(), postgres.Config{URL: url, Schema: schema, Partitions: partitions, MaxConns: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	if n := postgres.CommitWorkers(d); n != 1 {
		t.Fatalf("%d commit workers, want 1", n)
	}
	return d, leaseAll(t, d, partitions)
}

// held lines commits up behind a held worker, so that the next group holds
// exactly those commits, in the order queued.
type held struct {
	t       *testing.T
	queued  func() int
	release func()
	wg      sync.WaitGroup
}

func hold(t *testing.T, d *postgres.Driver) *held {
	queued, release := postgres.HoldCommits(d)
	return &held{t: t, queued: queued, release: release}
}

// queue starts fn, which makes one commit, and waits until the commit is
// in the worker's queue.
func (h *held) queue(fn func()) {
	h.t.Helper()
	n := h.queued()
	h.wg.Go(fn)
	deadline := time.Now().Add(10 * time.Second)
	for h.queued() == n {
		if time.Now().After(deadline) {
			h.t.Fatal("commit never reached the queue")
		}
		runtime.Gosched()
	}
}

// run lets the worker go and waits for every queued commit.
func (h *held) run() {
	h.release()
	h.wg.Wait()
}

func appendTo(p int, epoch int64, stream string, expected int64, events int) *storage.CommitParams {
	evs := make([]storage.EventInput, events)
	for i := range evs {
		evs[i] = storage.EventInput{Type: "e", Data: []byte(strconv.Itoa(i))}
	}
	return &storage.CommitParams{Partition: p, Epoch: epoch, Appends: []storage.StreamAppend{{Stream: stream, ExpectedVersion: expected, Events: evs}}}
}

// One group holds commits of several partitions, some of which fail: on
// their checks (a version conflict, a fenced epoch, a key stored by an
// earlier commit of the group) or in the database (a task id another
// commit of the group inserted). Each failing commit writes nothing, the
// others are committed in one transaction, and positions stay gap-free.
func TestGroupFailuresStayAlone(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	d, epochs := oneWorker(t, 2)
	h := hold(t, d)
	type outcome struct {
		res *storage.CommitResult
		err error
	}
	var out [8]outcome
	commit := func(i int, p *storage.CommitParams) {
		h.queue(func() { out[i].res, out[i].err = d.Commit(ctx, p) })
	}
	withTask := func(p *storage.CommitParams, id, payload string) *storage.CommitParams {
		p.TaskInserts = []storage.TaskInsert{{ID: id, Queue: "q", Payload: []byte(payload)}}
		return p
	}
	withKey := func(p *storage.CommitParams) *storage.CommitParams {
		p.IdempotencyKeys = []storage.IdempotencyKeyInsert{{Scope: "s", Key: "k", Result: []byte(strconv.Itoa(p.Partition)), TTL: time.Hour}}
		return p
	}
	commit(0, appendTo(0, epochs[0], "a", storage.NoStream, 2))
	commit(1, appendTo(0, epochs[0], "a", 5, 1))                  // conflicts: a is at version 2
	commit(2, appendTo(1, epochs[1]+7, "c", storage.NoStream, 1)) // fenced
	commit(3, withTask(appendTo(1, epochs[1], "d", storage.NoStream, 1), "t", "d"))
	commit(4, withTask(appendTo(1, epochs[1], "e", storage.NoStream, 1), "t", "e")) // task t exists
	commit(5, appendTo(0, epochs[0], "a", 2, 1))
	commit(6, withKey(appendTo(1, epochs[1], "g", storage.NoStream, 1)))
	commit(7, withKey(appendTo(0, epochs[0], "h", storage.NoStream, 1))) // key stored by 6
	h.run()

	for _, i := range []int{0, 3, 5, 6} {
		if out[i].err != nil {
			t.Fatalf("commit %d: %v", i, out[i].err)
		}
	}
	var conflict *storage.VersionConflictError
	if !errors.As(out[1].err, &conflict) || conflict.Actual != 2 {
		t.Errorf("commit 1: %v, want a version conflict at version 2", out[1].err)
	}
	if !errors.Is(out[2].err, storage.ErrFenced) {
		t.Errorf("commit 2: %v, want ErrFenced", out[2].err)
	}
	if !errors.Is(out[4].err, storage.ErrInvalid) {
		t.Errorf("commit 4: %v, want ErrInvalid", out[4].err)
	}
	var exists *storage.IdempotencyKeyExistsError
	if !errors.As(out[7].err, &exists) || exists.Existing.Partition != 1 {
		t.Errorf("commit 7: %v, want the key stored by partition 1", out[7].err)
	}

	pos := func(i int) (int64, int64) {
		e := out[i].res.Events[0]
		return e.Position, e.Version
	}
	for _, c := range []struct {
		i            int
		pos, version int64
		partition    int
	}{{0, 1, 1, 0}, {5, 3, 3, 0}, {3, 1, 1, 1}, {6, 2, 1, 1}} {
		if p, v := pos(c.i); p != c.pos || v != c.version || out[c.i].res.Events[0].Partition != c.partition {
			t.Errorf("commit %d: position %d version %d, want %d and %d", c.i, p, v, c.pos, c.version)
		}
	}
	for _, i := range []int{3, 5, 6} {
		if !out[i].res.Now.Equal(out[0].res.Now) {
			t.Errorf("commit %d at %v, commit 0 at %v: want the group's one time", i, out[i].res.Now, out[0].res.Now)
		}
	}
	for p, want := range []int64{3, 2} {
		if head, err := d.PartitionHead(ctx, p); err != nil || head != want {
			t.Errorf("partition %d head = %d, %v; want %d", p, head, err, want)
		}
	}
	for _, s := range []string{"c", "e", "h"} {
		if _, err := d.StreamInfo(ctx, s); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("stream %s of a failed commit: %v, want ErrNotFound", s, err)
		}
	}
	if task, err := d.TaskGet(ctx, "t"); err != nil || string(task.Payload) != "d" {
		t.Errorf("task t = %+v, %v; want commit 3's", task, err)
	}
}

// A commit whose caller gave up before its group started is not applied;
// the rest of its group is.
func TestGroupSkipsCancelledCommits(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	d, epochs := oneWorker(t, 2)
	h := hold(t, d)
	gone, cancel := context.WithCancel(ctx)
	var errGone, errKept error
	var kept *storage.CommitResult
	h.queue(func() { _, errGone = d.Commit(gone, appendTo(0, epochs[0], "gone", storage.NoStream, 1)) })
	h.queue(func() { kept, errKept = d.Commit(ctx, appendTo(0, epochs[0], "kept", storage.NoStream, 1)) })
	cancel()
	h.run()
	if !errors.Is(errGone, context.Canceled) || errKept != nil {
		t.Fatalf("errors = %v, %v; want canceled and nil", errGone, errKept)
	}
	if kept.Events[0].Position != 1 {
		t.Fatalf("kept commit at position %d, want 1", kept.Events[0].Position)
	}
	if _, err := d.StreamInfo(ctx, "gone"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("the cancelled commit was applied: %v", err)
	}
}

// Commits of one partition in one group follow each other: the second
// sees the first's stream version and positions.
func TestGroupSamePartitionInOrder(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	d, epochs := oneWorker(t, 1)
	h := hold(t, d)
	const n = 20
	res := make([]*storage.CommitResult, n)
	errs := make([]error, n)
	for i := range n {
		h.queue(func() { res[i], errs[i] = d.Commit(ctx, appendTo(0, epochs[0], "s", int64(2*i), 2)) })
	}
	h.run()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("commit %d: %v", i, errs[i])
		}
		if !res[i].Now.Equal(res[0].Now) {
			t.Fatalf("commit %d at %v, commit 0 at %v: want the group's one time", i, res[i].Now, res[0].Now)
		}
		for j, e := range res[i].Events {
			if want := int64(2*i + j + 1); e.Position != want || e.Version != want {
				t.Fatalf("commit %d event %d at position %d version %d, want %d", i, j, e.Position, e.Version, want)
			}
		}
	}
}

// Many callers commit at once, to many partitions and several to each
// partition: every commit succeeds with its own result, and each
// partition's log is gap-free and in the order of its commits.
func TestGroupConcurrentCommits(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	const partitions, perPartition, rounds = 16, 3, 15
	d, epochs := leased(t, partitions, "node")
	type written struct {
		stream  string
		results []*storage.CommitResult
	}
	all := make([][]written, partitions)
	for p := range all {
		all[p] = make([]written, perPartition)
	}
	var wg sync.WaitGroup
	errs := make(chan error, partitions*perPartition)
	for p := range partitions {
		for w := range perPartition {
			wg.Go(func() {
				stream := fmt.Sprintf("p%d-w%d", p, w)
				all[p][w].stream = stream
				version := int64(0)
				for r := range rounds {
					events := 1 + r%3
					params := appendTo(p, epochs[p], stream, version, events)
					params.IdempotencyKeys = []storage.IdempotencyKeyInsert{{Scope: "k", Key: fmt.Sprintf("%s-%d", stream, r), TTL: time.Hour}}
					params.TaskInserts = []storage.TaskInsert{{ID: fmt.Sprintf("%s-%d", stream, r), Queue: "q"}}
					res, err := d.Commit(ctx, params)
					if err != nil {
						errs <- fmt.Errorf("%s round %d: %w", stream, r, err)
						return
					}
					if len(res.Events) != events {
						errs <- fmt.Errorf("%s round %d: %d events, want %d", stream, r, len(res.Events), events)
						return
					}
					for i, e := range res.Events {
						if e.Stream != stream || e.Partition != p || e.Version != version+int64(i)+1 || !e.RecordedAt.Equal(res.Now) {
							errs <- fmt.Errorf("%s round %d: event %+v", stream, r, e)
							return
						}
						if i > 0 && e.Position != res.Events[i-1].Position+1 {
							errs <- fmt.Errorf("%s round %d: positions not consecutive within a commit", stream, r)
							return
						}
					}
					version += int64(events)
					all[p][w].results = append(all[p][w].results, res)
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for p := range partitions {
		log, err := d.PartitionRead(ctx, &storage.PartitionReadParams{Partition: p, FromPosition: 1, Limit: storage.MaxReadLimit})
		if err != nil {
			t.Fatal(err)
		}
		byPos := make(map[int64]storage.Event, len(log))
		for i, e := range log {
			if e.Position != int64(i+1) {
				t.Fatalf("partition %d: event %d at position %d: the log has a gap", p, i, e.Position)
			}
			byPos[e.Position] = e
		}
		total := 0
		for _, w := range all[p] {
			var last storage.Event
			for _, res := range w.results {
				for _, e := range res.Events {
					total++
					got, ok := byPos[e.Position]
					if !ok || got.Stream != e.Stream || got.Version != e.Version || string(got.Data) != string(e.Data) || !got.RecordedAt.Equal(e.RecordedAt) {
						t.Fatalf("partition %d position %d holds %+v, the commit reported %+v", p, e.Position, got, e)
					}
					if last.Position != 0 && (e.Position <= last.Position || e.RecordedAt.Before(last.RecordedAt)) {
						t.Fatalf("partition %d: %s's later commit at position %d, time %v, after %d, %v", p, w.stream, e.Position, e.RecordedAt, last.Position, last.RecordedAt)
					}
					last = e
				}
			}
		}
		if total != len(log) {
			t.Fatalf("partition %d holds %d events, commits reported %d", p, len(log), total)
		}
		if head, err := d.PartitionHead(ctx, p); err != nil || head != int64(total) {
			t.Fatalf("partition %d head = %d, %v; want %d", p, head, err, total)
		}
	}
}
