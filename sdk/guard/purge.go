package guard

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// Purge deletes the records not changed for olderThan or longer, by the
// database's clock, and returns how many it deleted. It deletes in batches,
// each its own statement, so that it never holds many rows' locks at once.
//
// A purged record no longer protects its step (see the package
// documentation): choose olderThan no shorter than the time Accord may
// still deliver a saga's steps.
func (g *Guard) Purge(ctx context.Context, db *sql.DB, olderThan time.Duration) (int, error) {
	if db == nil {
		return 0, fmt.Errorf("guard: purge: nil database")
	}
	if olderThan < 0 {
		return 0, fmt.Errorf("guard: purge: negative age %v", olderThan)
	}
	ms := olderThan.Milliseconds()
	total := 0
	for {
		res, err := db.ExecContext(ctx, g.q.purge, ms, g.purgeBatch)
		if err != nil {
			return total, fmt.Errorf("guard: purge: %w", g.classify(err))
		}
		n, err := res.RowsAffected()
		if err != nil {
			return total, fmt.Errorf("guard: purge: rows affected: %w", err)
		}
		total += int(n)
		if n < int64(g.purgeBatch) {
			return total, nil
		}
	}
}
