package guard

import (
	"context"
	"database/sql"
	"fmt"
	"hash/fnv"
)

// Migrate creates the guard's table and index if they do not exist. It is
// idempotent, and safe to run from several processes at once: on
// PostgreSQL they take turns on an advisory lock; on SQLite the database's
// write lock serializes them.
func (g *Guard) Migrate(ctx context.Context, db *sql.DB) error {
	if db == nil {
		return fmt.Errorf("guard: migrate: nil database")
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("guard: migrate: begin: %w", g.classify(err))
	}
	defer func() { _ = tx.Rollback() }()
	if g.dialect == Postgres {
		// Concurrent CREATE TABLE IF NOT EXISTS can still collide in
		// PostgreSQL's catalog; the lock makes the second one see the
		// first's table.
		if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, migrateLockID(g.table)); err != nil {
			return fmt.Errorf("guard: migrate: lock: %w", g.classify(err))
		}
	}
	for _, stmt := range g.q.migrate {
		if _, err := tx.ExecContext(ctx, stmt); err != nil {
			return fmt.Errorf("guard: migrate table %s: %w", g.table, g.classify(err))
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("guard: migrate: commit: %w", g.classify(err))
	}
	return nil
}

// migrateLockID is the advisory lock key of a table's migration.
func migrateLockID(table string) int64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte("accord/sdk/guard migrate " + table))
	return int64(h.Sum64())
}
