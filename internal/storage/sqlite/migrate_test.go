package sqlite_test

import (
	"database/sql"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/accord-saga/accord/internal/storage"
	"github.com/accord-saga/accord/internal/storage/sqlite"
)

// TestMigrateFromFirstSchema opens a store written with only the first
// migration: it is brought up to date on open, keeps what it held, and
// gets a bus.
func TestMigrateFromFirstSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "accord.db")
	init, err := os.ReadFile(filepath.Join("migrations", "001_init.sql"))
	if err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	for _, stmt := range []string{
		`PRAGMA journal_mode = WAL`,
		string(init),
		`INSERT INTO accord_meta (key, value) VALUES ('partitions', 2), ('schema_version', 1)`,
		`INSERT INTO partitions (partition, head) VALUES (0, 3), (1, 0)`,
	} {
		if _, err := db.Exec(stmt); err != nil {
			t.Fatalf("%.40s: %v", stmt, err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if sqlite.SchemaVersion() < 2 {
		t.Fatalf("SchemaVersion = %d, want at least 2", sqlite.SchemaVersion())
	}

	d := openAt(t, path, 5)
	if info := d.Info(); info.SchemaVersion != sqlite.SchemaVersion() || info.Partitions != 2 {
		t.Fatalf("Info after migration = %+v, want schema %d, 2 partitions", info, sqlite.SchemaVersion())
	}
	ctx := t.Context()
	if h, err := d.PartitionHead(ctx, 0); err != nil || h != 3 {
		t.Fatalf("PartitionHead after migration = %d, %v; want 3", h, err)
	}
	if h, err := d.MessageHead(ctx, 0); err != nil || h != 0 {
		t.Fatalf("MessageHead after migration = %d, %v; want 0", h, err)
	}
	l, err := d.LeaseAcquire(ctx, &storage.LeaseAcquireParams{Partition: 0, Owner: "o", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := d.TopicPut(ctx, &storage.Topic{Name: "t"}); err != nil {
		t.Fatal(err)
	}
	res, err := d.Commit(ctx, &storage.CommitParams{Partition: 0, Epoch: l.Epoch,
		Appends:   []storage.StreamAppend{{Stream: "s", ExpectedVersion: storage.AnyVersion, Events: []storage.EventInput{{Type: "e"}}}},
		Publishes: []storage.MessageInput{{Topic: "t", ID: "m"}},
	})
	if err != nil {
		t.Fatalf("Commit after migration: %v", err)
	}
	if res.Events[0].Position != 4 || res.Messages[0].Position != 1 {
		t.Fatalf("positions after migration = event %d, message %d; want 4 and 1", res.Events[0].Position, res.Messages[0].Position)
	}
}
