package sqlite

import (
	"context"
	"database/sql"
	"sync"
	"sync/atomic"
	"time"
)

// checkpointInterval is how often the checkpointer moves committed pages
// from the write-ahead log into the database file.
const checkpointInterval = 100 * time.Millisecond

// walLimitFrames bounds the write-ahead log (64 MiB of 4 KiB pages). Under
// a sustained write load PASSIVE checkpoints alone never catch up: the log
// is only restarted from its beginning once every frame has been copied
// and no reader still uses it, which a busy store never reaches, so the log
// grows without end — and with it the cost of every read, which searches
// it. Past this size the checkpointer asks the writer for a TRUNCATE
// checkpoint, which the writer runs on its own connection between two
// batches (a checkpoint on another connection would wait for a pause in
// the writing that never comes): it waits for readers to move to the
// database file, copies the rest, and empties the log. Commits wait for it
// meanwhile — a pause of a fraction of a second every 64 MiB of log.
var walLimitFrames atomic.Int64 // 16384; a variable for tests

func init() { walLimitFrames.Store(16384) }

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
	full func() // asks the writer for a TRUNCATE checkpoint
	stop chan struct{}
	wg   sync.WaitGroup
}

func startCheckpointer(db *sql.DB, full func()) *checkpointer {
	c := &checkpointer{db: db, full: full, stop: make(chan struct{})}
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
		err := c.db.QueryRowContext(ctx, "PRAGMA wal_checkpoint(PASSIVE)").Scan(&busy, &logFrames, &checkpointed)
		if err == nil && int64(logFrames) > walLimitFrames.Load() {
			c.full()
		}
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
