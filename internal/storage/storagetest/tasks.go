package storagetest

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/accord-saga/accord/internal/storage"
)

func exerciseTasks(t *testing.T, h Harness) {
	claim := func(t *testing.T, s *store, queue string, limit int, vis time.Duration) []storage.Task {
		t.Helper()
		ts, err := s.d.TaskClaim(s.ctx, &storage.TaskClaimParams{Queue: queue, Limit: limit, Visibility: vis})
		if err != nil {
			t.Fatalf("TaskClaim(%s): %v", queue, err)
		}
		return ts
	}
	get := func(t *testing.T, s *store, id string) storage.Task {
		t.Helper()
		task, err := s.d.TaskGet(s.ctx, id)
		if err != nil {
			t.Fatalf("TaskGet(%s): %v", id, err)
		}
		return task
	}
	stats := func(t *testing.T, s *store, queue string) storage.QueueStats {
		t.Helper()
		all, err := s.d.TaskQueueStats(s.ctx)
		if err != nil {
			t.Fatalf("TaskQueueStats: %v", err)
		}
		for _, q := range all {
			if q.Queue == queue {
				return q
			}
		}
		return storage.QueueStats{Queue: queue}
	}

	t.Run("InsertKinds", func(t *testing.T) {
		t.Parallel()
		s := open(t, h, 2)
		res := s.commit(1, &storage.CommitParams{TaskInserts: []storage.TaskInsert{
			{ID: "visible", Queue: "q", Payload: []byte("p1")},
			{ID: "delayed", Queue: "q", Payload: []byte("p2"), Delay: longTTL},
			{ID: "claimed", Queue: "q", Payload: []byte("p3"), ClaimToken: "tok-1", ClaimFor: longTTL},
			{ID: "elsewhere", Queue: "other"},
		}})
		v := get(t, s, "visible")
		if v.ID != "visible" || v.Partition != 1 || v.Queue != "q" || string(v.Payload) != "p1" || v.Deliveries != 0 || v.ClaimToken != "" ||
			!v.VisibleAt.Equal(res.Now) || !v.CreatedAt.Equal(res.Now) {
			t.Fatalf("visible task = %+v, want it visible at the commit time %v", v, res.Now)
		}
		if d := get(t, s, "delayed"); !d.VisibleAt.Equal(res.Now.Add(longTTL)) || d.Deliveries != 0 {
			t.Fatalf("delayed task = %+v, want visible at %v", d, res.Now.Add(longTTL))
		}
		if c := get(t, s, "claimed"); c.ClaimToken != "tok-1" || c.Deliveries != 1 || !c.VisibleAt.Equal(res.Now.Add(longTTL)) {
			t.Fatalf("pre-claimed task = %+v, want token tok-1, 1 delivery, visible at %v", c, res.Now.Add(longTTL))
		}
		_, err := s.d.TaskGet(s.ctx, "missing")
		wantErr(t, "TaskGet of a missing task", err, storage.ErrNotFound)
		if q := stats(t, s, "q"); q.Visible != 1 || q.InFlight != 1 || q.Delayed != 1 || q.OldestAge < 0 || q.OldestAge > longTTL {
			t.Fatalf("stats = %+v, want 1 visible, 1 in flight, 1 delayed", q)
		}

		got := claim(t, s, "q", 10, longTTL)
		if len(got) != 1 || got[0].ID != "visible" || got[0].Deliveries != 1 || got[0].ClaimToken == "" || string(got[0].Payload) != "p1" {
			t.Fatalf("claim = %+v, want only the visible task, delivered once, with a token", got)
		}
		if !got[0].VisibleAt.After(res.Now) {
			t.Fatalf("claimed task visible at %v, want later than %v", got[0].VisibleAt, res.Now)
		}
		if again := claim(t, s, "q", 10, longTTL); len(again) != 0 {
			t.Fatalf("second claim = %+v, want nothing while claims are valid", again)
		}
		if q := stats(t, s, "q"); q.Visible != 0 || q.InFlight != 2 || q.Delayed != 1 || q.OldestAge != 0 {
			t.Fatalf("stats after claim = %+v, want 0 visible, 2 in flight, 1 delayed, no age", q)
		}
		if q := stats(t, s, "other"); q.Visible != 1 {
			t.Fatalf("stats of queue other = %+v, want 1 visible", q)
		}
	})

	t.Run("HeartbeatAndRelease", func(t *testing.T) {
		t.Parallel()
		s := open(t, h, 1)
		s.commit(0, &storage.CommitParams{TaskInserts: []storage.TaskInsert{{ID: "t", Queue: "q"}}})
		c := claim(t, s, "q", 1, shortTTL)[0]
		hb, err := s.d.TaskHeartbeat(s.ctx, &storage.TaskHeartbeatParams{ID: "t", ClaimToken: c.ClaimToken, Visibility: longTTL})
		if err != nil || hb.ClaimToken != c.ClaimToken || hb.Deliveries != 1 || !hb.VisibleAt.After(c.VisibleAt) {
			t.Fatalf("heartbeat = %+v, %v; want the same claim visible after %v", hb, err, c.VisibleAt)
		}
		_, err = s.d.TaskHeartbeat(s.ctx, &storage.TaskHeartbeatParams{ID: "t", ClaimToken: "not-the-token", Visibility: longTTL})
		wantErr(t, "heartbeat with a wrong token", err, storage.ErrTaskClaimLost)
		_, err = s.d.TaskHeartbeat(s.ctx, &storage.TaskHeartbeatParams{ID: "missing", ClaimToken: c.ClaimToken, Visibility: longTTL})
		wantErr(t, "heartbeat of a missing task", err, storage.ErrTaskClaimLost)
		err = s.d.TaskRelease(s.ctx, &storage.TaskReleaseParams{ID: "t", ClaimToken: "not-the-token"})
		wantErr(t, "release with a wrong token", err, storage.ErrTaskClaimLost)

		// The heartbeat outlives the first claim's visibility.
		s.waitPast(c.VisibleAt)
		if got := claim(t, s, "q", 1, longTTL); len(got) != 0 {
			t.Fatalf("claim of a heartbeaten task = %+v, want nothing", got)
		}
		if err := s.d.TaskRelease(s.ctx, &storage.TaskReleaseParams{ID: "t", ClaimToken: c.ClaimToken}); err != nil {
			t.Fatalf("release: %v", err)
		}
		_, err = s.d.TaskHeartbeat(s.ctx, &storage.TaskHeartbeatParams{ID: "t", ClaimToken: c.ClaimToken, Visibility: longTTL})
		wantErr(t, "heartbeat after release", err, storage.ErrTaskClaimLost)
		again := claim(t, s, "q", 1, longTTL)
		if len(again) != 1 || again[0].Deliveries != 2 || again[0].ClaimToken == c.ClaimToken || again[0].ClaimToken == "" {
			t.Fatalf("claim after release = %+v, want a second delivery with a new token", again)
		}

		// Release with a delay: given back, but not claimable until it passes.
		if err := s.d.TaskRelease(s.ctx, &storage.TaskReleaseParams{ID: "t", ClaimToken: again[0].ClaimToken, Delay: shortTTL}); err != nil {
			t.Fatalf("release with delay: %v", err)
		}
		if q := stats(t, s, "q"); q.Delayed != 1 || q.InFlight != 0 || q.Visible != 0 {
			t.Fatalf("stats after a delayed release = %+v, want 1 delayed", q)
		}
		released := get(t, s, "t")
		if got := claim(t, s, "q", 1, longTTL); len(got) != 0 {
			t.Fatalf("claim during the release delay = %+v, want nothing", got)
		}
		s.waitPast(released.VisibleAt)
		if got := claim(t, s, "q", 1, longTTL); len(got) != 1 || got[0].Deliveries != 3 {
			t.Fatalf("claim after the release delay = %+v, want the third delivery", got)
		}
	})

	t.Run("RedeliveryAfterVisibilityExpires", func(t *testing.T) {
		t.Parallel()
		s := open(t, h, 1)
		s.commit(0, &storage.CommitParams{TaskInserts: []storage.TaskInsert{
			{ID: "pre", Queue: "q", ClaimToken: "committer", ClaimFor: shortTTL},
			{ID: "t", Queue: "q"},
		}})
		first := claim(t, s, "q", 5, shortTTL)
		if len(first) != 1 || first[0].ID != "t" {
			t.Fatalf("first claim = %+v, want only t (pre is claimed by its committer)", first)
		}
		s.waitPast(first[0].VisibleAt)
		s.waitPast(get(t, s, "pre").VisibleAt)
		if q := stats(t, s, "q"); q.Visible != 2 || q.InFlight != 0 {
			t.Fatalf("stats after the claims expired = %+v, want 2 visible", q)
		}
		second := claim(t, s, "q", 5, longTTL)
		slices.SortFunc(second, func(a, b storage.Task) int { return strings.Compare(a.ID, b.ID) })
		if len(second) != 2 || second[0].ID != "pre" || second[0].Deliveries != 2 || second[0].ClaimToken == "committer" ||
			second[1].ID != "t" || second[1].Deliveries != 2 || second[1].ClaimToken == first[0].ClaimToken {
			t.Fatalf("redelivery = %+v, want both tasks delivered a second time with new tokens", second)
		}
		_, err := s.d.TaskHeartbeat(s.ctx, &storage.TaskHeartbeatParams{ID: "t", ClaimToken: first[0].ClaimToken, Visibility: longTTL})
		wantErr(t, "heartbeat with the stale token", err, storage.ErrTaskClaimLost)
		err = s.d.TaskRelease(s.ctx, &storage.TaskReleaseParams{ID: "pre", ClaimToken: "committer"})
		wantErr(t, "release with the committer's stale token", err, storage.ErrTaskClaimLost)
	})

	t.Run("DelayedBecomesVisible", func(t *testing.T) {
		t.Parallel()
		s := open(t, h, 1)
		res := s.commit(0, &storage.CommitParams{TaskInserts: []storage.TaskInsert{{ID: "later", Queue: "q", Delay: shortTTL}}})
		if got := claim(t, s, "q", 1, longTTL); len(got) != 0 {
			t.Fatalf("claim before the delay = %+v, want nothing", got)
		}
		s.waitPast(res.Now.Add(shortTTL))
		if got := claim(t, s, "q", 1, longTTL); len(got) != 1 || got[0].ID != "later" {
			t.Fatalf("claim after the delay = %+v, want the task", got)
		}
	})

	t.Run("OldestFirst", func(t *testing.T) {
		t.Parallel()
		s := open(t, h, 2)
		// Separate commits, so each task is visible from a later time; ids
		// sort the same way in case two commits share a timestamp.
		for i := range 4 {
			s.commit(i%2, &storage.CommitParams{TaskInserts: []storage.TaskInsert{{ID: fmt.Sprintf("t%d", i), Queue: "q"}}})
		}
		for i := range 4 {
			got := claim(t, s, "q", 1, longTTL)
			if len(got) != 1 || got[0].ID != fmt.Sprintf("t%d", i) {
				t.Fatalf("claim %d = %+v, want t%d", i, got, i)
			}
		}
	})

	t.Run("ConcurrentClaimersNeverShare", func(t *testing.T) {
		t.Parallel()
		s := open(t, h, 2)
		const tasks = 200
		for p := range 2 {
			var ins []storage.TaskInsert
			for i := range tasks / 2 {
				ins = append(ins, storage.TaskInsert{ID: fmt.Sprintf("p%d-%03d", p, i), Queue: "work"})
			}
			s.commit(p, &storage.CommitParams{TaskInserts: ins})
		}
		const claimers = 8
		got := make([][]storage.Task, claimers)
		errs := make([]error, claimers)
		var wg sync.WaitGroup
		for c := range claimers {
			wg.Go(func() {
				// Bounded: a backend that hands tasks out twice must fail
				// the test, not spin.
				for len(got[c]) <= tasks {
					ts, err := s.d.TaskClaim(s.ctx, &storage.TaskClaimParams{Queue: "work", Limit: 7, Visibility: longTTL})
					if err != nil {
						errs[c] = err
						return
					}
					if len(ts) == 0 {
						return
					}
					got[c] = append(got[c], ts...)
				}
			})
		}
		wg.Wait()
		seen := make(map[string]int)
		for c := range claimers {
			if errs[c] != nil {
				t.Fatalf("claimer %d: %v", c, errs[c])
			}
			for _, task := range got[c] {
				if prev, dup := seen[task.ID]; dup {
					t.Fatalf("task %s handed to claimers %d and %d", task.ID, prev, c)
				}
				seen[task.ID] = c
				if task.Deliveries != 1 {
					t.Fatalf("task %s has %d deliveries, want 1", task.ID, task.Deliveries)
				}
			}
		}
		if len(seen) != tasks {
			t.Fatalf("claimers got %d distinct tasks, want %d", len(seen), tasks)
		}
	})

	t.Run("DeleteInCommit", func(t *testing.T) {
		t.Parallel()
		s := open(t, h, 2)
		s.commit(0, &storage.CommitParams{TaskInserts: []storage.TaskInsert{{ID: "a", Queue: "q"}, {ID: "b", Queue: "q"}}})
		c := claim(t, s, "q", 1, longTTL)[0]
		s.commit(0, &storage.CommitParams{TaskDeletes: []string{c.ID, "never-existed"}})
		_, err := s.d.TaskGet(s.ctx, c.ID)
		wantErr(t, "TaskGet of a deleted task", err, storage.ErrNotFound)
		_, err = s.d.TaskHeartbeat(s.ctx, &storage.TaskHeartbeatParams{ID: c.ID, ClaimToken: c.ClaimToken, Visibility: longTTL})
		wantErr(t, "heartbeat of a deleted task", err, storage.ErrTaskClaimLost)
		err = s.d.TaskRelease(s.ctx, &storage.TaskReleaseParams{ID: c.ID, ClaimToken: c.ClaimToken})
		wantErr(t, "release of a deleted task", err, storage.ErrTaskClaimLost)
		if q := stats(t, s, "q"); q.Visible+q.InFlight+q.Delayed != 1 {
			t.Fatalf("stats after delete = %+v, want 1 task left", q)
		}
		// The id is free again once the task is gone.
		s.commit(0, &storage.CommitParams{TaskInserts: []storage.TaskInsert{{ID: c.ID, Queue: "q"}}})
	})
}
