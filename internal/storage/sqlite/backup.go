package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/accord-saga/accord/internal/storage"
)

// BackupInfo describes a store file written by Backup or checked by Verify.
type BackupInfo struct {
	Bytes         int64
	SchemaVersion int
	Partitions    int
}

// ErrExists is returned by Backup and Restore when their target exists:
// they never overwrite.
var ErrExists = errors.New("sqlite: target exists")

// Backup writes a consistent copy of the store at src into the new file
// dst, while a server may have the store open and be writing to it. It
// uses VACUUM INTO on a connection of its own, which reads one snapshot of
// the write-ahead-logged store: the copy holds exactly the commits made
// before its read began and none made during it, like a crash at that
// instant (which the store survives by design). The copy is written beside
// dst, checked, synced and renamed into place, so dst is either whole or
// absent.
func Backup(ctx context.Context, src, dst string) (BackupInfo, error) {
	src, err := filepath.Abs(src)
	if err != nil {
		return BackupInfo{}, fmt.Errorf("sqlite: %w", err)
	}
	if exists(dst) {
		return BackupInfo{}, fmt.Errorf("%w: %s", ErrExists, dst)
	}
	found, err := checkFile(src)
	if err != nil {
		return BackupInfo{}, err
	}
	if !found {
		return BackupInfo{}, fmt.Errorf("%w: %s does not exist", storage.ErrNotAStore, src)
	}
	// This connection only reads the live store: VACUUM INTO writes the
	// copy, not the source (query_only would forbid that write too).
	db, err := sql.Open(driverName, dsn(src, fmt.Sprintf("_pragma=busy_timeout(%d)", BusyTimeoutDefault.Milliseconds())))
	if err != nil {
		return BackupInfo{}, fmt.Errorf("sqlite: open %s: %w", src, err)
	}
	defer db.Close()
	st, err := readState(ctx, db)
	if err != nil {
		return BackupInfo{}, err
	}
	if !st.accord {
		return BackupInfo{}, fmt.Errorf("%w: %s holds no Accord store", storage.ErrNotAStore, src)
	}
	if err := st.check(src); err != nil {
		return BackupInfo{}, err
	}
	partial := dst + ".partial"
	_ = os.Remove(partial) // a leftover of an interrupted backup
	if _, err := db.ExecContext(ctx, `VACUUM INTO ?`, partial); err != nil {
		_ = os.Remove(partial)
		return BackupInfo{}, fmt.Errorf("sqlite: back up %s: %w", src, err)
	}
	info, err := Verify(ctx, partial)
	if err == nil {
		err = syncFile(partial)
	}
	if err == nil {
		err = os.Rename(partial, dst)
	}
	if err == nil {
		err = syncFile(filepath.Dir(dst))
	}
	if err != nil {
		_ = os.Remove(partial)
		return BackupInfo{}, fmt.Errorf("sqlite: back up %s: %w", src, err)
	}
	return info, nil
}

// Verify checks that the closed store file at path is whole (SQLite's
// integrity check) and an Accord store this binary can open, and reports
// what it holds. It writes nothing.
func Verify(ctx context.Context, path string) (BackupInfo, error) {
	path, err := filepath.Abs(path)
	if err != nil {
		return BackupInfo{}, fmt.Errorf("sqlite: %w", err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return BackupInfo{}, fmt.Errorf("sqlite: %w", err)
	}
	if _, err := checkFile(path); err != nil {
		return BackupInfo{}, err
	}
	if exists(path+"-wal") || exists(path+"-journal") {
		return BackupInfo{}, fmt.Errorf("sqlite: %s has a -wal or -journal file beside it: it is an open store, not a backup", path)
	}
	db, err := sql.Open(driverName, dsn(path, "mode=ro", "immutable=1"))
	if err != nil {
		return BackupInfo{}, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	defer db.Close()
	var check string
	if err := db.QueryRowContext(ctx, `PRAGMA integrity_check(1)`).Scan(&check); err != nil {
		return BackupInfo{}, fmt.Errorf("%w: %s: %v", storage.ErrNotAStore, path, err)
	}
	if check != "ok" {
		return BackupInfo{}, fmt.Errorf("%w: %s is damaged: %s", storage.ErrNotAStore, path, check)
	}
	st, err := readState(ctx, db)
	if err != nil {
		return BackupInfo{}, err
	}
	if !st.accord {
		return BackupInfo{}, fmt.Errorf("%w: %s holds no Accord store", storage.ErrNotAStore, path)
	}
	if err := st.check(path); err != nil {
		return BackupInfo{}, err
	}
	return BackupInfo{Bytes: fi.Size(), SchemaVersion: st.version, Partitions: st.partitions}, nil
}

// Restore copies the backup file from into the new store file dst, after
// checking it with Verify. dst and its -wal and -shm files must not exist.
// Like Backup, it syncs the copy and renames it into place.
func Restore(ctx context.Context, from, dst string) (BackupInfo, error) {
	for _, p := range []string{dst, dst + "-wal", dst + "-shm"} {
		if exists(p) {
			return BackupInfo{}, fmt.Errorf("%w: %s", ErrExists, p)
		}
	}
	info, err := Verify(ctx, from)
	if err != nil {
		return BackupInfo{}, err
	}
	partial := dst + ".partial"
	if err := copyFile(from, partial); err != nil {
		_ = os.Remove(partial)
		return BackupInfo{}, fmt.Errorf("sqlite: restore %s: %w", from, err)
	}
	if err := os.Rename(partial, dst); err != nil {
		_ = os.Remove(partial)
		return BackupInfo{}, fmt.Errorf("sqlite: restore %s: %w", from, err)
	}
	if err := syncFile(filepath.Dir(dst)); err != nil {
		return BackupInfo{}, fmt.Errorf("sqlite: restore %s: %w", from, err)
	}
	return info, nil
}

// copyFile copies src into the new file dst and syncs it.
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := out.ReadFrom(in); err != nil {
		_ = out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		_ = out.Close()
		return err
	}
	return out.Close()
}

// syncFile fsyncs a file or a directory.
func syncFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
