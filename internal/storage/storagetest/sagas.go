package storagetest

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/accord-saga/accord/internal/storage"
)

func exerciseSagas(t *testing.T, h Harness) {
	t.Run("UpsertTimes", func(t *testing.T) {
		t.Parallel()
		s := open(t, h, 2)
		long := time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC)
		rec := storage.Saga{
			ID: "s1", Partition: 1, Stream: "saga/s1", Definition: "order", DefinitionVersion: 3, Status: "running",
			IdempotencyKey: "idem-1", State: []byte(`{"step":1}`),
			CreatedAt: long, UpdatedAt: long, EndedAt: long, // ignored: the store sets them
		}
		get := func() storage.Saga {
			t.Helper()
			got, err := s.d.SagaGet(s.ctx, "s1")
			if err != nil {
				t.Fatalf("SagaGet: %v", err)
			}
			return got
		}
		r1 := s.commit(1, &storage.CommitParams{SagaUpserts: []storage.Saga{rec}})
		got := get()
		if got.ID != "s1" || got.Partition != 1 || got.Stream != "saga/s1" || got.Definition != "order" || got.DefinitionVersion != 3 ||
			got.Status != "running" || got.Terminal || got.IdempotencyKey != "idem-1" || string(got.State) != `{"step":1}` {
			t.Fatalf("saga = %+v, want the record as upserted", got)
		}
		if !got.CreatedAt.Equal(r1.Now) || !got.UpdatedAt.Equal(r1.Now) || !got.EndedAt.IsZero() {
			t.Fatalf("times = created %v updated %v ended %v; want %v, %v and zero", got.CreatedAt, got.UpdatedAt, got.EndedAt, r1.Now, r1.Now)
		}
		s.waitPast(r1.Now)
		rec.Status, rec.State = "compensating", []byte(`{"step":2}`)
		r2 := s.commit(1, &storage.CommitParams{SagaUpserts: []storage.Saga{rec}})
		got = get()
		if !got.CreatedAt.Equal(r1.Now) || !got.UpdatedAt.Equal(r2.Now) || !got.EndedAt.IsZero() || got.Status != "compensating" || string(got.State) != `{"step":2}` {
			t.Fatalf("after update = %+v, want created %v updated %v", got, r1.Now, r2.Now)
		}
		s.waitPast(r2.Now)
		rec.Status, rec.Terminal = "compensated", true
		r3 := s.commit(1, &storage.CommitParams{SagaUpserts: []storage.Saga{rec}})
		got = get()
		if !got.Terminal || !got.EndedAt.Equal(r3.Now) || !got.UpdatedAt.Equal(r3.Now) || !got.CreatedAt.Equal(r1.Now) {
			t.Fatalf("after ending = %+v, want ended and updated at %v", got, r3.Now)
		}
		s.waitPast(r3.Now)
		rec.State = []byte(`{"note":"after end"}`)
		r4 := s.commit(1, &storage.CommitParams{SagaUpserts: []storage.Saga{rec}})
		got = get()
		if !got.EndedAt.Equal(r3.Now) || !got.UpdatedAt.Equal(r4.Now) {
			t.Fatalf("after a second terminal upsert = %+v, want EndedAt kept at %v", got, r3.Now)
		}
		_, err := s.d.SagaGet(s.ctx, "missing")
		wantErr(t, "SagaGet of a missing saga", err, storage.ErrNotFound)
	})

	t.Run("ListFiltersAndPaging", func(t *testing.T) {
		t.Parallel()
		s := open(t, h, 3)
		statuses := []string{"running", "completed", "compensated", "needs_operator", "running"}
		defs := []string{"order", "payment"}
		// 30 sagas, three per commit so that some share a creation time and
		// the id must break the tie.
		var all []storage.Saga
		for c := range 10 {
			p := c % 3
			var ups []storage.Saga
			for i := range 3 {
				n := c*3 + i
				st := statuses[n%len(statuses)]
				ups = append(ups, storage.Saga{
					ID: fmt.Sprintf("saga-%02d", (n*7)%30), Partition: p, Stream: fmt.Sprintf("saga/%d", n),
					Definition: defs[n%2], DefinitionVersion: 1, Status: st, Terminal: st == "completed" || st == "compensated",
				})
			}
			s.commit(p, &storage.CommitParams{SagaUpserts: ups})
			if c == 4 {
				s.waitPast(s.now()) // make sure later commits get later times
			}
		}
		for i := range 30 {
			got, err := s.d.SagaGet(s.ctx, fmt.Sprintf("saga-%02d", i))
			if err != nil {
				t.Fatal(err)
			}
			all = append(all, got)
		}
		slices.SortFunc(all, func(a, b storage.Saga) int {
			if c := b.CreatedAt.Compare(a.CreatedAt); c != 0 {
				return c
			}
			return strings.Compare(b.ID, a.ID)
		})
		mid, late := all[20].CreatedAt, all[8].CreatedAt // all is newest first
		cases := []struct {
			name   string
			params storage.SagaListParams
			keep   func(storage.Saga) bool
		}{
			{"all", storage.SagaListParams{}, func(storage.Saga) bool { return true }},
			{"statuses", storage.SagaListParams{Statuses: []string{"running", "needs_operator"}},
				func(x storage.Saga) bool { return x.Status == "running" || x.Status == "needs_operator" }},
			{"one status", storage.SagaListParams{Statuses: []string{"compensated"}}, func(x storage.Saga) bool { return x.Status == "compensated" }},
			{"definition", storage.SagaListParams{Definition: "payment"}, func(x storage.Saga) bool { return x.Definition == "payment" }},
			{"partition", storage.SagaListParams{ByPartition: true, Partition: 2}, func(x storage.Saga) bool { return x.Partition == 2 }},
			{"partition 0", storage.SagaListParams{ByPartition: true, Partition: 0}, func(x storage.Saga) bool { return x.Partition == 0 }},
			{"non-terminal", storage.SagaListParams{NonTerminal: true}, func(x storage.Saga) bool { return !x.Terminal }},
			{"non-terminal in partition", storage.SagaListParams{NonTerminal: true, ByPartition: true, Partition: 1},
				func(x storage.Saga) bool { return !x.Terminal && x.Partition == 1 }},
			{"created after", storage.SagaListParams{CreatedAfter: mid}, func(x storage.Saga) bool { return !x.CreatedAt.Before(mid) }},
			{"created before", storage.SagaListParams{CreatedBefore: mid}, func(x storage.Saga) bool { return x.CreatedAt.Before(mid) }},
			{"created range", storage.SagaListParams{CreatedAfter: mid, CreatedBefore: late},
				func(x storage.Saga) bool { return !x.CreatedAt.Before(mid) && x.CreatedAt.Before(late) }},
			{"everything", storage.SagaListParams{Statuses: []string{"running"}, Definition: "order", NonTerminal: true, CreatedAfter: mid},
				func(x storage.Saga) bool {
					return x.Status == "running" && x.Definition == "order" && !x.Terminal && !x.CreatedAt.Before(mid)
				}},
			{"nothing", storage.SagaListParams{Statuses: []string{"no-such-status"}}, func(storage.Saga) bool { return false }},
		}
		for _, c := range cases {
			var want []string
			for _, x := range all {
				if c.keep(x) {
					want = append(want, x.ID)
				}
			}
			p := c.params
			p.Limit = 100
			got, err := s.d.SagaList(s.ctx, &p)
			if err != nil {
				t.Fatalf("%s: SagaList: %v", c.name, err)
			}
			if g := sagaIDs(got); fmt.Sprint(g) != fmt.Sprint(want) {
				t.Fatalf("%s: SagaList = %v, want %v", c.name, g, want)
			}
			for _, limit := range []int{1, 4} {
				p := c.params
				p.Limit = limit
				var paged []storage.Saga
				for range 40 {
					page, err := s.d.SagaList(s.ctx, &p)
					if err != nil {
						t.Fatalf("%s: SagaList page: %v", c.name, err)
					}
					paged = append(paged, page...)
					if len(page) < limit {
						break
					}
					p.AfterCreatedAt, p.AfterID = page[len(page)-1].CreatedAt, page[len(page)-1].ID
				}
				if g := sagaIDs(paged); fmt.Sprint(g) != fmt.Sprint(want) {
					t.Fatalf("%s: paging by %d = %v, want %v", c.name, limit, g, want)
				}
			}
		}
		for _, x := range all {
			if got, _ := s.d.SagaGet(s.ctx, x.ID); !bytes.Equal(got.State, x.State) || got.Status != x.Status {
				t.Fatalf("saga %s changed while listing", x.ID)
			}
		}
	})

	t.Run("DeleteEnded", func(t *testing.T) {
		t.Parallel()
		s := open(t, h, 2)
		saga := func(id string, p int, terminal bool) *storage.CommitParams {
			st := "running"
			if terminal {
				st = "completed"
			}
			return &storage.CommitParams{
				Appends:     []storage.StreamAppend{{Stream: "saga/" + id, ExpectedVersion: storage.AnyVersion, Events: events("saga/"+id, 0, 2)}},
				SagaUpserts: []storage.Saga{{ID: id, Partition: p, Stream: "saga/" + id, Definition: "d", DefinitionVersion: 1, Status: st, Terminal: terminal}},
			}
		}
		s.commit(0, saga("old-1", 0, true))
		s.commit(1, saga("old-2", 1, true))
		s.commit(0, saga("running", 0, false))
		r := s.commit(0, saga("old-3", 0, true))
		s.waitPast(r.Now)
		cut := s.now()
		s.waitPast(cut)
		s.commit(0, saga("new", 0, true))
		s.commit(0, saga("running", 0, false))

		n, err := s.d.SagaDeleteEnded(s.ctx, &storage.SagaDeleteEndedParams{EndedBefore: cut, Limit: 2})
		if err != nil || n != 2 {
			t.Fatalf("SagaDeleteEnded(limit 2) = %d, %v; want 2", n, err)
		}
		n, err = s.d.SagaDeleteEnded(s.ctx, &storage.SagaDeleteEndedParams{EndedBefore: cut, Limit: 10})
		if err != nil || n != 1 {
			t.Fatalf("SagaDeleteEnded(limit 10) = %d, %v; want the 1 left", n, err)
		}
		if n, err := s.d.SagaDeleteEnded(s.ctx, &storage.SagaDeleteEndedParams{EndedBefore: cut, Limit: 10}); err != nil || n != 0 {
			t.Fatalf("third SagaDeleteEnded = %d, %v; want 0", n, err)
		}
		for _, id := range []string{"old-1", "old-2", "old-3"} {
			_, err := s.d.SagaGet(s.ctx, id)
			wantErr(t, "SagaGet of a deleted saga", err, storage.ErrNotFound)
			if evs := s.readStream("saga/" + id); len(evs) != 0 {
				t.Fatalf("deleted saga %s left %d events", id, len(evs))
			}
			_, err = s.d.StreamInfo(s.ctx, "saga/"+id)
			wantErr(t, "StreamInfo of a deleted saga's stream", err, storage.ErrNotFound)
		}
		for _, id := range []string{"running", "new"} {
			if _, err := s.d.SagaGet(s.ctx, id); err != nil {
				t.Fatalf("saga %s was deleted: %v", id, err)
			}
		}
		if evs := s.readStream("saga/running"); len(evs) != 4 {
			t.Fatalf("saga/running holds %d events, want 4", len(evs))
		}
		if evs := s.readStream("saga/new"); len(evs) != 2 {
			t.Fatalf("saga/new holds %d events, want 2", len(evs))
		}
		// Retention leaves holes in the log but never moves the head.
		if s.head(0) != 10 || len(s.readPartition(0)) != 6 {
			t.Fatalf("partition 0: head %d with %d events, want head 10 and 6 events left", s.head(0), len(s.readPartition(0)))
		}
	})
}

func sagaIDs(ss []storage.Saga) []string {
	out := make([]string, len(ss))
	for i, x := range ss {
		out[i] = x.ID
	}
	return out
}
