package storagetest

import (
	"strings"
	"testing"
	"time"

	"github.com/accord-saga/accord/internal/storage"
)

// exerciseInvalid checks that bad params come back as ErrInvalid, never as
// a panic, and write nothing.
func exerciseInvalid(t *testing.T, h Harness) {
	t.Run("Params", func(t *testing.T) {
		t.Parallel()
		s := open(t, h, 2)
		ctx, d := s.ctx, s.d
		ep := s.epochs[0]
		ev := []storage.EventInput{{Type: "e"}}
		long := strings.Repeat("x", storage.MaxKeyLength+1)
		commit := func(p *storage.CommitParams) func() error {
			return func() error { _, err := d.Commit(ctx, p); return err }
		}
		calls := []struct {
			name string
			call func() error
		}{
			{"commit partition -1", commit(&storage.CommitParams{Partition: -1, Epoch: ep})},
			{"commit partition out of range", commit(&storage.CommitParams{Partition: 2, Epoch: ep})},
			{"commit epoch 0", commit(&storage.CommitParams{Partition: 0})},
			{"commit empty stream name", commit(&storage.CommitParams{Partition: 0, Epoch: ep, Appends: []storage.StreamAppend{{Events: ev}}})},
			{"commit stream name too long", commit(&storage.CommitParams{Partition: 0, Epoch: ep, Appends: []storage.StreamAppend{{Stream: long, Events: ev}}})},
			{"commit append without events", commit(&storage.CommitParams{Partition: 0, Epoch: ep, Appends: []storage.StreamAppend{{Stream: "s"}}})},
			{"commit event without type", commit(&storage.CommitParams{Partition: 0, Epoch: ep, Appends: []storage.StreamAppend{{Stream: "s", Events: []storage.EventInput{{}}}}})},
			{"commit expected version -2", commit(&storage.CommitParams{Partition: 0, Epoch: ep, Appends: []storage.StreamAppend{{Stream: "s", ExpectedVersion: -2, Events: ev}}})},
			{"commit stream twice", commit(&storage.CommitParams{Partition: 0, Epoch: ep, Appends: []storage.StreamAppend{{Stream: "s", Events: ev}, {Stream: "s", Events: ev}}})},
			{"commit key without ttl", commit(&storage.CommitParams{Partition: 0, Epoch: ep, IdempotencyKeys: []storage.IdempotencyKeyInsert{{Scope: "a", Key: "b"}}})},
			{"commit task without queue", commit(&storage.CommitParams{Partition: 0, Epoch: ep, TaskInserts: []storage.TaskInsert{{ID: "t"}}})},
			{"commit task negative delay", commit(&storage.CommitParams{Partition: 0, Epoch: ep, TaskInserts: []storage.TaskInsert{{ID: "t", Queue: "q", Delay: -time.Second}}})},
			{"commit timer without id", commit(&storage.CommitParams{Partition: 0, Epoch: ep, TimerInserts: []storage.TimerInsert{{}}})},
			{"commit consumer bad partition", commit(&storage.CommitParams{Partition: 0, Epoch: ep, ConsumerPositions: []storage.ConsumerPosition{{Consumer: "c", Partition: 5}}})},
			{"commit saga in another partition", commit(&storage.CommitParams{Partition: 0, Epoch: ep, SagaUpserts: []storage.Saga{{ID: "x", Partition: 1, Status: "s", Definition: "d"}}})},
			{"commit saga without status", commit(&storage.CommitParams{Partition: 0, Epoch: ep, SagaUpserts: []storage.Saga{{ID: "x", Definition: "d"}}})},
			{"stream read empty name", func() error { _, err := d.StreamRead(ctx, &storage.StreamReadParams{}); return err }},
			{"stream read negative limit", func() error {
				_, err := d.StreamRead(ctx, &storage.StreamReadParams{Stream: "s", Limit: -1})
				return err
			}},
			{"stream read negative version", func() error {
				_, err := d.StreamRead(ctx, &storage.StreamReadParams{Stream: "s", FromVersion: -1})
				return err
			}},
			{"stream info empty name", func() error { _, err := d.StreamInfo(ctx, ""); return err }},
			{"partition read bad partition", func() error {
				_, err := d.PartitionRead(ctx, &storage.PartitionReadParams{Partition: 2, Limit: 1})
				return err
			}},
			{"partition read limit 0", func() error { _, err := d.PartitionRead(ctx, &storage.PartitionReadParams{}); return err }},
			{"partition read limit too large", func() error {
				_, err := d.PartitionRead(ctx, &storage.PartitionReadParams{Limit: storage.MaxReadLimit + 1})
				return err
			}},
			{"partition head bad partition", func() error { _, err := d.PartitionHead(ctx, -1); return err }},
			{"key get empty", func() error { _, err := d.IdempotencyKeyGet(ctx, "", ""); return err }},
			{"key delete limit 0", func() error { _, err := d.IdempotencyKeyDeleteExpired(ctx, 0); return err }},
			{"task claim limit 0", func() error {
				_, err := d.TaskClaim(ctx, &storage.TaskClaimParams{Queue: "q", Visibility: time.Second})
				return err
			}},
			{"task claim no visibility", func() error { _, err := d.TaskClaim(ctx, &storage.TaskClaimParams{Queue: "q", Limit: 1}); return err }},
			{"task claim empty queue", func() error {
				_, err := d.TaskClaim(ctx, &storage.TaskClaimParams{Limit: 1, Visibility: time.Second})
				return err
			}},
			{"task heartbeat no visibility", func() error {
				_, err := d.TaskHeartbeat(ctx, &storage.TaskHeartbeatParams{ID: "t", ClaimToken: "c"})
				return err
			}},
			{"task heartbeat empty token", func() error {
				_, err := d.TaskHeartbeat(ctx, &storage.TaskHeartbeatParams{ID: "t", Visibility: time.Second})
				return err
			}},
			{"task release negative delay", func() error {
				return d.TaskRelease(ctx, &storage.TaskReleaseParams{ID: "t", ClaimToken: "c", Delay: -1})
			}},
			{"task get empty id", func() error { _, err := d.TaskGet(ctx, ""); return err }},
			{"timer due limit 0", func() error { _, err := d.TimerDue(ctx, &storage.TimerDueParams{}); return err }},
			{"timer due bad partition", func() error { _, err := d.TimerDue(ctx, &storage.TimerDueParams{Partition: 9, Limit: 1}); return err }},
			{"timer list limit 0", func() error { _, err := d.TimerList(ctx, &storage.TimerListParams{}); return err }},
			{"timer list bad partition", func() error {
				_, err := d.TimerList(ctx, &storage.TimerListParams{Partition: -1, Limit: 1})
				return err
			}},
			{"consumer get bad partition", func() error { _, err := d.ConsumerPositionGet(ctx, "c", 2); return err }},
			{"consumer get empty name", func() error { _, err := d.ConsumerPositionGet(ctx, "", 0); return err }},
			{"lease acquire bad partition", func() error {
				_, err := d.LeaseAcquire(ctx, &storage.LeaseAcquireParams{Partition: 2, Owner: "o", TTL: time.Second})
				return err
			}},
			{"lease acquire empty owner", func() error {
				_, err := d.LeaseAcquire(ctx, &storage.LeaseAcquireParams{Partition: 1, TTL: time.Second})
				return err
			}},
			{"lease acquire no ttl", func() error {
				_, err := d.LeaseAcquire(ctx, &storage.LeaseAcquireParams{Partition: 1, Owner: "o"})
				return err
			}},
			{"lease renew no ttl", func() error {
				_, err := d.LeaseRenew(ctx, &storage.LeaseRenewParams{Partition: 0, Owner: testOwner, Epoch: ep})
				return err
			}},
			{"lease renew bad partition", func() error {
				_, err := d.LeaseRenew(ctx, &storage.LeaseRenewParams{Partition: 7, Owner: testOwner, Epoch: ep, TTL: time.Second})
				return err
			}},
			{"lease release bad partition", func() error {
				return d.LeaseRelease(ctx, &storage.LeaseReleaseParams{Partition: -1, Owner: testOwner, Epoch: ep})
			}},
			{"definition put nil", func() error { _, _, err := d.DefinitionPut(ctx, nil); return err }},
			{"definition put empty name", func() error {
				_, _, err := d.DefinitionPut(ctx, &storage.Definition{Version: 1, Content: []byte("{}"), Hash: "h"})
				return err
			}},
			{"definition put version 0", func() error {
				_, _, err := d.DefinitionPut(ctx, &storage.Definition{Name: "n", Content: []byte("{}"), Hash: "h"})
				return err
			}},
			{"definition put no hash", func() error {
				_, _, err := d.DefinitionPut(ctx, &storage.Definition{Name: "n", Version: 1, Content: []byte("{}")})
				return err
			}},
			{"definition get negative version", func() error { _, err := d.DefinitionGet(ctx, "n", -1); return err }},
			{"definition get empty name", func() error { _, err := d.DefinitionGet(ctx, "", 1); return err }},
			{"definition list limit 0", func() error { _, err := d.DefinitionList(ctx, &storage.DefinitionListParams{}); return err }},
			{"saga get empty id", func() error { _, err := d.SagaGet(ctx, ""); return err }},
			{"saga list limit 0", func() error { _, err := d.SagaList(ctx, &storage.SagaListParams{}); return err }},
			{"saga list bad partition", func() error {
				_, err := d.SagaList(ctx, &storage.SagaListParams{ByPartition: true, Partition: 2, Limit: 1})
				return err
			}},
			{"saga delete limit 0", func() error {
				_, err := d.SagaDeleteEnded(ctx, &storage.SagaDeleteEndedParams{EndedBefore: time.Now()})
				return err
			}},
		}
		nils := []struct {
			name string
			call func() error
		}{
			{"commit nil", func() error { _, err := d.Commit(ctx, nil); return err }},
			{"stream read nil", func() error { _, err := d.StreamRead(ctx, nil); return err }},
			{"partition read nil", func() error { _, err := d.PartitionRead(ctx, nil); return err }},
			{"task claim nil", func() error { _, err := d.TaskClaim(ctx, nil); return err }},
			{"task heartbeat nil", func() error { _, err := d.TaskHeartbeat(ctx, nil); return err }},
			{"task release nil", func() error { return d.TaskRelease(ctx, nil) }},
			{"timer due nil", func() error { _, err := d.TimerDue(ctx, nil); return err }},
			{"timer list nil", func() error { _, err := d.TimerList(ctx, nil); return err }},
			{"lease acquire nil", func() error { _, err := d.LeaseAcquire(ctx, nil); return err }},
			{"lease renew nil", func() error { _, err := d.LeaseRenew(ctx, nil); return err }},
			{"lease release nil", func() error { return d.LeaseRelease(ctx, nil) }},
			{"definition list nil", func() error { _, err := d.DefinitionList(ctx, nil); return err }},
			{"saga list nil", func() error { _, err := d.SagaList(ctx, nil); return err }},
			{"saga delete nil", func() error { _, err := d.SagaDeleteEnded(ctx, nil); return err }},
		}
		calls = append(calls, nils...)
		for _, c := range calls {
			wantErr(t, c.name, c.call(), storage.ErrInvalid)
		}

		for p := range 2 {
			if h := s.head(p); h != 0 {
				t.Fatalf("partition %d head = %d after invalid calls, want 0", p, h)
			}
		}
		if qs, err := d.TaskQueueStats(ctx); err != nil || len(qs) != 0 {
			t.Fatalf("queues after invalid calls = %+v, %v; want none", qs, err)
		}
		if ds, err := d.DefinitionList(ctx, &storage.DefinitionListParams{Limit: 10}); err != nil || len(ds) != 0 {
			t.Fatalf("definitions after invalid calls = %+v, %v; want none", ds, err)
		}
		if ss, err := d.SagaList(ctx, &storage.SagaListParams{Limit: 10}); err != nil || len(ss) != 0 {
			t.Fatalf("sagas after invalid calls = %+v, %v; want none", ss, err)
		}
		ls, err := d.LeaseList(ctx)
		if err != nil || len(ls) != 2 || ls[0].Epoch != s.epochs[0] || ls[1].Epoch != s.epochs[1] {
			t.Fatalf("leases after invalid calls = %+v, %v; want them unchanged", ls, err)
		}
	})
}
