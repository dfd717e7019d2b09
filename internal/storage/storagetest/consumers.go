package storagetest

import (
	"testing"

	"github.com/accord-saga/accord/internal/storage"
)

func exerciseConsumerPositions(t *testing.T, h Harness) {
	t.Run("UpsertAndRead", func(t *testing.T) {
		t.Parallel()
		s := open(t, h, 4)
		get := func(consumer string, p int) int64 {
			t.Helper()
			pos, err := s.d.ConsumerPositionGet(s.ctx, consumer, p)
			if err != nil {
				t.Fatalf("ConsumerPositionGet(%s, %d): %v", consumer, p, err)
			}
			return pos
		}
		if pos := get("projection", 3); pos != 0 {
			t.Fatalf("position of a new consumer = %d, want 0", pos)
		}
		// A consumer of partition 3 commits its position through partition
		// 0, the partition it writes to.
		s.commit(0, &storage.CommitParams{ConsumerPositions: []storage.ConsumerPosition{
			{Consumer: "projection", Partition: 3, Position: 17},
			{Consumer: "projection", Partition: 1, Position: 4},
			{Consumer: "mailer", Partition: 3, Position: 2},
		}})
		if a, b, c := get("projection", 3), get("projection", 1), get("mailer", 3); a != 17 || b != 4 || c != 2 {
			t.Fatalf("positions = %d, %d, %d; want 17, 4, 2", a, b, c)
		}
		s.commit(2, &storage.CommitParams{ConsumerPositions: []storage.ConsumerPosition{{Consumer: "projection", Partition: 3, Position: 40}}})
		if a, b := get("projection", 3), get("projection", 1); a != 40 || b != 4 {
			t.Fatalf("positions after the update = %d, %d; want 40, 4", a, b)
		}
		if pos := get("projection", 2); pos != 0 {
			t.Fatalf("position in an unread partition = %d, want 0", pos)
		}
	})
}
