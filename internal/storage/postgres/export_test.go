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
