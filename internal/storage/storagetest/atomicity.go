package storagetest

import (
	"errors"
	"testing"

	"github.com/accord-saga/accord/internal/storage"
)

// exerciseAtomicity checks that a failing commit writes none of its parts,
// whichever check fails.
func exerciseAtomicity(t *testing.T, h Harness) {
	// setup writes a stream "existing" (version 2), a task and a timer that
	// the failing commits try to delete, and a stored idempotency key.
	setup := func(t *testing.T) *store {
		s := open(t, h, 2)
		s.commit(0, &storage.CommitParams{
			Appends:         []storage.StreamAppend{{Stream: "existing", ExpectedVersion: storage.NoStream, Events: events("existing", 0, 2)}},
			TaskInserts:     []storage.TaskInsert{{ID: "old-task", Queue: "q"}},
			TimerInserts:    []storage.TimerInsert{{ID: "old-timer", Delay: longTTL}},
			IdempotencyKeys: []storage.IdempotencyKeyInsert{{Scope: "start", Key: "stored", Result: []byte("first"), TTL: longTTL}},
		})
		return s
	}
	// failing returns a commit that would write a bit of everything if its
	// last part did not fail.
	failing := func(last storage.StreamAppend, keys ...storage.IdempotencyKeyInsert) *storage.CommitParams {
		return &storage.CommitParams{
			Appends: []storage.StreamAppend{
				{Stream: "fresh", ExpectedVersion: storage.NoStream, Events: events("fresh", 0, 3)},
				last,
			},
			IdempotencyKeys:   append([]storage.IdempotencyKeyInsert{{Scope: "start", Key: "new", Result: []byte("r"), TTL: longTTL}}, keys...),
			TaskInserts:       []storage.TaskInsert{{ID: "new-task", Queue: "q"}},
			TaskDeletes:       []string{"old-task"},
			TimerInserts:      []storage.TimerInsert{{ID: "new-timer"}},
			TimerDeletes:      []string{"old-timer"},
			ConsumerPositions: []storage.ConsumerPosition{{Consumer: "c", Partition: 1, Position: 9}},
			SagaUpserts:       []storage.Saga{{ID: "saga-1", Partition: 0, Stream: "fresh", Definition: "d", DefinitionVersion: 1, Status: "running"}},
		}
	}
	// unchanged fails the test unless the store holds exactly what setup
	// wrote.
	unchanged := func(t *testing.T, s *store) {
		t.Helper()
		if h := s.head(0); h != 2 {
			t.Fatalf("partition head = %d after a failed commit, want 2", h)
		}
		if evs := s.readStream("fresh"); len(evs) != 0 {
			t.Fatalf("failed commit left %d events of its first append", len(evs))
		}
		if info, err := s.d.StreamInfo(s.ctx, "existing"); err != nil || info.Version != 2 {
			t.Fatalf("StreamInfo(existing) = %+v, %v; want version 2", info, err)
		}
		_, err := s.d.IdempotencyKeyGet(s.ctx, "start", "new")
		wantErr(t, "idempotency key of a failed commit", err, storage.ErrNotFound)
		_, err = s.d.TaskGet(s.ctx, "new-task")
		wantErr(t, "task of a failed commit", err, storage.ErrNotFound)
		if _, err := s.d.TaskGet(s.ctx, "old-task"); err != nil {
			t.Fatalf("failed commit deleted a task: %v", err)
		}
		timers, err := s.d.TimerList(s.ctx, &storage.TimerListParams{Partition: 0, Limit: 10})
		if err != nil || len(timers) != 1 || timers[0].ID != "old-timer" {
			t.Fatalf("timers after a failed commit = %+v, %v; want only old-timer", timers, err)
		}
		if pos, err := s.d.ConsumerPositionGet(s.ctx, "c", 1); err != nil || pos != 0 {
			t.Fatalf("consumer position after a failed commit = %d, %v; want 0", pos, err)
		}
		_, err = s.d.SagaGet(s.ctx, "saga-1")
		wantErr(t, "saga of a failed commit", err, storage.ErrNotFound)
	}

	t.Run("SecondAppendConflicts", func(t *testing.T) {
		t.Parallel()
		s := setup(t)
		_, err := s.tryCommit(0, failing(storage.StreamAppend{Stream: "existing", ExpectedVersion: 1, Events: events("existing", 1, 1)}))
		var vc *storage.VersionConflictError
		if !errors.As(err, &vc) || vc.Actual != 2 {
			t.Fatalf("got %v, want a version conflict with actual 2", err)
		}
		unchanged(t, s)
	})
	t.Run("IdempotencyKeyExists", func(t *testing.T) {
		t.Parallel()
		s := setup(t)
		_, err := s.tryCommit(0, failing(
			storage.StreamAppend{Stream: "other", ExpectedVersion: storage.NoStream, Events: events("other", 0, 1)},
			storage.IdempotencyKeyInsert{Scope: "start", Key: "stored", Result: []byte("second"), TTL: longTTL},
		))
		wantErr(t, "commit with a stored key", err, storage.ErrIdempotencyKeyExists)
		unchanged(t, s)
	})
	t.Run("Fenced", func(t *testing.T) {
		t.Parallel()
		s := setup(t)
		p := failing(storage.StreamAppend{Stream: "other", ExpectedVersion: storage.NoStream, Events: events("other", 0, 1)})
		p.Epoch = s.epochs[0] + 1
		_, err := s.tryCommit(0, p)
		wantErr(t, "commit with a future epoch", err, storage.ErrFenced)
		unchanged(t, s)
	})
	t.Run("DuplicateTaskID", func(t *testing.T) {
		t.Parallel()
		s := setup(t)
		p := failing(storage.StreamAppend{Stream: "other", ExpectedVersion: storage.NoStream, Events: events("other", 0, 1)})
		p.TaskDeletes = nil // the old task must still exist for its id to clash
		p.TaskInserts = append(p.TaskInserts, storage.TaskInsert{ID: "old-task", Queue: "q"})
		_, err := s.tryCommit(0, p)
		wantErr(t, "commit reusing a task id", err, storage.ErrInvalid)
		unchanged(t, s)
	})
	t.Run("DuplicateTimerID", func(t *testing.T) {
		t.Parallel()
		s := setup(t)
		p := failing(storage.StreamAppend{Stream: "other", ExpectedVersion: storage.NoStream, Events: events("other", 0, 1)})
		p.TimerDeletes = nil
		p.TimerInserts = append(p.TimerInserts, storage.TimerInsert{ID: "old-timer"})
		_, err := s.tryCommit(0, p)
		wantErr(t, "commit reusing a timer id", err, storage.ErrInvalid)
		unchanged(t, s)
	})
	t.Run("FailureDoesNotSpill", func(t *testing.T) {
		// Commits that run beside a failing one (a backend may batch them
		// into one transaction) are written whole.
		t.Parallel()
		s := setup(t)
		const n = 20
		errs := make(chan error, 2*n)
		for i := range n {
			go func() {
				_, err := s.d.Commit(s.ctx, &storage.CommitParams{Partition: 1, Epoch: s.epochs[1], Appends: []storage.StreamAppend{{
					Stream: "good-" + string(rune('a'+i)), ExpectedVersion: storage.NoStream, Events: events("good", 0, 2),
				}}})
				errs <- err
			}()
			go func() {
				_, err := s.d.Commit(s.ctx, &storage.CommitParams{Partition: 1, Epoch: s.epochs[1], Appends: []storage.StreamAppend{
					{Stream: "bad-" + string(rune('a'+i)), ExpectedVersion: storage.NoStream, Events: events("bad", 0, 1)},
					{Stream: "existing", ExpectedVersion: 7, Events: events("existing", 7, 1)},
				}})
				errs <- err
			}()
		}
		var good, bad int
		for range 2 * n {
			err := <-errs
			switch {
			case err == nil:
				good++
			case errors.Is(err, storage.ErrWrongPartition):
				bad++
			default:
				t.Fatalf("unexpected commit error: %v", err)
			}
		}
		if good != n || bad != n {
			t.Fatalf("%d commits succeeded and %d failed, want %d and %d", good, bad, n, n)
		}
		all := s.readPartition(1)
		if len(all) != 2*n || s.head(1) != int64(2*n) {
			t.Fatalf("partition 1 holds %d events, head %d; want %d", len(all), s.head(1), 2*n)
		}
		for i, e := range all {
			if e.Position != int64(i+1) || e.Stream[:5] != "good-" {
				t.Fatalf("event %d = %s at %d: want only good streams, gap-free", i, e.Stream, e.Position)
			}
		}
	})
}
