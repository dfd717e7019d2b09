package sqlite

import (
	"bytes"
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/accord-saga/accord/internal/storage"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

type migration struct {
	version int
	name    string
	sql     string
}

// loadMigrations reads the embedded migrations, numbered from 1 without
// gaps ("001_init.sql", "002_...").
var loadMigrations = sync.OnceValues(func() ([]migration, error) {
	entries, err := migrationFiles.ReadDir("migrations")
	if err != nil {
		return nil, fmt.Errorf("sqlite: read migrations: %w", err)
	}
	var ms []migration
	for _, e := range entries {
		num, _, ok := strings.Cut(e.Name(), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || !strings.HasSuffix(e.Name(), ".sql") {
			return nil, fmt.Errorf("sqlite: migration file %q is not named NNN_name.sql", e.Name())
		}
		b, err := migrationFiles.ReadFile(path.Join("migrations", e.Name()))
		if err != nil {
			return nil, fmt.Errorf("sqlite: read migration %s: %w", e.Name(), err)
		}
		ms = append(ms, migration{version: v, name: e.Name(), sql: string(b)})
	}
	slices.SortFunc(ms, func(a, b migration) int { return a.version - b.version })
	for i, m := range ms {
		if m.version != i+1 {
			return nil, fmt.Errorf("sqlite: migrations are not numbered 1..%d without gaps (found %s)", len(ms), m.name)
		}
	}
	return ms, nil
})

// SchemaVersion is the schema version this binary creates and upgrades to.
func SchemaVersion() int {
	ms, _ := loadMigrations()
	return len(ms)
}

// sqliteHeader starts every SQLite database file.
var sqliteHeader = []byte("SQLite format 3\x00")

// checkFile decides, without letting SQLite touch the file, whether abs may
// be opened: it does not exist, is empty, or starts with the SQLite header.
// Anything else is ErrNotAStore.
func checkFile(abs string) (exists bool, err error) {
	fi, err := os.Stat(abs)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("sqlite: %w", err)
	case fi.IsDir():
		return false, fmt.Errorf("%w: %s is a directory", storage.ErrNotAStore, abs)
	case !fi.Mode().IsRegular():
		return false, fmt.Errorf("%w: %s is not a regular file", storage.ErrNotAStore, abs)
	case fi.Size() == 0:
		return false, nil
	}
	f, err := os.Open(abs)
	if err != nil {
		return false, fmt.Errorf("sqlite: %w", err)
	}
	defer f.Close()
	head := make([]byte, len(sqliteHeader))
	if _, err := io.ReadFull(f, head); err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return false, fmt.Errorf("sqlite: read %s: %w", abs, err)
	}
	if !bytes.Equal(head, sqliteHeader) {
		return false, fmt.Errorf("%w: %s exists and is not an SQLite database; it was left untouched", storage.ErrNotAStore, abs)
	}
	return true, nil
}

// storeState is what a database file holds.
type storeState struct {
	accord     bool // holds accord_meta
	foreign    bool // holds other tables and no accord_meta
	version    int
	partitions int
}

// querier is what readState needs: a *sql.DB or a *sql.Conn.
type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

func readState(ctx context.Context, q querier) (storeState, error) {
	var st storeState
	var tables, meta int
	err := q.QueryRowContext(ctx, `SELECT count(*), count(*) FILTER (WHERE name = 'accord_meta')
		FROM sqlite_schema WHERE type IN ('table', 'view') AND name NOT LIKE 'sqlite\_%' ESCAPE '\'`).Scan(&tables, &meta)
	if err != nil {
		return st, fmt.Errorf("sqlite: read schema: %w", err)
	}
	if meta == 0 {
		st.foreign = tables > 0
		return st, nil
	}
	st.accord = true
	rows, err := q.QueryContext(ctx, `SELECT key, value FROM accord_meta`)
	if err != nil {
		return st, fmt.Errorf("sqlite: read accord_meta: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var k string
		var v int
		if err := rows.Scan(&k, &v); err != nil {
			return st, fmt.Errorf("sqlite: read accord_meta: %w", err)
		}
		switch k {
		case "schema_version":
			st.version = v
		case "partitions":
			st.partitions = v
		}
	}
	if err := rows.Err(); err != nil {
		return st, fmt.Errorf("sqlite: read accord_meta: %w", err)
	}
	if st.version < 1 || st.partitions < 1 || st.partitions > storage.MaxPartitions {
		return st, fmt.Errorf("sqlite: accord_meta is damaged: schema version %d, partitions %d", st.version, st.partitions)
	}
	return st, nil
}

// inspect opens an existing SQLite file read-only and reports what it
// holds, refusing foreign databases and newer schemas before anything is
// written to the file.
func inspect(ctx context.Context, abs string, busy time.Duration) (storeState, error) {
	params := []string{"mode=ro", fmt.Sprintf("_pragma=busy_timeout(%d)", busy.Milliseconds())}
	// Even a read-only connection creates the -wal and -shm files of a
	// WAL-mode database, and leaves them behind. When there is no -wal or
	// -journal file, the main file holds the whole database: read it as
	// immutable, which creates nothing and takes no locks.
	if !exists(abs+"-wal") && !exists(abs+"-journal") {
		params = append(params, "immutable=1")
	}
	db, err := sql.Open(driverName, dsn(abs, params...))
	if err != nil {
		return storeState{}, fmt.Errorf("sqlite: open %s read-only: %w", abs, err)
	}
	defer db.Close()
	st, err := readState(ctx, db)
	if err != nil {
		return st, fmt.Errorf("%w (in %s)", err, abs)
	}
	if err := st.check(abs); err != nil {
		return st, err
	}
	return st, nil
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

func (st storeState) check(abs string) error {
	if st.foreign {
		return fmt.Errorf("%w: %s is an SQLite database with tables of its own and no Accord metadata; it was left untouched", storage.ErrNotAStore, abs)
	}
	if st.accord && st.version > SchemaVersion() {
		return &storage.SchemaTooNewError{StoreVersion: st.version, BinaryVersion: SchemaVersion()}
	}
	return nil
}

// migrate creates the schema in a new store or brings an older one up to
// date, in one transaction on the writer connection.
func migrate(ctx context.Context, conn *sql.Conn, abs string, partitions int) (storeState, error) {
	ms, err := loadMigrations()
	if err != nil {
		return storeState{}, err
	}
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		return storeState{}, fmt.Errorf("sqlite: migrate: begin: %w", err)
	}
	st, err := migrateTx(ctx, conn, abs, partitions, ms)
	if err != nil {
		_, _ = conn.ExecContext(context.Background(), "ROLLBACK")
		return st, err
	}
	if _, err := conn.ExecContext(ctx, "COMMIT"); err != nil {
		_, _ = conn.ExecContext(context.Background(), "ROLLBACK")
		return st, fmt.Errorf("sqlite: migrate: commit: %w", err)
	}
	return st, nil
}

func migrateTx(ctx context.Context, conn *sql.Conn, abs string, partitions int, ms []migration) (storeState, error) {
	// Read again under the write lock: another process may have created
	// the store since inspect looked.
	st, err := readState(ctx, conn)
	if err != nil {
		return st, err
	}
	if err := st.check(abs); err != nil {
		return st, err
	}
	fresh := !st.accord
	for _, m := range ms[st.version:] {
		if _, err := conn.ExecContext(ctx, m.sql); err != nil {
			return st, fmt.Errorf("sqlite: migration %s: %w", m.name, err)
		}
	}
	if fresh {
		st = storeState{accord: true, partitions: partitions}
		if _, err := conn.ExecContext(ctx, `INSERT INTO accord_meta (key, value) VALUES ('partitions', ?)`, partitions); err != nil {
			return st, fmt.Errorf("sqlite: write accord_meta: %w", err)
		}
		if _, err := conn.ExecContext(ctx, `WITH RECURSIVE p(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM p WHERE n + 1 < ?)
			INSERT INTO partitions (partition) SELECT n FROM p`, partitions); err != nil {
			return st, fmt.Errorf("sqlite: create partitions: %w", err)
		}
	}
	if st.version != len(ms) {
		st.version = len(ms)
		if _, err := conn.ExecContext(ctx, `INSERT INTO accord_meta (key, value) VALUES ('schema_version', ?)
			ON CONFLICT (key) DO UPDATE SET value = excluded.value`, st.version); err != nil {
			return st, fmt.Errorf("sqlite: write schema version: %w", err)
		}
	}
	var n int
	if err := conn.QueryRowContext(ctx, `SELECT count(*) FROM partitions`).Scan(&n); err != nil {
		return st, fmt.Errorf("sqlite: count partitions: %w", err)
	}
	if n != st.partitions {
		return st, fmt.Errorf("sqlite: store is damaged: %d partition rows, accord_meta says %d", n, st.partitions)
	}
	return st, nil
}
