package sqlite_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/accord-saga/accord/internal/storage/sqlite"
)

// TestOpenRefusesStoreInUse: a second Open of an open store fails at once
// with *InUseError naming the holder, and changes no file; once the first
// Driver closes, the store opens again.
func TestOpenRefusesStoreInUse(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "accord.db")
	first, err := sqlite.Open(t.Context(), sqlite.Config{Path: path, Partitions: 2})
	if err != nil {
		t.Fatal(err)
	}
	before := dirState(t, dir)
	_, err = sqlite.Open(t.Context(), sqlite.Config{Path: path, Partitions: 2})
	var inUse *sqlite.InUseError
	if !errors.As(err, &inUse) || !errors.Is(err, sqlite.ErrInUse) {
		t.Fatalf("second Open: %v, want *InUseError", err)
	}
	if inUse.PID != os.Getpid() || inUse.Path != path {
		t.Errorf("InUseError = %+v, want pid %d, path %s", *inUse, os.Getpid(), path)
	}
	if after := dirState(t, dir); after != before {
		t.Errorf("a refused Open changed the directory:\nbefore %s\nafter  %s", before, after)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	again := openAt(t, path, 2)
	if again.Info().Partitions != 2 {
		t.Fatalf("reopened store has %d partitions", again.Info().Partitions)
	}
}

// TestOpenRefusedLeavesNoLockFile: an Open refused for its content takes
// back the lock file it created.
func TestOpenRefusedLeavesNoLockFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "accord.db")
	if err := os.WriteFile(path, []byte("not a database, not at all"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := sqlite.Open(t.Context(), sqlite.Config{Path: path}); err == nil {
		t.Fatal("Open of a text file succeeded")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("a refused Open left files: %v", entries)
	}
}

// dirState describes every file of dir: name, size and modification time.
func dirState(t *testing.T, dir string) string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	s := ""
	for _, e := range entries {
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		s += fmt.Sprintf("%s:%d:%d ", e.Name(), fi.Size(), fi.ModTime().UnixNano())
	}
	return s
}
