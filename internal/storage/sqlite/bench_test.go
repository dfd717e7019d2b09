package sqlite_test

import (
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/accord-saga/accord/internal/storage"
	"github.com/accord-saga/accord/internal/storage/sqlite"
)

// BenchmarkCommit measures commits per second through the group commit,
// each commit two small events on its own stream plus a task, from many
// concurrent writers as the engine's partition loops would be.
func BenchmarkCommit(b *testing.B) {
	for _, writers := range []int{1, 16, 256} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			const partitions = 16
			d, err := sqlite.Open(b.Context(), sqlite.Config{Path: filepath.Join(b.TempDir(), "bench.db"), Partitions: partitions})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = d.Close() })
			epochs := make([]int64, partitions)
			for p := range partitions {
				l, err := d.LeaseAcquire(b.Context(), &storage.LeaseAcquireParams{Partition: p, Owner: "bench", TTL: time.Hour})
				if err != nil {
					b.Fatal(err)
				}
				epochs[p] = l.Epoch
			}
			data := []byte(`{"order":"o-1","amount":1200,"currency":"EUR"}`)
			var seq atomic.Int64
			b.SetParallelism(writers)
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					n := seq.Add(1)
					p := int(n % partitions)
					stream := fmt.Sprintf("saga/%d", n)
					_, err := d.Commit(b.Context(), &storage.CommitParams{
						Partition: p, Epoch: epochs[p],
						Appends: []storage.StreamAppend{{Stream: stream, ExpectedVersion: storage.NoStream, Events: []storage.EventInput{
							{Type: "saga.started", Data: data}, {Type: "step.scheduled", Data: data},
						}}},
						TaskInserts: []storage.TaskInsert{{ID: stream + "/1", Queue: "payments", Payload: data}},
					})
					if err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "commits/s")
		})
	}
}
