package storagetest

import (
	"bytes"
	"testing"

	"github.com/accord-saga/accord/internal/storage"
)

// exerciseReopen writes one of everything, reopens the store and reads it
// all back.
func exerciseReopen(t *testing.T, h Harness) {
	t.Run("EverythingSurvives", func(t *testing.T) {
		t.Parallel()
		s := open(t, h, 3)
		ctx := s.ctx
		def, _, err := s.d.DefinitionPut(ctx, &storage.Definition{Name: "order", Version: 1, Content: []byte(`{"steps":[]}`), Hash: "h1"})
		if err != nil {
			t.Fatal(err)
		}
		res := s.commit(2, &storage.CommitParams{
			Appends: []storage.StreamAppend{
				{Stream: "saga/1", ExpectedVersion: storage.NoStream, Events: events("saga/1", 0, 3)},
				{Stream: "saga/2", ExpectedVersion: storage.NoStream, Events: events("saga/2", 0, 1)},
			},
			IdempotencyKeys:   []storage.IdempotencyKeyInsert{{Scope: "start", Key: "k", Result: []byte("r"), TTL: longTTL}},
			TaskInserts:       []storage.TaskInsert{{ID: "task", Queue: "q", Payload: []byte("tp"), Delay: longTTL}},
			TimerInserts:      []storage.TimerInsert{{ID: "timer", Delay: longTTL, Payload: []byte("xp")}},
			ConsumerPositions: []storage.ConsumerPosition{{Consumer: "c", Partition: 1, Position: 12}},
			SagaUpserts: []storage.Saga{{ID: "1", Partition: 2, Stream: "saga/1", Definition: "order", DefinitionVersion: 1,
				Status: "running", IdempotencyKey: "k", State: []byte("state")}},
		})
		task, err := s.d.TaskGet(ctx, "task")
		if err != nil {
			t.Fatal(err)
		}
		leases, err := s.d.LeaseList(ctx)
		if err != nil {
			t.Fatal(err)
		}
		info := s.d.Info()

		d := h.Reopen(t, s.d)
		s.d = d
		if got := d.Info(); got != info {
			t.Fatalf("Info after reopen = %+v, want %+v", got, info)
		}
		checkEvents(t, "partition 2 after reopen", s.readPartition(2), res.Events)
		checkEvents(t, "stream saga/1 after reopen", s.readStream("saga/1"), res.Events[:3])
		if h := s.head(2); h != 4 {
			t.Fatalf("head after reopen = %d, want 4", h)
		}
		if si, err := d.StreamInfo(ctx, "saga/2"); err != nil || si.Partition != 2 || si.Version != 1 {
			t.Fatalf("StreamInfo after reopen = %+v, %v", si, err)
		}
		if k, err := d.IdempotencyKeyGet(ctx, "start", "k"); err != nil || string(k.Result) != "r" || !k.CreatedAt.Equal(res.Now) {
			t.Fatalf("key after reopen = %+v, %v", k, err)
		}
		if got, err := d.TaskGet(ctx, "task"); err != nil || got.Queue != "q" || string(got.Payload) != "tp" || !got.VisibleAt.Equal(task.VisibleAt) || !got.CreatedAt.Equal(task.CreatedAt) {
			t.Fatalf("task after reopen = %+v, %v; want %+v", got, err, task)
		}
		if ts, err := d.TimerList(ctx, &storage.TimerListParams{Partition: 2, Limit: 10}); err != nil || len(ts) != 1 || ts[0].ID != "timer" ||
			string(ts[0].Payload) != "xp" || !ts[0].FireAt.Equal(res.Now.Add(longTTL)) {
			t.Fatalf("timers after reopen = %+v, %v", ts, err)
		}
		if pos, err := d.ConsumerPositionGet(ctx, "c", 1); err != nil || pos != 12 {
			t.Fatalf("consumer position after reopen = %d, %v", pos, err)
		}
		if got, err := d.LeaseList(ctx); err != nil || len(got) != len(leases) {
			t.Fatalf("leases after reopen = %+v, %v", got, err)
		} else {
			for i := range got {
				if got[i].Owner != leases[i].Owner || got[i].Epoch != leases[i].Epoch || !got[i].ExpiresAt.Equal(leases[i].ExpiresAt) {
					t.Fatalf("lease %d after reopen = %+v, want %+v", i, got[i], leases[i])
				}
			}
		}
		if got, err := d.DefinitionGet(ctx, "order", 0); err != nil || got.Hash != def.Hash || !bytes.Equal(got.Content, def.Content) || !got.CreatedAt.Equal(def.CreatedAt) {
			t.Fatalf("definition after reopen = %+v, %v", got, err)
		}
		if sg, err := d.SagaGet(ctx, "1"); err != nil || sg.Status != "running" || string(sg.State) != "state" || !sg.CreatedAt.Equal(res.Now) || sg.IdempotencyKey != "k" {
			t.Fatalf("saga after reopen = %+v, %v", sg, err)
		}

		// The leases survived, so the same epochs still commit, and
		// positions continue where they were.
		next := s.appendEvents(2, "saga/2", 1, 1)
		if next[0].Position != 5 || next[0].Version != 2 {
			t.Fatalf("append after reopen got position %d version %d, want 5 and 2", next[0].Position, next[0].Version)
		}
	})
}
