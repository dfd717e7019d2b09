package postgres

import (
	"context"

	"github.com/jackc/pgx/v5/pgxpool"
)

// SessionSetting reads a setting as the store's own sessions see it.
func SessionSetting(ctx context.Context, d *Driver, name string) (string, error) {
	var v string
	err := d.pool.QueryRow(ctx, `SELECT current_setting($1)`, name).Scan(&v)
	return v, err
}

// MigrationVersions lists the embedded migrations' versions in order.
func MigrationVersions() []int {
	vs := make([]int, len(migrations))
	for i, m := range migrations {
		vs[i] = m.version
	}
	return vs
}

// AcquireConn lends out one of the store's pooled connections; the caller
// releases it.
func AcquireConn(ctx context.Context, d *Driver) (*pgxpool.Conn, error) {
	return d.pool.Acquire(ctx)
}

// CommitWorkers returns the number of coalescer workers of d.
func CommitWorkers(d *Driver) int { return len(d.workers) }

// HoldCommits stops one of d's workers (with one worker, every commit)
// until release is called, so that the commits queued meanwhile make one
// group. queued reports how many requests wait for a worker; release waits
// until the worker has let go of the hold.
func HoldCommits(d *Driver) (queued func() int, release func()) {
	w := d.workers[0]
	started, hold, finished := make(chan struct{}), make(chan struct{}), make(chan struct{})
	r := &request{ctx: context.Background(), fn: func() {
		close(started)
		<-hold
	}, done: make(chan struct{}, 1)}
	go func() {
		defer close(finished)
		_ = w.do(context.Background(), r)
	}()
	<-started
	return func() int { return len(w.queue) }, func() {
		close(hold)
		<-finished
	}
}
