package sqlite_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/accord-saga/accord/internal/storage"
	"github.com/accord-saga/accord/internal/storage/sqlite"
)

// TestBackupOfOpenStore backs up a store that is open and written, and
// restores the copy: it holds what was committed before the backup, and
// nothing is ever overwritten.
func TestBackupOfOpenStore(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	live := openAt(t, filepath.Join(dir, "accord.db"), 3)
	if _, _, err := live.DefinitionPut(ctx, &storage.Definition{Name: "before", Version: 1, Content: []byte(`{}`), Hash: "h1"}); err != nil {
		t.Fatal(err)
	}
	backup := filepath.Join(dir, "backup.db")
	info, err := sqlite.Backup(ctx, filepath.Join(dir, "accord.db"), backup)
	if err != nil {
		t.Fatal(err)
	}
	if info.Partitions != 3 || info.SchemaVersion != sqlite.SchemaVersion() || info.Bytes == 0 {
		t.Errorf("backup info %+v", info)
	}
	// Written after the backup: not in it.
	if _, _, err := live.DefinitionPut(ctx, &storage.Definition{Name: "after", Version: 1, Content: []byte(`{}`), Hash: "h2"}); err != nil {
		t.Fatal(err)
	}
	if _, err := sqlite.Backup(ctx, filepath.Join(dir, "accord.db"), backup); !errors.Is(err, sqlite.ErrExists) {
		t.Errorf("backup over an existing file: %v, want ErrExists", err)
	}

	restored := filepath.Join(t.TempDir(), "accord.db")
	if _, err := sqlite.Restore(ctx, backup, restored); err != nil {
		t.Fatal(err)
	}
	if _, err := sqlite.Restore(ctx, backup, restored); !errors.Is(err, sqlite.ErrExists) {
		t.Errorf("restore over a store: %v, want ErrExists", err)
	}
	d := openAt(t, restored, 5)
	if _, err := d.DefinitionGet(ctx, "before", 1); err != nil {
		t.Errorf("definition written before the backup: %v", err)
	}
	if _, err := d.DefinitionGet(ctx, "after", 1); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("definition written after the backup: %v, want not found", err)
	}
}

// TestVerifyRefuses: a restore refuses what is not a whole Accord store.
func TestVerifyRefuses(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	text := filepath.Join(dir, "notes.txt")
	if err := os.WriteFile(text, []byte("not a store"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := sqlite.Verify(ctx, text); !errors.Is(err, storage.ErrNotAStore) {
		t.Errorf("Verify(text) = %v, want ErrNotAStore", err)
	}

	live := openAt(t, filepath.Join(dir, "accord.db"), 2)
	if _, _, err := live.DefinitionPut(ctx, &storage.Definition{Name: "d", Version: 1, Content: make([]byte, 64<<10), Hash: "h"}); err != nil {
		t.Fatal(err)
	}
	// An open store (its -wal beside it) is not a backup.
	if _, err := sqlite.Verify(ctx, filepath.Join(dir, "accord.db")); err == nil {
		t.Error("Verify of an open store passed")
	}
	backup := filepath.Join(dir, "backup.db")
	if _, err := sqlite.Backup(ctx, filepath.Join(dir, "accord.db"), backup); err != nil {
		t.Fatal(err)
	}
	// Damage the schema table's page header (just after the file header).
	content, err := os.ReadFile(backup)
	if err != nil {
		t.Fatal(err)
	}
	for i := 100; i < 112; i++ {
		content[i] ^= 0xff
	}
	damaged := filepath.Join(dir, "damaged.db")
	if err := os.WriteFile(damaged, content, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := sqlite.Restore(ctx, damaged, filepath.Join(t.TempDir(), "accord.db")); !errors.Is(err, storage.ErrNotAStore) {
		t.Errorf("Restore(damaged) = %v, want ErrNotAStore", err)
	}
}
