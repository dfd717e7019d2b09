package sqlite

import (
	"context"
	"database/sql"
	"sync"
	"time"
)

// checkpointInterval is how often the checkpointer moves committed pages
// from the write-ahead log into the database file.
const checkpointInterval = 100 * time.Millisecond

// checkpointer runs WAL checkpoints on a connection of its own, so that
// they never stall the writer. SQLite's automatic checkpoint runs inside
// the committing connection: once the log passes its threshold, the commit
// that crossed it also copies the log into the database file and syncs
// that file, and every commit queued behind it waits — a wait that grows
// with the database, whose pages the copy scatters over a larger file.
// A PASSIVE checkpoint takes no lock the writer needs; what it cannot copy
// yet (pages a reader still sees), the next one does. Durability is
// unchanged: a commit is durable once the log is synced, which the writer
// does at every commit.
type checkpointer struct {
	db   *sql.DB
	stop chan struct{}
	wg   sync.WaitGroup
}

func startCheckpointer(db *sql.DB) *checkpointer {
	c := &checkpointer{db: db, stop: make(chan struct{})}
	c.wg.Add(1)
	go c.run()
	return c
}

func (c *checkpointer) run() {
	defer c.wg.Done()
	t := time.NewTicker(checkpointInterval)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
		}
		// A failed or partial checkpoint is simply tried again at the next
		// tick; meanwhile the log grows, and nothing is lost.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		var busy, logFrames, checkpointed int
		_ = c.db.QueryRowContext(ctx, "PRAGMA wal_checkpoint(PASSIVE)").Scan(&busy, &logFrames, &checkpointed)
		cancel()
	}
}

// close stops the checkpointer and waits for it; safe to call twice.
func (c *checkpointer) close() error {
	select {
	case <-c.stop:
	default:
		close(c.stop)
	}
	c.wg.Wait()
	return c.db.Close()
}
