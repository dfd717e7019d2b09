package storagetest

import (
	"fmt"
	"testing"

	"github.com/accord-saga/accord/internal/storage"
)

func exerciseTimers(t *testing.T, h Harness) {
	ids := func(ts []storage.Timer) []string {
		out := make([]string, len(ts))
		for i, tm := range ts {
			out[i] = tm.ID
		}
		return out
	}
	due := func(t *testing.T, s *store, p, limit int) []storage.Timer {
		t.Helper()
		ts, err := s.d.TimerDue(s.ctx, &storage.TimerDueParams{Partition: p, Limit: limit})
		if err != nil {
			t.Fatalf("TimerDue(%d): %v", p, err)
		}
		return ts
	}

	t.Run("DueByDatabaseTime", func(t *testing.T) {
		t.Parallel()
		s := open(t, h, 2)
		// Inserted latest first, so that order of insertion cannot pass for
		// order of fire time.
		res := s.commit(0, &storage.CommitParams{TimerInserts: []storage.TimerInsert{
			{ID: "c-hour", Delay: longTTL, Payload: []byte("3")},
			{ID: "b-soon", Delay: shortTTL, Payload: []byte("2")},
		}})
		res2 := s.commit(0, &storage.CommitParams{TimerInserts: []storage.TimerInsert{{ID: "a-now", Payload: []byte("1")}}})
		s.commit(1, &storage.CommitParams{TimerInserts: []storage.TimerInsert{{ID: "other-partition"}}})

		got := due(t, s, 0, 10)
		if fmt.Sprint(ids(got)) != "[a-now]" || got[0].Partition != 0 || string(got[0].Payload) != "1" || !got[0].FireAt.Equal(res2.Now) {
			t.Fatalf("due at once = %+v, want only a-now firing at %v", got, res2.Now)
		}
		s.waitPast(res.Now.Add(shortTTL))
		got = due(t, s, 0, 10)
		if len(got) != 2 {
			t.Fatalf("due after the delay = %v, want a-now and b-soon", ids(got))
		}
		// Earliest first: a-now fires at its commit time, which is all but
		// certainly before b-soon's; the check holds either way.
		if got[0].FireAt.After(got[1].FireAt) || (got[0].FireAt.Equal(got[1].FireAt) && got[0].ID > got[1].ID) {
			t.Fatalf("due after the delay = %+v, want earliest first", got)
		}
		for _, tm := range got {
			if tm.ID == "b-soon" && (!tm.FireAt.Equal(res.Now.Add(shortTTL)) || string(tm.Payload) != "2") {
				t.Fatalf("b-soon = %+v, want it to fire at %v", tm, res.Now.Add(shortTTL))
			}
		}
		if first := due(t, s, 0, 1); len(first) != 1 || first[0].ID != got[0].ID {
			t.Fatalf("due with limit 1 = %v, want %s", ids(first), got[0].ID)
		}
		if other := due(t, s, 1, 10); fmt.Sprint(ids(other)) != "[other-partition]" {
			t.Fatalf("due in partition 1 = %v", ids(other))
		}
		s.commit(0, &storage.CommitParams{TimerDeletes: []string{"a-now", "never-existed"}})
		if got := due(t, s, 0, 10); fmt.Sprint(ids(got)) != "[b-soon]" {
			t.Fatalf("due after deleting a-now = %v, want [b-soon]", ids(got))
		}
	})

	t.Run("ReplaceInOneCommit", func(t *testing.T) {
		t.Parallel()
		s := open(t, h, 1)
		s.commit(0, &storage.CommitParams{
			TimerInserts: []storage.TimerInsert{{ID: "re-armed", Delay: longTTL, Payload: []byte("old")}},
			TaskInserts:  []storage.TaskInsert{{ID: "re-queued", Queue: "q", Payload: []byte("old")}},
		})
		// Deletes are applied before inserts, so one commit replaces a row.
		s.commit(0, &storage.CommitParams{
			TimerDeletes: []string{"re-armed"},
			TimerInserts: []storage.TimerInsert{{ID: "re-armed", Payload: []byte("new")}},
			TaskDeletes:  []string{"re-queued"},
			TaskInserts:  []storage.TaskInsert{{ID: "re-queued", Queue: "q", Payload: []byte("new")}},
		})
		if got := due(t, s, 0, 10); len(got) != 1 || got[0].ID != "re-armed" || string(got[0].Payload) != "new" {
			t.Fatalf("after replacing the timer, due = %+v; want re-armed with the new payload, due now", got)
		}
		task, err := s.d.TaskGet(s.ctx, "re-queued")
		if err != nil || string(task.Payload) != "new" {
			t.Fatalf("after replacing the task: %+v, %v; want the new payload", task, err)
		}
	})

	t.Run("ListPaging", func(t *testing.T) {
		t.Parallel()
		s := open(t, h, 2)
		// Five timers share one fire time (one commit, no delay), two more
		// fire later; ids of the shared time are out of order on purpose.
		var ins []storage.TimerInsert
		for _, id := range []string{"t3", "t1", "t5", "t2", "t4"} {
			ins = append(ins, storage.TimerInsert{ID: id, Payload: []byte(id)})
		}
		ins = append(ins, storage.TimerInsert{ID: "t0-later", Delay: longTTL}, storage.TimerInsert{ID: "t9-sooner", Delay: shortTTL})
		s.commit(1, &storage.CommitParams{TimerInserts: ins})
		want := "[t1 t2 t3 t4 t5 t9-sooner t0-later]"

		all, err := s.d.TimerList(s.ctx, &storage.TimerListParams{Partition: 1, Limit: 100})
		if err != nil || fmt.Sprint(ids(all)) != want {
			t.Fatalf("TimerList = %v, %v; want %s", ids(all), err, want)
		}
		for _, tm := range all {
			if tm.Partition != 1 || (tm.ID[:2] != "t0" && tm.ID[:2] != "t9" && string(tm.Payload) != tm.ID) {
				t.Fatalf("timer %+v read back wrong", tm)
			}
		}
		for _, limit := range []int{1, 2, 3} {
			var paged []storage.Timer
			p := &storage.TimerListParams{Partition: 1, Limit: limit}
			for range 20 {
				page, err := s.d.TimerList(s.ctx, p)
				if err != nil {
					t.Fatalf("TimerList page: %v", err)
				}
				if len(page) > limit {
					t.Fatalf("page of %d timers, limit %d", len(page), limit)
				}
				paged = append(paged, page...)
				if len(page) < limit {
					break
				}
				last := page[len(page)-1]
				p.AfterFireAt, p.AfterID = last.FireAt, last.ID
			}
			if fmt.Sprint(ids(paged)) != want {
				t.Fatalf("paging by %d = %v, want %s", limit, ids(paged), want)
			}
		}
		if other, err := s.d.TimerList(s.ctx, &storage.TimerListParams{Partition: 0, Limit: 10}); err != nil || len(other) != 0 {
			t.Fatalf("TimerList of an empty partition = %v, %v", ids(other), err)
		}
		// A deleted cursor timer does not break paging.
		s.commit(1, &storage.CommitParams{TimerDeletes: []string{"t2"}})
		page, err := s.d.TimerList(s.ctx, &storage.TimerListParams{Partition: 1, AfterFireAt: all[1].FireAt, AfterID: "t2", Limit: 2})
		if err != nil || fmt.Sprint(ids(page)) != "[t3 t4]" {
			t.Fatalf("page after a deleted cursor = %v, %v; want [t3 t4]", ids(page), err)
		}
	})
}
