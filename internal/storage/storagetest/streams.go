package storagetest

import (
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/accord-saga/accord/internal/storage"
)

func exerciseStore(t *testing.T, h Harness) {
	t.Run("InfoAndNow", func(t *testing.T) {
		t.Parallel()
		d := h.Open(t, 3)
		info := d.Info()
		if info.Partitions != 3 || info.Backend == "" || info.SchemaVersion <= 0 {
			t.Fatalf("Info() = %+v, want 3 partitions, a backend name and a schema version", info)
		}
		a, err := d.Now(t.Context())
		if err != nil {
			t.Fatalf("Now: %v", err)
		}
		waitPast(t, d, a)
		b, err := d.Now(t.Context())
		if err != nil {
			t.Fatalf("Now: %v", err)
		}
		if !b.After(a) || a.IsZero() {
			t.Fatalf("Now went from %v to %v, want it to advance", a, b)
		}
	})
	t.Run("CloseTwice", func(t *testing.T) {
		t.Parallel()
		d := h.Open(t, 1)
		if err := d.Close(); err != nil {
			t.Fatalf("first Close: %v", err)
		}
		if err := d.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
	})
}

func exerciseStreams(t *testing.T, h Harness) {
	t.Run("AppendAndRead", func(t *testing.T) {
		t.Parallel()
		s := open(t, h, 2)
		first := s.appendEvents(0, "order-1", storage.NoStream, 3)
		for i, e := range first {
			if e.Partition != 0 || e.Position != int64(i+1) || e.Version != int64(i+1) || e.Stream != "order-1" {
				t.Fatalf("event %d = %+v, want partition 0, position and version %d", i, e, i+1)
			}
		}
		second := s.appendEvents(0, "order-1", 3, 2)
		if second[0].Position != 4 || second[1].Version != 5 {
			t.Fatalf("second append got positions %d.. versions ..%d, want 4.. and ..5", second[0].Position, second[1].Version)
		}
		anyAppend := s.commit(0, &storage.CommitParams{Appends: []storage.StreamAppend{{
			Stream: "order-1", ExpectedVersion: storage.AnyVersion, Events: events("order-1", 5, 1),
		}}}).Events
		if anyAppend[0].Version != 6 || anyAppend[0].Position != 6 {
			t.Fatalf("AnyVersion append got version %d position %d, want 6 and 6", anyAppend[0].Version, anyAppend[0].Position)
		}
		all := append(append(first, second...), anyAppend...)

		checkEvents(t, "StreamRead from 0", s.readStream("order-1"), all)
		got, err := s.d.StreamRead(s.ctx, &storage.StreamReadParams{Stream: "order-1", FromVersion: 1})
		if err != nil {
			t.Fatal(err)
		}
		checkEvents(t, "StreamRead from 1", got, all)
		got, err = s.d.StreamRead(s.ctx, &storage.StreamReadParams{Stream: "order-1", FromVersion: 4, Limit: 2})
		if err != nil {
			t.Fatal(err)
		}
		checkEvents(t, "StreamRead from 4 limit 2", got, all[3:5])
		got, err = s.d.StreamRead(s.ctx, &storage.StreamReadParams{Stream: "order-1", FromVersion: 7})
		if err != nil || len(got) != 0 {
			t.Fatalf("StreamRead past the end = %d events, %v; want none", len(got), err)
		}
		checkEvents(t, "PartitionRead", s.readPartition(0), all)
		got, err = s.d.PartitionRead(s.ctx, &storage.PartitionReadParams{Partition: 0, FromPosition: 2, Limit: 3})
		if err != nil {
			t.Fatal(err)
		}
		checkEvents(t, "PartitionRead from 2 limit 3", got, all[1:4])
		got, err = s.d.PartitionRead(s.ctx, &storage.PartitionReadParams{Partition: 0, FromPosition: 0, Limit: 1})
		if err != nil {
			t.Fatal(err)
		}
		checkEvents(t, "PartitionRead from 0 limit 1", got, all[:1])
		if h := s.head(0); h != 6 {
			t.Fatalf("PartitionHead(0) = %d, want 6", h)
		}
		if h := s.head(1); h != 0 {
			t.Fatalf("PartitionHead(1) = %d, want 0", h)
		}
		info, err := s.d.StreamInfo(s.ctx, "order-1")
		if err != nil || info != (storage.StreamInfo{Stream: "order-1", Partition: 0, Version: 6}) {
			t.Fatalf("StreamInfo = %+v, %v; want partition 0 version 6", info, err)
		}
		_, err = s.d.StreamInfo(s.ctx, "order-2")
		wantErr(t, "StreamInfo of a missing stream", err, storage.ErrNotFound)
		if got := s.readStream("order-2"); len(got) != 0 {
			t.Fatalf("StreamRead of a missing stream = %d events, want none", len(got))
		}
	})

	t.Run("CommitResult", func(t *testing.T) {
		t.Parallel()
		s := open(t, h, 1)
		before := s.now()
		big := make([]byte, 256<<10)
		for i := range big {
			big[i] = byte(i * 7)
		}
		res := s.commit(0, &storage.CommitParams{Appends: []storage.StreamAppend{
			{Stream: "a", ExpectedVersion: storage.NoStream, Events: []storage.EventInput{{Type: "big", Data: big}, {Type: "empty"}}},
			{Stream: "b", ExpectedVersion: storage.AnyVersion, Events: events("b", 0, 2)},
		}})
		if res.Now.Before(before) {
			t.Fatalf("CommitResult.Now %v is before an earlier Now %v", res.Now, before)
		}
		want := []struct {
			stream   string
			pos, ver int64
			typ      string
			dataLen  int // -1: not checked
		}{{"a", 1, 1, "big", len(big)}, {"a", 2, 2, "empty", 0}, {"b", 3, 1, "test.event", -1}, {"b", 4, 2, "test.event", -1}}
		if len(res.Events) != len(want) {
			t.Fatalf("CommitResult has %d events, want %d", len(res.Events), len(want))
		}
		for i, w := range want {
			e := res.Events[i]
			if e.Stream != w.stream || e.Position != w.pos || e.Version != w.ver || e.Type != w.typ || e.Partition != 0 || !e.RecordedAt.Equal(res.Now) {
				t.Fatalf("event %d = {%s pos %d ver %d %s at %v}, want {%s pos %d ver %d %s at %v}",
					i, e.Stream, e.Position, e.Version, e.Type, e.RecordedAt, w.stream, w.pos, w.ver, w.typ, res.Now)
			}
			if w.dataLen >= 0 && len(e.Data) != w.dataLen {
				t.Fatalf("event %d data is %d bytes, want %d", i, len(e.Data), w.dataLen)
			}
		}
		checkEvents(t, "read back", s.readPartition(0), res.Events)
		// A commit that appends nothing is valid: it carries only side tables.
		empty := s.commit(0, &storage.CommitParams{})
		if len(empty.Events) != 0 || empty.Now.Before(res.Now) {
			t.Fatalf("empty commit = %+v, want no events and a later time", empty)
		}
	})

	t.Run("VersionConflict", func(t *testing.T) {
		t.Parallel()
		s := open(t, h, 1)
		s.appendEvents(0, "s", storage.NoStream, 2)
		cases := []struct {
			stream           string
			expected, actual int64
		}{
			{"s", storage.NoStream, 2},
			{"s", 1, 2},
			{"s", 3, 2},
			{"missing", 4, 0},
		}
		for _, c := range cases {
			_, err := s.tryCommit(0, &storage.CommitParams{Appends: []storage.StreamAppend{{
				Stream: c.stream, ExpectedVersion: c.expected, Events: events(c.stream, c.expected, 1),
			}}})
			var vc *storage.VersionConflictError
			if !errors.As(err, &vc) || !errors.Is(err, storage.ErrVersionConflict) {
				t.Fatalf("append to %q expecting %d: got %v, want *VersionConflictError", c.stream, c.expected, err)
			}
			if vc.Stream != c.stream || vc.Expected != c.expected || vc.Actual != c.actual {
				t.Fatalf("conflict = %+v, want stream %q expected %d actual %d", *vc, c.stream, c.expected, c.actual)
			}
		}
		if h := s.head(0); h != 2 {
			t.Fatalf("head after failed appends = %d, want 2", h)
		}
		if _, err := s.d.StreamInfo(s.ctx, "missing"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("a failed append created its stream: %v", err)
		}
	})

	t.Run("ConcurrentSameExpectedVersion", func(t *testing.T) {
		t.Parallel()
		s := open(t, h, 2)
		s.appendEvents(1, "contended", storage.NoStream, 1)
		const writers = 16
		errs := make([]error, writers)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range writers {
			wg.Go(func() {
				<-start
				_, errs[i] = s.d.Commit(s.ctx, &storage.CommitParams{Partition: 1, Epoch: s.epochs[1], Appends: []storage.StreamAppend{{
					Stream: "contended", ExpectedVersion: 1, Events: []storage.EventInput{{Type: "w", Data: fmt.Appendf(nil, "%d", i)}},
				}}})
			})
		}
		close(start)
		wg.Wait()
		wins := 0
		for i, err := range errs {
			if err == nil {
				wins++
				continue
			}
			var vc *storage.VersionConflictError
			if !errors.As(err, &vc) || !errors.Is(err, storage.ErrVersionConflict) || vc.Actual != 2 || vc.Expected != 1 {
				t.Fatalf("writer %d: got %v, want a version conflict with actual version 2", i, err)
			}
		}
		if wins != 1 {
			t.Fatalf("%d writers won, want exactly 1", wins)
		}
		if got := s.readStream("contended"); len(got) != 2 || s.head(1) != 2 {
			t.Fatalf("stream has %d events and head %d, want 2 and 2", len(got), s.head(1))
		}
	})

	t.Run("GapFreeUnderConcurrentWriters", func(t *testing.T) {
		t.Parallel()
		s := open(t, h, 2)
		const writers, commits = 8, 30
		results := make([][]storage.Event, writers)
		errs := make([]error, writers)
		var wg sync.WaitGroup
		for w := range writers {
			wg.Go(func() {
				stream := fmt.Sprintf("writer-%d", w)
				version := int64(0)
				for c := range commits {
					n := 1 + (w+c)%3
					res, err := s.d.Commit(s.ctx, &storage.CommitParams{Partition: 0, Epoch: s.epochs[0], Appends: []storage.StreamAppend{{
						Stream: stream, ExpectedVersion: version, Events: events(stream, version, n),
					}}})
					if err != nil {
						errs[w] = fmt.Errorf("commit %d: %w", c, err)
						return
					}
					version += int64(n)
					results[w] = append(results[w], res.Events...)
				}
			})
		}
		wg.Wait()
		for w, err := range errs {
			if err != nil {
				t.Fatalf("writer %d: %v", w, err)
			}
		}
		all := s.readPartition(0)
		byPos := make(map[int64]storage.Event, len(all))
		versions := make(map[string]int64)
		for i, e := range all {
			if e.Position != int64(i+1) {
				t.Fatalf("event %d has position %d: positions are not gap-free from 1", i, e.Position)
			}
			if e.Version != versions[e.Stream]+1 {
				t.Fatalf("stream %s: version %d at position %d follows version %d", e.Stream, e.Version, e.Position, versions[e.Stream])
			}
			versions[e.Stream] = e.Version
			if i > 0 && e.RecordedAt.Before(all[i-1].RecordedAt) {
				t.Fatalf("position %d recorded at %v, before position %d at %v", e.Position, e.RecordedAt, e.Position-1, all[i-1].RecordedAt)
			}
			byPos[e.Position] = e
		}
		total := 0
		for w, evs := range results {
			total += len(evs)
			for _, e := range evs {
				if d := diffEvent(byPos[e.Position], e); d != "" {
					t.Fatalf("writer %d: event at position %d reads back with %s", w, e.Position, d)
				}
			}
		}
		if total != len(all) || s.head(0) != int64(total) {
			t.Fatalf("writers got %d events acknowledged, partition holds %d, head %d", total, len(all), s.head(0))
		}
	})

	t.Run("PartitionsAreIndependent", func(t *testing.T) {
		t.Parallel()
		s := open(t, h, 3)
		for p := range 3 {
			for i := range 2 {
				evs := s.appendEvents(p, fmt.Sprintf("p%d-s%d", p, i), storage.NoStream, 2)
				if evs[0].Position != int64(2*i+1) || evs[0].Partition != p {
					t.Fatalf("partition %d stream %d starts at position %d, want %d", p, i, evs[0].Position, 2*i+1)
				}
			}
		}
		for p := range 3 {
			if got := s.readPartition(p); len(got) != 4 || s.head(p) != 4 {
				t.Fatalf("partition %d holds %d events, want 4", p, len(got))
			}
		}
	})

	t.Run("WrongPartition", func(t *testing.T) {
		t.Parallel()
		s := open(t, h, 2)
		s.appendEvents(0, "fixed", storage.NoStream, 1)
		for _, expected := range []int64{1, storage.AnyVersion} {
			_, err := s.tryCommit(1, &storage.CommitParams{
				Appends:     []storage.StreamAppend{{Stream: "fixed", ExpectedVersion: expected, Events: events("fixed", 1, 1)}},
				TaskInserts: []storage.TaskInsert{{ID: "task-wp", Queue: "q"}},
			})
			wantErr(t, "append in another partition", err, storage.ErrWrongPartition)
		}
		if s.head(1) != 0 || s.head(0) != 1 {
			t.Fatalf("heads after wrong-partition appends = %d, %d; want 1, 0", s.head(0), s.head(1))
		}
		_, err := s.d.TaskGet(s.ctx, "task-wp")
		wantErr(t, "task of a failed commit", err, storage.ErrNotFound)
	})
}
