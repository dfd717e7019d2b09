package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/accord-saga/accord/internal/storage"
	"github.com/accord-saga/accord/internal/storage/postgres"
	"github.com/accord-saga/accord/internal/storage/postgres/pgtest"
)

// leased opens a store and leases every partition to owner.
func leased(t *testing.T, partitions int, owner string) (*postgres.Driver, []int64) {
	t.Helper()
	d := pgtest.NewStore(t, partitions)
	epochs := make([]int64, partitions)
	for p := range partitions {
		l, err := d.LeaseAcquire(t.Context(), &storage.LeaseAcquireParams{Partition: p, Owner: owner, TTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		epochs[p] = l.Epoch
	}
	return d, epochs
}

// twoNodes opens two drivers on one store, as two nodes would, each with a
// single connection, and leases partition 0 to the first and 1 to the
// second.
func twoNodes(t *testing.T) (nodes [2]*postgres.Driver, epochs [2]int64) {
	t.Helper()
	url, schema := pgtest.Schema(t)
	for i := range 2 {
		d, err := postgres.Open(t.Context(), postgres.Config{URL: url, Schema: schema, Partitions: 2, MaxConns: 1})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = d.Close() })
		l, err := d.LeaseAcquire(t.Context(), &storage.LeaseAcquireParams{Partition: i, Owner: fmt.Sprintf("node-%d", i), TTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		nodes[i], epochs[i] = d, l.Epoch
	}
	return nodes, epochs
}

// race runs f(0) and f(1) at the same moment and returns their errors.
func race(f func(i int) error) [2]error {
	var errs [2]error
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Go(func() {
			<-start
			errs[i] = f(i)
		})
	}
	close(start)
	wg.Wait()
	return errs
}

// TestCrossPartitionStreamRace creates one stream from two nodes' partitions
// at once. Whether the loser finds the winner's row when it locks, or
// collides with it on insert, it must get ErrWrongPartition and write
// nothing.
func TestCrossPartitionStreamRace(t *testing.T) {
	t.Parallel()
	nodes, epochs := twoNodes(t)
	d := nodes[0]
	wins := [2]int64{}
	for round := range 25 {
		stream := fmt.Sprintf("contested-%d", round)
		errs := race(func(p int) error {
			_, err := nodes[p].Commit(t.Context(), &storage.CommitParams{Partition: p, Epoch: epochs[p], Appends: []storage.StreamAppend{{
				Stream: stream, ExpectedVersion: storage.NoStream, Events: []storage.EventInput{{Type: "t", Data: []byte{byte(p)}}},
			}}})
			return err
		})
		winner := -1
		for p, err := range errs {
			switch {
			case err == nil && winner < 0:
				winner = p
			case err == nil:
				t.Fatalf("round %d: both partitions created %s", round, stream)
			case !errors.Is(err, storage.ErrWrongPartition):
				t.Fatalf("round %d: partition %d: %v, want ErrWrongPartition", round, p, err)
			}
		}
		if winner < 0 {
			t.Fatalf("round %d: neither partition created %s: %v", round, stream, errs)
		}
		wins[winner]++
		info, err := d.StreamInfo(t.Context(), stream)
		if err != nil || info.Partition != winner || info.Version != 1 {
			t.Fatalf("round %d: StreamInfo = %+v, %v; want partition %d version 1", round, info, err, winner)
		}
	}
	for p := range 2 {
		if h, err := d.PartitionHead(t.Context(), p); err != nil || h != wins[p] {
			t.Fatalf("partition %d head = %d, %v; want its %d wins: a losing commit moved the head", p, h, err, wins[p])
		}
	}
}

// TestCrossPartitionKeyRace stores one idempotency key from two nodes'
// partitions at once: the loser gets the winner's key.
func TestCrossPartitionKeyRace(t *testing.T) {
	t.Parallel()
	nodes, epochs := twoNodes(t)
	d := nodes[0]
	for round := range 25 {
		key := strconv.Itoa(round)
		errs := race(func(p int) error {
			_, err := nodes[p].Commit(t.Context(), &storage.CommitParams{Partition: p, Epoch: epochs[p],
				IdempotencyKeys: []storage.IdempotencyKeyInsert{{Scope: "start", Key: key, Result: []byte{byte(p)}, TTL: time.Hour}},
				TaskInserts:     []storage.TaskInsert{{ID: fmt.Sprintf("task-%d-%d", round, p), Queue: "q"}},
			})
			return err
		})
		winner, loser := 0, 1
		if errs[0] != nil {
			winner, loser = 1, 0
		}
		if errs[winner] != nil {
			t.Fatalf("round %d: neither commit stored the key: %v", round, errs)
		}
		var exists *storage.IdempotencyKeyExistsError
		if !errors.As(errs[loser], &exists) {
			t.Fatalf("round %d: loser got %v, want *IdempotencyKeyExistsError", round, errs[loser])
		}
		if exists.Existing.Partition != winner || string(exists.Existing.Result) != string([]byte{byte(winner)}) {
			t.Fatalf("round %d: loser was shown %+v, want the winner's key (partition %d)", round, exists.Existing, winner)
		}
		if _, err := d.TaskGet(t.Context(), fmt.Sprintf("task-%d-%d", round, loser)); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("round %d: the losing commit wrote its task: %v", round, err)
		}
	}
}

// TestTakeoverWhileCommitting takes a partition over while writers commit
// at the old epoch as fast as they can. Once LeaseAcquire has returned, no
// commit at the old epoch may succeed, and in the log every old-epoch event
// comes before every new-epoch event: the commit in flight during the
// takeover either finished first or was fenced.
func TestTakeoverWhileCommitting(t *testing.T) {
	t.Parallel()
	d, epochs := leased(t, 1, "node-1")
	old := epochs[0]
	const writers = 4
	var (
		taken    atomic.Bool
		acked    atomic.Int64
		started  = make(chan struct{}, writers)
		lateWins atomic.Int64
		errs     = make([]error, writers)
		wg       sync.WaitGroup
	)
	for w := range writers {
		wg.Go(func() {
			for i := 0; ; i++ {
				if i == 3 {
					started <- struct{}{}
				}
				after := taken.Load()
				_, err := d.Commit(t.Context(), &storage.CommitParams{Partition: 0, Epoch: old, Appends: []storage.StreamAppend{{
					Stream: fmt.Sprintf("w%d", w), ExpectedVersion: storage.AnyVersion,
					Events: []storage.EventInput{{Type: "old", Metadata: []byte(strconv.FormatInt(old, 10))}},
				}}})
				switch {
				case err == nil && after:
					lateWins.Add(1)
				case err == nil:
					acked.Add(1)
				case errors.Is(err, storage.ErrFenced):
					if i < 3 {
						started <- struct{}{}
					}
					return
				default:
					errs[w] = err
					if i < 3 {
						started <- struct{}{}
					}
					return
				}
			}
		})
	}
	for range writers {
		<-started
	}
	// The same owner re-acquiring is a takeover that needs no expiry wait.
	next, err := d.LeaseAcquire(t.Context(), &storage.LeaseAcquireParams{Partition: 0, Owner: "node-1", TTL: time.Hour})
	taken.Store(true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Commit(t.Context(), &storage.CommitParams{Partition: 0, Epoch: next.Epoch, Appends: []storage.StreamAppend{{
		Stream: "new", ExpectedVersion: storage.NoStream, Events: []storage.EventInput{{Type: "new"}},
	}}}); err != nil {
		t.Fatalf("commit at the new epoch: %v", err)
	}
	wg.Wait()
	for w, err := range errs {
		if err != nil {
			t.Fatalf("writer %d: %v", w, err)
		}
	}
	if n := lateWins.Load(); n > 0 {
		t.Fatalf("%d commits at the old epoch succeeded after the takeover returned", n)
	}
	all, err := d.PartitionRead(t.Context(), &storage.PartitionReadParams{Partition: 0, FromPosition: 1, Limit: storage.MaxReadLimit})
	if err != nil {
		t.Fatal(err)
	}
	sawNew := false
	oldEvents := int64(0)
	for _, e := range all {
		switch e.Type {
		case "new":
			sawNew = true
		case "old":
			if sawNew {
				t.Fatalf("old-epoch event at position %d after the new epoch's first event", e.Position)
			}
			oldEvents++
		}
	}
	if !sawNew || oldEvents != acked.Load() {
		t.Fatalf("log holds %d old-epoch events and new event %v; writers had %d acknowledged", oldEvents, sawNew, acked.Load())
	}
}

// TestLargeCommit writes the most events one commit may carry.
func TestLargeCommit(t *testing.T) {
	t.Parallel()
	d, epochs := leased(t, 1, "node")
	var appends []storage.StreamAppend
	for s := range 100 {
		evs := make([]storage.EventInput, storage.MaxEventsPerCommit/100)
		for i := range evs {
			evs[i] = storage.EventInput{Type: "e", Data: []byte(strconv.Itoa(i))}
		}
		appends = append(appends, storage.StreamAppend{Stream: fmt.Sprintf("s%03d", s), ExpectedVersion: storage.NoStream, Events: evs})
	}
	res, err := d.Commit(t.Context(), &storage.CommitParams{Partition: 0, Epoch: epochs[0], Appends: appends})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Events) != storage.MaxEventsPerCommit {
		t.Fatalf("%d events committed, want %d", len(res.Events), storage.MaxEventsPerCommit)
	}
	all, err := d.PartitionRead(t.Context(), &storage.PartitionReadParams{Partition: 0, FromPosition: 1, Limit: storage.MaxReadLimit})
	if err != nil || len(all) != storage.MaxEventsPerCommit {
		t.Fatalf("PartitionRead = %d events, %v", len(all), err)
	}
	for i, e := range all {
		want := res.Events[i]
		if e.Position != int64(i+1) || e.Stream != want.Stream || e.Version != want.Version || string(e.Data) != string(want.Data) {
			t.Fatalf("event %d = %+v, want %+v", i, e, want)
		}
	}
}

// TestPayloadBytesRoundTrip checks that nil and empty payloads, and every
// byte value, come back as written.
func TestPayloadBytesRoundTrip(t *testing.T) {
	t.Parallel()
	d, epochs := leased(t, 1, "node")
	every := make([]byte, 256)
	for i := range every {
		every[i] = byte(i)
	}
	res, err := d.Commit(t.Context(), &storage.CommitParams{Partition: 0, Epoch: epochs[0], Appends: []storage.StreamAppend{{
		Stream: "bytes", ExpectedVersion: storage.NoStream, Events: []storage.EventInput{
			{Type: "nil"}, {Type: "empty", Data: []byte{}, Metadata: []byte{}}, {Type: "every", Data: every, Metadata: every},
		},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	got, err := d.StreamRead(t.Context(), &storage.StreamReadParams{Stream: "bytes"})
	if err != nil || len(got) != 3 {
		t.Fatalf("StreamRead = %d events, %v", len(got), err)
	}
	if got[0].Data != nil || got[0].Metadata != nil {
		t.Errorf("nil payload read back as %q, %q", got[0].Data, got[0].Metadata)
	}
	if got[1].Data == nil || len(got[1].Data) != 0 || got[1].Metadata == nil {
		t.Errorf("empty payload read back as %#v, %#v", got[1].Data, got[1].Metadata)
	}
	if string(got[2].Data) != string(every) || string(got[2].Metadata) != string(every) {
		t.Errorf("payload with every byte value changed")
	}
	if !got[0].RecordedAt.Equal(res.Now) || got[0].RecordedAt.Location() != time.UTC {
		t.Errorf("RecordedAt = %v, want %v in UTC", got[0].RecordedAt, res.Now)
	}
}

// TestDuplicatesInOneCommit: rows named twice in one commit behave as if
// written one after the other.
func TestDuplicatesInOneCommit(t *testing.T) {
	t.Parallel()
	d, epochs := leased(t, 2, "node")
	ctx := t.Context()
	_, err := d.Commit(ctx, &storage.CommitParams{Partition: 0, Epoch: epochs[0],
		IdempotencyKeys: []storage.IdempotencyKeyInsert{
			{Scope: "s", Key: "k", Result: []byte("first"), TTL: time.Hour},
			{Scope: "s", Key: "k", Result: []byte("second"), TTL: time.Hour},
		},
		TaskInserts: []storage.TaskInsert{{ID: "t", Queue: "q"}},
	})
	var exists *storage.IdempotencyKeyExistsError
	if !errors.As(err, &exists) || string(exists.Existing.Result) != "first" {
		t.Fatalf("one key twice = %v, want *IdempotencyKeyExistsError showing the first", err)
	}
	if _, err := d.TaskGet(ctx, "t"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("the refused commit wrote its task: %v", err)
	}

	saga := func(status string, terminal bool) storage.Saga {
		return storage.Saga{ID: "g", Partition: 0, Stream: "saga/g", Definition: "d", DefinitionVersion: 1, Status: status, Terminal: terminal}
	}
	if _, err := d.Commit(ctx, &storage.CommitParams{Partition: 0, Epoch: epochs[0],
		ConsumerPositions: []storage.ConsumerPosition{
			{Consumer: "c", Partition: 1, Position: 5},
			{Consumer: "c", Partition: 0, Position: 2},
			{Consumer: "c", Partition: 1, Position: 9},
		},
		SagaUpserts: []storage.Saga{saga("running", false), saga("completed", true)},
	}); err != nil {
		t.Fatal(err)
	}
	if a, _ := d.ConsumerPositionGet(ctx, "c", 1); a != 9 {
		t.Fatalf("position given twice = %d, want the last, 9", a)
	}
	if b, _ := d.ConsumerPositionGet(ctx, "c", 0); b != 2 {
		t.Fatalf("position = %d, want 2", b)
	}
	g, err := d.SagaGet(ctx, "g")
	if err != nil || g.Status != "completed" || !g.Terminal || g.EndedAt.IsZero() {
		t.Fatalf("saga upserted twice = %+v, %v; want the last, ended", g, err)
	}
}

// TestCommitCanceled: a commit whose context is done fails and leaves the
// store usable.
func TestCommitCanceled(t *testing.T) {
	t.Parallel()
	d, epochs := leased(t, 1, "node")
	p := func() *storage.CommitParams {
		return &storage.CommitParams{Partition: 0, Epoch: epochs[0], Appends: []storage.StreamAppend{{
			Stream: "s", ExpectedVersion: storage.AnyVersion, Events: []storage.EventInput{{Type: "e"}},
		}}}
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := d.Commit(ctx, p()); !errors.Is(err, context.Canceled) {
		t.Fatalf("Commit with a canceled context = %v, want context.Canceled", err)
	}
	res, err := d.Commit(t.Context(), p())
	if err != nil || res.Events[0].Position != 1 {
		t.Fatalf("Commit after a canceled one = %+v, %v; want position 1", res, err)
	}
}
