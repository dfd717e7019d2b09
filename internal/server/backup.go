package server

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/accord-saga/accord/internal/storage/sqlite"
)

// ErrNotEmpty is returned by RestoreStore when its data directory holds
// anything.
var ErrNotEmpty = errors.New("not empty")

// BackupStore writes a consistent copy of the embedded store in dataDir
// into the new file out, while a server may be running on it (see
// sqlite.Backup).
func BackupStore(ctx context.Context, dataDir, out string) (sqlite.BackupInfo, error) {
	return sqlite.Backup(ctx, filepath.Join(dataDir, storeFileName), out)
}

// RestoreStore makes dataDir a store restored from the backup file from.
// dataDir must be new or empty: a restore never replaces a store, live or
// not.
func RestoreStore(ctx context.Context, from, dataDir string) (sqlite.BackupInfo, error) {
	entries, err := os.ReadDir(dataDir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(dataDir, 0o750); err != nil {
			return sqlite.BackupInfo{}, fmt.Errorf("--data %s: %w", dataDir, err)
		}
	case err != nil:
		return sqlite.BackupInfo{}, fmt.Errorf("--data %s: %w", dataDir, err)
	case len(entries) > 0:
		return sqlite.BackupInfo{}, fmt.Errorf("--data %s: %w: restore only into a new directory, never over a store", dataDir, ErrNotEmpty)
	}
	return sqlite.Restore(ctx, from, filepath.Join(dataDir, storeFileName))
}
