package postgres

import (
	"context"

	"github.com/jackc/pgx/v5"
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

// TestPool exposes the connection pool to the external tests.
type TestPool struct{ p *pool }

type TestConn struct{ c *poolConn }

func NewTestPool(config *pgx.ConnConfig, maxConns int32) *TestPool {
	return &TestPool{newPool(config, maxConns)}
}

func (p *TestPool) Acquire(ctx context.Context) (*TestConn, error) {
	c, err := p.p.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	return &TestConn{c}, nil
}

func (p *TestPool) Close()          { p.p.Close() }
func (c *TestConn) Conn() *pgx.Conn { return c.c.Conn() }
func (c *TestConn) Release()        { c.c.Release() }
func IsPoolClosed(err error) bool   { return err == errPoolClosed }
