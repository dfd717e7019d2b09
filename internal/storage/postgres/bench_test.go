package postgres_test

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/accord-saga/accord/internal/storage"
	"github.com/accord-saga/accord/internal/storage/postgres/pgtest"
)

// stepCommit is the shape of one engine step: a few events, the task that
// dispatches the next step, and the saga record.
func stepCommit(p int, epoch int64, n int64) *storage.CommitParams {
	id := fmt.Sprintf("saga-%d-%d", p, n)
	return &storage.CommitParams{
		Partition: p, Epoch: epoch,
		Appends: []storage.StreamAppend{{Stream: "saga/" + id, ExpectedVersion: storage.NoStream, Events: []storage.EventInput{
			{Type: "saga.started", Data: []byte(`{"input":{"order":42}}`)},
			{Type: "step.scheduled", Data: []byte(`{"step":"charge"}`)},
		}}},
		TaskInserts: []storage.TaskInsert{{ID: "task-" + id, Queue: "payments", Payload: []byte(`{"step":"charge"}`)}},
		SagaUpserts: []storage.Saga{{ID: id, Partition: p, Stream: "saga/" + id, Definition: "order", DefinitionVersion: 1, Status: "running"}},
	}
}

func BenchmarkCommit(b *testing.B) {
	d := pgtest.NewStore(b, 8)
	epochs := make([]int64, 8)
	for p := range epochs {
		l, err := d.LeaseAcquire(b.Context(), &storage.LeaseAcquireParams{Partition: p, Owner: "bench", TTL: time.Hour})
		if err != nil {
			b.Fatal(err)
		}
		epochs[p] = l.Epoch
	}
	// Saga ids must be new in every commit, across the benchmark's
	// repeated runs too.
	var next atomic.Int64
	b.Run("OnePartition", func(b *testing.B) {
		for b.Loop() {
			if _, err := d.Commit(b.Context(), stepCommit(0, epochs[0], next.Add(1))); err != nil {
				b.Fatal(err)
			}
		}
	})
	// Group commit: the engine writes many sagas' steps in one commit.
	b.Run("OnePartition50Sagas", func(b *testing.B) {
		for b.Loop() {
			group := stepCommit(0, epochs[0], next.Add(1))
			for range 49 {
				one := stepCommit(0, epochs[0], next.Add(1))
				group.Appends = append(group.Appends, one.Appends...)
				group.TaskInserts = append(group.TaskInserts, one.TaskInserts...)
				group.SagaUpserts = append(group.SagaUpserts, one.SagaUpserts...)
			}
			if _, err := d.Commit(b.Context(), group); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("EightPartitions", func(b *testing.B) {
		b.SetParallelism(4)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				n := next.Add(1)
				p := int(n%7) + 1
				if _, err := d.Commit(b.Context(), stepCommit(p, epochs[p], n)); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}
