package sqlite_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"go.uber.org/goleak"

	"github.com/accord-saga/accord/internal/storage"
	"github.com/accord-saga/accord/internal/storage/sqlite"
	"github.com/accord-saga/accord/internal/storage/storagetest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// openAt opens the store at path and, when the test ends, checks its
// integrity and closes it.
func openAt(t *testing.T, path string, partitions int) *sqlite.Driver {
	t.Helper()
	d, err := sqlite.Open(t.Context(), sqlite.Config{Path: path, Partitions: partitions})
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() {
		if err := d.IntegrityCheck(context.Background()); err != nil && !errors.Is(err, sqlite.ErrClosed) {
			t.Errorf("integrity check of %s: %v", path, err)
		}
		if err := d.Close(); err != nil {
			t.Errorf("Close(%s): %v", path, err)
		}
	})
	return d
}

func TestConformance(t *testing.T) {
	storagetest.Exercise(t, storagetest.Harness{
		Open: func(t *testing.T, partitions int) storage.Driver {
			return openAt(t, filepath.Join(t.TempDir(), "accord.db"), partitions)
		},
		Reopen: func(t *testing.T, d storage.Driver) storage.Driver {
			sd := d.(*sqlite.Driver)
			if err := sd.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			return openAt(t, sd.Path(), 1) // the store keeps its own partition count
		},
	})
}

func TestOpenRefusesRandomBytes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "random.db")
	junk := make([]byte, 8192)
	_, _ = rand.Read(junk)
	if err := os.WriteFile(path, junk, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := sqlite.Open(t.Context(), sqlite.Config{Path: path})
	if !errors.Is(err, storage.ErrNotAStore) {
		t.Fatalf("Open of random bytes: %v, want ErrNotAStore", err)
	}
	assertFiles(t, path, junk)
}

func TestOpenRefusesForeignDatabase(t *testing.T) {
	for _, mode := range []string{"delete", "wal"} {
		t.Run(mode, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "foreign.db")
			db, err := sql.Open("sqlite", path)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := db.Exec(`PRAGMA journal_mode = ` + mode + `; CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT);
				INSERT INTO customers (name) VALUES ('ada')`); err != nil {
				t.Fatal(err)
			}
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
			before := readFile(t, path)
			_, err = sqlite.Open(t.Context(), sqlite.Config{Path: path})
			if !errors.Is(err, storage.ErrNotAStore) {
				t.Fatalf("Open of a foreign SQLite database: %v, want ErrNotAStore", err)
			}
			assertFiles(t, path, before)
			if entries, _ := os.ReadDir(dir); len(entries) != 1 {
				t.Fatalf("Open left files beside the foreign database: %v", entries)
			}
		})
	}
}

func TestOpenRefusesDirectory(t *testing.T) {
	path := t.TempDir()
	_, err := sqlite.Open(t.Context(), sqlite.Config{Path: path})
	if !errors.Is(err, storage.ErrNotAStore) {
		t.Fatalf("Open of a directory: %v, want ErrNotAStore", err)
	}
}

func TestOpenRefusesNewerSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "accord.db")
	d, err := sqlite.Open(t.Context(), sqlite.Config{Path: path, Partitions: 2})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`UPDATE accord_meta SET value = value + 1 WHERE key = 'schema_version'`); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	before := readFile(t, path)
	_, err = sqlite.Open(t.Context(), sqlite.Config{Path: path})
	var tooNew *storage.SchemaTooNewError
	if !errors.As(err, &tooNew) || !errors.Is(err, storage.ErrSchemaTooNew) {
		t.Fatalf("Open of a newer store: %v, want *SchemaTooNewError", err)
	}
	if tooNew.StoreVersion != sqlite.SchemaVersion()+1 || tooNew.BinaryVersion != sqlite.SchemaVersion() {
		t.Fatalf("SchemaTooNewError = %+v, want store %d binary %d", *tooNew, sqlite.SchemaVersion()+1, sqlite.SchemaVersion())
	}
	assertFiles(t, path, before)
	if entries, _ := os.ReadDir(filepath.Dir(path)); len(entries) != 1 {
		t.Fatalf("Open left files beside the store: %v", entries)
	}
}

func TestOpenMissingDirectory(t *testing.T) {
	path := filepath.Join(t.TempDir(), "no", "such", "dir", "accord.db")
	_, err := sqlite.Open(t.Context(), sqlite.Config{Path: path})
	if err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Open in a missing directory: %v, want an error wrapping os.ErrNotExist", err)
	}
	if _, err := os.Stat(filepath.Dir(path)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Open created the directory: %v", err)
	}
}

func TestOpenKeepsPartitionCount(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "weird ?#% name.db")
	d, err := sqlite.Open(t.Context(), sqlite.Config{Path: path, Partitions: 7})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("the store is not at its path: %v", err)
	}
	d2 := openAt(t, path, 64)
	if got := d2.Info(); got.Partitions != 7 || got.Backend != "sqlite" || got.SchemaVersion != sqlite.SchemaVersion() {
		t.Fatalf("Info after reopen with another partition count = %+v, want 7 partitions", got)
	}
	// An empty file is an empty store-to-be.
	empty := filepath.Join(dir, "empty.db")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	openAt(t, empty, 3)
}

func TestConfigValidation(t *testing.T) {
	dir := t.TempDir()
	for _, cfg := range []sqlite.Config{
		{},
		{Path: ":memory:"},
		{Path: filepath.Join(dir, "a.db"), Partitions: storage.MaxPartitions + 1},
		{Path: filepath.Join(dir, "a.db"), Partitions: -1},
		{Path: filepath.Join(dir, "a.db"), Synchronous: "off"},
		{Path: filepath.Join(dir, "a.db"), BusyTimeout: -1},
	} {
		if _, err := sqlite.Open(t.Context(), cfg); err == nil {
			t.Fatalf("Open(%+v) succeeded, want a config error", cfg)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "a.db")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a refused config created the store: %v", err)
	}
	openAt(t, filepath.Join(dir, "normal.db"), 1)
	d, err := sqlite.Open(t.Context(), sqlite.Config{Path: filepath.Join(dir, "n.db"), Synchronous: "NORMAL"})
	if err != nil {
		t.Fatalf("Open with synchronous normal: %v", err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestClosedDriver(t *testing.T) {
	d := openAt(t, filepath.Join(t.TempDir(), "accord.db"), 1)
	l, err := d.LeaseAcquire(t.Context(), &storage.LeaseAcquireParams{Partition: 0, Owner: "o", TTL: 1 << 40})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	_, err = d.Commit(t.Context(), &storage.CommitParams{Partition: 0, Epoch: l.Epoch})
	if !errors.Is(err, sqlite.ErrClosed) {
		t.Fatalf("Commit after Close: %v, want ErrClosed", err)
	}
	// Reads after Close are errors, never a panic.
	ctx := t.Context()
	if _, err := d.SagaGet(ctx, "x"); err == nil {
		t.Error("SagaGet after Close succeeded")
	}
	if _, err := d.DefinitionList(ctx, &storage.DefinitionListParams{Limit: 1}); err == nil {
		t.Error("DefinitionList after Close succeeded")
	}
	if _, err := d.StreamRead(ctx, &storage.StreamReadParams{Stream: "s"}); err == nil {
		t.Error("StreamRead after Close succeeded")
	}
	if _, err := d.TaskGet(ctx, "t"); err == nil {
		t.Error("TaskGet after Close succeeded")
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// assertFiles fails the test unless path holds want, byte for byte.
func assertFiles(t *testing.T, path string, want []byte) {
	t.Helper()
	if got := readFile(t, path); !bytes.Equal(got, want) {
		t.Fatalf("%s changed: %d bytes, was %d", path, len(got), len(want))
	}
}
