package storagetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/accord-saga/accord/internal/storage"
)

// Harness gives the suite access to a backend.
type Harness struct {
	// Open returns a fresh, empty store with the given partition count. The
	// harness closes it when the test ends (t.Cleanup). Open is called from
	// parallel subtests.
	Open func(t *testing.T, partitions int) storage.Driver
	// Reopen closes d and opens the same store again, as a restarted
	// process would. The returned driver is closed when the test ends.
	Reopen func(t *testing.T, d storage.Driver) storage.Driver
}

// Exercise runs the whole suite against the backend h opens.
func Exercise(t *testing.T, h Harness) {
	t.Helper()
	if h.Open == nil || h.Reopen == nil {
		t.Fatal("storagetest: Harness.Open and Harness.Reopen are required")
	}
	t.Run("Store", func(t *testing.T) { t.Parallel(); exerciseStore(t, h) })
	t.Run("Streams", func(t *testing.T) { t.Parallel(); exerciseStreams(t, h) })
	t.Run("Atomicity", func(t *testing.T) { t.Parallel(); exerciseAtomicity(t, h) })
	t.Run("Leases", func(t *testing.T) { t.Parallel(); exerciseLeases(t, h) })
	t.Run("IdempotencyKeys", func(t *testing.T) { t.Parallel(); exerciseIdempotencyKeys(t, h) })
	t.Run("Tasks", func(t *testing.T) { t.Parallel(); exerciseTasks(t, h) })
	t.Run("Timers", func(t *testing.T) { t.Parallel(); exerciseTimers(t, h) })
	t.Run("ConsumerPositions", func(t *testing.T) { t.Parallel(); exerciseConsumerPositions(t, h) })
	t.Run("Definitions", func(t *testing.T) { t.Parallel(); exerciseDefinitions(t, h) })
	t.Run("Sagas", func(t *testing.T) { t.Parallel(); exerciseSagas(t, h) })
	t.Run("Invalid", func(t *testing.T) { t.Parallel(); exerciseInvalid(t, h) })
	t.Run("Reopen", func(t *testing.T) { t.Parallel(); exerciseReopen(t, h) })
	t.Run("Bus", func(t *testing.T) { t.Parallel(); exerciseBus(t, h) })
}

// testOwner is the lease owner most tests write as.
const testOwner = "owner-a"

// longTTL is a lease or key lifetime that no test outlives.
const longTTL = time.Hour

// shortTTL is the lifetime of leases, keys, claims and delays that a test
// waits out. It is long enough that "not yet expired" checks made right
// after a write hold on a loaded machine, and short enough to keep the
// suite quick.
const shortTTL = 500 * time.Millisecond

// waitLimit bounds every wait on the database clock.
const waitLimit = 15 * time.Second

// store is one fresh store with every partition leased by testOwner.
type store struct {
	t      *testing.T
	d      storage.Driver
	ctx    context.Context
	epochs []int64
}

// open returns a fresh store whose partitions are all leased by testOwner
// for longTTL.
func open(t *testing.T, h Harness, partitions int) *store {
	t.Helper()
	d := h.Open(t, partitions)
	s := &store{t: t, d: d, ctx: t.Context()}
	s.acquireAll()
	return s
}

func (s *store) acquireAll() {
	s.t.Helper()
	n := s.d.Info().Partitions
	s.epochs = make([]int64, n)
	for p := range n {
		l, err := s.d.LeaseAcquire(s.ctx, &storage.LeaseAcquireParams{Partition: p, Owner: testOwner, TTL: longTTL})
		if err != nil {
			s.t.Fatalf("LeaseAcquire(%d): %v", p, err)
		}
		s.epochs[p] = l.Epoch
	}
}

// commit commits params in partition p at the current epoch, which it
// fills in, and fails the test on error.
func (s *store) commit(p int, params *storage.CommitParams) *storage.CommitResult {
	s.t.Helper()
	res, err := s.tryCommit(p, params)
	if err != nil {
		s.t.Fatalf("Commit(partition %d): %v", p, err)
	}
	return res
}

func (s *store) tryCommit(p int, params *storage.CommitParams) (*storage.CommitResult, error) {
	params.Partition = p
	if params.Epoch == 0 && p >= 0 && p < len(s.epochs) {
		params.Epoch = s.epochs[p]
	}
	return s.d.Commit(s.ctx, params)
}

// appendEvents appends n events to stream in partition p, expecting
// version expected, and returns the stored events.
func (s *store) appendEvents(p int, stream string, expected int64, n int) []storage.Event {
	s.t.Helper()
	res := s.commit(p, &storage.CommitParams{Appends: []storage.StreamAppend{{
		Stream: stream, ExpectedVersion: expected, Events: events(stream, expected, n),
	}}})
	return res.Events
}

// events builds n events whose data names the stream and version they are
// expected to get.
func events(stream string, after int64, n int) []storage.EventInput {
	out := make([]storage.EventInput, n)
	for i := range out {
		out[i] = storage.EventInput{
			Type:     "test.event",
			Data:     fmt.Appendf(nil, `{"stream":%q,"n":%d}`, stream, after+int64(i)+1),
			Metadata: []byte(`{"m":1}`),
		}
	}
	return out
}

func (s *store) now() time.Time {
	s.t.Helper()
	now, err := s.d.Now(s.ctx)
	if err != nil {
		s.t.Fatalf("Now: %v", err)
	}
	return now
}

// waitPast waits until the database clock is strictly after target.
func (s *store) waitPast(target time.Time) {
	s.t.Helper()
	waitPast(s.t, s.d, target)
}

func waitPast(t *testing.T, d storage.Driver, target time.Time) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		now, err := d.Now(t.Context())
		if err != nil {
			t.Fatalf("Now: %v", err)
		}
		if now.After(target) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("database clock did not pass %v within %v (now %v)", target, waitLimit, now)
		}
		// Poll the database clock: it is the only clock the contract judges
		// by, and it cannot be subscribed to.
		wait := min(target.Sub(now)+time.Millisecond, 20*time.Millisecond)
		select {
		case <-time.After(wait):
		case <-t.Context().Done():
			t.Fatalf("context done while waiting for the database clock: %v", t.Context().Err())
		}
	}
}

func (s *store) head(p int) int64 {
	s.t.Helper()
	h, err := s.d.PartitionHead(s.ctx, p)
	if err != nil {
		s.t.Fatalf("PartitionHead(%d): %v", p, err)
	}
	return h
}

func (s *store) readPartition(p int) []storage.Event {
	s.t.Helper()
	return readPartition(s.t, s.d, p)
}

// readPartition reads a whole partition, page by page.
func readPartition(t *testing.T, d storage.Driver, p int) []storage.Event {
	t.Helper()
	var all []storage.Event
	from := int64(1)
	for {
		page, err := d.PartitionRead(t.Context(), &storage.PartitionReadParams{Partition: p, FromPosition: from, Limit: 500})
		if err != nil {
			t.Fatalf("PartitionRead(%d from %d): %v", p, from, err)
		}
		all = append(all, page...)
		if len(page) < 500 {
			return all
		}
		from = page[len(page)-1].Position + 1
	}
}

func (s *store) readStream(stream string) []storage.Event {
	s.t.Helper()
	evs, err := s.d.StreamRead(s.ctx, &storage.StreamReadParams{Stream: stream})
	if err != nil {
		s.t.Fatalf("StreamRead(%q): %v", stream, err)
	}
	return evs
}

// wantErr fails the test unless errors.Is(err, target).
func wantErr(t *testing.T, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: got error %v, want %v", what, err, target)
	}
}

// sameEvent reports how two events differ, or "" if they are the same.
func diffEvent(got, want storage.Event) string {
	switch {
	case got.Partition != want.Partition:
		return fmt.Sprintf("partition %d, want %d", got.Partition, want.Partition)
	case got.Position != want.Position:
		return fmt.Sprintf("position %d, want %d", got.Position, want.Position)
	case got.Stream != want.Stream:
		return fmt.Sprintf("stream %q, want %q", got.Stream, want.Stream)
	case got.Version != want.Version:
		return fmt.Sprintf("version %d, want %d", got.Version, want.Version)
	case got.Type != want.Type:
		return fmt.Sprintf("type %q, want %q", got.Type, want.Type)
	case !bytes.Equal(got.Data, want.Data):
		return fmt.Sprintf("data %q, want %q", got.Data, want.Data)
	case !bytes.Equal(got.Metadata, want.Metadata):
		return fmt.Sprintf("metadata %q, want %q", got.Metadata, want.Metadata)
	case !got.RecordedAt.Equal(want.RecordedAt):
		return fmt.Sprintf("recorded at %v, want %v", got.RecordedAt, want.RecordedAt)
	}
	return ""
}

// checkEvents fails the test unless got and want hold the same events.
func checkEvents(t *testing.T, what string, got, want []storage.Event) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d events, want %d", what, len(got), len(want))
	}
	for i := range got {
		if d := diffEvent(got[i], want[i]); d != "" {
			t.Fatalf("%s: event %d: %s", what, i, d)
		}
	}
}
