package postgres

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// pool is a small, bounded pool of pgx connections. Its surface mirrors the
// part of pgxpool the driver uses (Acquire/Release, Query, QueryRow, Exec),
// so that it can be replaced by pgxpool without touching the queries; it
// exists because pgxpool's dependency (puddle) is not among the module's
// pinned dependencies.
type pool struct {
	config *pgx.ConnConfig
	// slots holds one token per connection in use: acquiring blocks, with
	// the caller's context, once MaxConns connections are out.
	slots chan struct{}

	mu     sync.Mutex
	idle   []idleConn // most recently used last
	closed bool
}

type idleConn struct {
	conn  *pgx.Conn
	since time.Time
}

// Connections idle longer than pingAfter are checked before reuse, so that a
// database restart costs one failed ping rather than one failed statement;
// connections idle longer than maxIdle are closed instead.
const (
	pingAfter    = time.Second
	maxIdle      = 30 * time.Minute
	closeTimeout = time.Second
)

var errPoolClosed = errors.New("postgres: store is closed")

func newPool(config *pgx.ConnConfig, maxConns int32) *pool {
	return &pool{config: config, slots: make(chan struct{}, maxConns)}
}

// poolConn is a connection on loan from a pool.
type poolConn struct {
	p    *pool
	conn *pgx.Conn
	once sync.Once
}

// Acquire returns an idle connection or opens a new one, waiting for a free
// slot as long as ctx allows.
func (p *pool) Acquire(ctx context.Context) (*poolConn, error) {
	select {
	case p.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			<-p.slots
			return nil, errPoolClosed
		}
		var ic idleConn
		found := len(p.idle) > 0
		if found {
			ic = p.idle[len(p.idle)-1]
			p.idle = p.idle[:len(p.idle)-1]
		}
		p.mu.Unlock()

		if !found {
			conn, err := pgx.ConnectConfig(ctx, p.config)
			if err != nil {
				<-p.slots
				return nil, err
			}
			return &poolConn{p: p, conn: conn}, nil
		}
		idle := time.Since(ic.since)
		if idle > maxIdle {
			closeConn(ic.conn)
			continue
		}
		if idle > pingAfter {
			if err := ic.conn.Ping(ctx); err != nil {
				closeConn(ic.conn)
				if ctx.Err() != nil {
					<-p.slots
					return nil, ctx.Err()
				}
				continue
			}
		}
		return &poolConn{p: p, conn: ic.conn}, nil
	}
}

// Release gives the connection back. A connection that is closed, busy or
// still inside a transaction is not reused: closing it makes the server
// abort whatever it was doing. Release is safe to call twice.
func (c *poolConn) Release() {
	c.once.Do(func() {
		defer func() { <-c.p.slots }()
		pc := c.conn.PgConn()
		if c.conn.IsClosed() || pc.IsBusy() || pc.TxStatus() != 'I' {
			closeConn(c.conn)
			return
		}
		c.p.mu.Lock()
		if c.p.closed {
			c.p.mu.Unlock()
			closeConn(c.conn)
			return
		}
		c.p.idle = append(c.p.idle, idleConn{conn: c.conn, since: time.Now()})
		c.p.mu.Unlock()
	})
}

// Conn is the underlying connection; it must not be used after Release.
func (c *poolConn) Conn() *pgx.Conn { return c.conn }

func (c *poolConn) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	return c.conn.Exec(ctx, sql, args...)
}

func (c *poolConn) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	return c.conn.SendBatch(ctx, b)
}

// Close closes the idle connections and makes every later Acquire fail;
// connections on loan are closed as they are released. Safe to call twice.
func (p *pool) Close() {
	p.mu.Lock()
	p.closed = true
	idle := p.idle
	p.idle = nil
	p.mu.Unlock()
	for _, ic := range idle {
		closeConn(ic.conn)
	}
}

func closeConn(conn *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	_ = conn.Close(ctx)
}

// Exec runs one statement on a pooled connection.
func (p *pool) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	c, err := p.Acquire(ctx)
	if err != nil {
		return pgconn.CommandTag{}, err
	}
	defer c.Release()
	return c.conn.Exec(ctx, sql, args...)
}

// Query runs a query on a pooled connection, released when the rows are
// closed.
func (p *pool) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	c, err := p.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	rows, err := c.conn.Query(ctx, sql, args...)
	if err != nil {
		c.Release()
		return nil, err
	}
	return &poolRows{Rows: rows, c: c}, nil
}

// QueryRow runs a query on a pooled connection, released by Scan, which the
// caller must call.
func (p *pool) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	c, err := p.Acquire(ctx)
	if err != nil {
		return errRow{err}
	}
	return &poolRow{row: c.conn.QueryRow(ctx, sql, args...), c: c}
}

// Ping checks that a connection can be had and answers.
func (p *pool) Ping(ctx context.Context) error {
	c, err := p.Acquire(ctx)
	if err != nil {
		return err
	}
	defer c.Release()
	return c.conn.Ping(ctx)
}

// BeginTx begins a transaction on a pooled connection, released when the
// transaction ends.
func (p *pool) BeginTx(ctx context.Context, opts pgx.TxOptions) (pgx.Tx, error) {
	c, err := p.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	tx, err := c.conn.BeginTx(ctx, opts)
	if err != nil {
		c.Release()
		return nil, err
	}
	return &poolTx{Tx: tx, c: c}, nil
}

type poolRows struct {
	pgx.Rows
	c *poolConn
}

func (r *poolRows) Close() {
	r.Rows.Close()
	r.c.Release()
}

type poolRow struct {
	row pgx.Row
	c   *poolConn
}

func (r *poolRow) Scan(dest ...any) error {
	defer r.c.Release()
	return r.row.Scan(dest...)
}

type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }

type poolTx struct {
	pgx.Tx
	c *poolConn
}

func (t *poolTx) Commit(ctx context.Context) error {
	defer t.c.Release()
	return t.Tx.Commit(ctx)
}

func (t *poolTx) Rollback(ctx context.Context) error {
	defer t.c.Release()
	return t.Tx.Rollback(ctx)
}
