package server

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/accord-saga/accord/internal/redact"
	"github.com/accord-saga/accord/internal/storage"
	"github.com/accord-saga/accord/internal/storage/postgres"
	"github.com/accord-saga/accord/internal/storage/sqlite"
)

// storeFileName is the SQLite file inside --data.
const storeFileName = "accord.db"

// OpenStore opens the store the configuration names. Bad input — a --data
// that is a file, a file in it that is not an Accord store, an unreachable
// database — is an error that names it; nothing is overwritten. An
// embedded store that another server has open is refused at once with
// *StoreInUseError, and nothing is touched.
func OpenStore(ctx context.Context, cfg Config) (storage.Driver, error) {
	if cfg.DatabaseURL != "" {
		d, err := postgres.Open(ctx, postgres.Config{
			URL:        cfg.DatabaseURL,
			Schema:     cfg.DatabaseSchema,
			Partitions: cfg.Partitions,
		})
		if err != nil {
			return nil, fmt.Errorf("open PostgreSQL store %s: %w", redact.URL(cfg.DatabaseURL), err)
		}
		return d, nil
	}
	dir := cfg.DataDir
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return nil, fmt.Errorf("--data %s: %w", dir, err)
		}
	case err != nil:
		return nil, fmt.Errorf("--data %s: %w", dir, err)
	case !fi.IsDir():
		return nil, fmt.Errorf("--data %s: not a directory (it names the directory that holds the store)", dir)
	}
	path := filepath.Join(dir, storeFileName)
	d, err := sqlite.Open(ctx, sqlite.Config{
		Path:        path,
		Partitions:  cfg.Partitions,
		Synchronous: cfg.Durability,
	})
	var inUse *sqlite.InUseError
	if errors.As(err, &inUse) {
		who := "another process"
		if inUse.PID > 0 {
			who = fmt.Sprintf("another process (pid %d)", inUse.PID)
		}
		return nil, &StoreInUseError{msg: fmt.Sprintf("--data %s: the store is in use by %s; one server at a time may run on a store", dir, who), err: err}
	}
	if err != nil {
		return nil, fmt.Errorf("open embedded store %s: %w", path, err)
	}
	return d, nil
}

// StoreInUseError reports an embedded store that another server holds
// open. Its message is meant for the operator as it is; it wraps
// *sqlite.InUseError.
type StoreInUseError struct {
	msg string
	err error
}

func (e *StoreInUseError) Error() string { return e.msg }
func (e *StoreInUseError) Unwrap() error { return e.err }

// dataLocation says where the data lives, for the startup log: the
// directory of the embedded store, or the database (password masked) and
// schema.
func dataLocation(cfg Config) []any {
	if cfg.DatabaseURL != "" {
		return []any{"database", redact.URL(cfg.DatabaseURL), "schema", cfg.DatabaseSchema}
	}
	dir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		dir = cfg.DataDir
	}
	return []any{"data", dir}
}
