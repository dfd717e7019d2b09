package postgres

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/accord-saga/accord/internal/storage"
)

// nowSQL reads the database's clock in Unix microseconds. clock_timestamp()
// and not now(): now() is the start of the transaction, which can lie well
// before the moment a lease or a visibility time is judged.
const nowSQL = `(extract(epoch FROM clock_timestamp()) * 1000000)::bigint`

// Driver is the PostgreSQL backend. It is safe for concurrent use.
type Driver struct {
	pool       *pgxpool.Pool
	schema     string
	partitions int
	closeOnce  sync.Once

	// The coalescer: see group.go.
	quit    chan struct{}
	exited  chan struct{}
	workers []*worker
}

var _ storage.Driver = (*Driver)(nil)

// Open connects to the database cfg.URL names, creates the store in
// cfg.Schema if the schema is absent or empty, or migrates the store found
// there. It fails with a message naming host:port if the database cannot be
// reached within cfg.ConnectTimeout, with storage.ErrNotAStore if the schema
// holds other tables, and with *storage.SchemaTooNewError if the store was
// written by a newer binary; in those cases nothing is created or changed.
func Open(ctx context.Context, cfg Config) (*Driver, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	pc, err := pgxpool.ParseConfig(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("postgres: parse database URL: %w", err)
	}
	pc.MaxConns = cfg.MaxConns
	cc := pc.ConnConfig
	if cc.ConnectTimeout == 0 {
		cc.ConnectTimeout = cfg.ConnectTimeout
	}
	// Session settings travel in the startup message, so every pooled
	// connection has them before its first statement.
	cc.RuntimeParams["search_path"] = cfg.Schema
	// An acknowledged commit must be durable, whatever the server's default.
	cc.RuntimeParams["synchronous_commit"] = "on"
	cc.RuntimeParams["application_name"] = cmp.Or(cc.RuntimeParams["application_name"], "accord")
	addr := net.JoinHostPort(cc.Host, strconv.Itoa(int(cc.Port)))

	// The pool connects lazily: the ping opens the first connection.
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("postgres: create pool: %w", err)
	}
	pingCtx, cancel := context.WithTimeout(ctx, cc.ConnectTimeout)
	err = pool.Ping(pingCtx)
	cancel()
	if err != nil {
		// Close also cancels a connection attempt the ping gave up on.
		pool.Close()
		return nil, fmt.Errorf("postgres: connect to %s: %w", addr, err)
	}
	partitions, err := migrate(ctx, pool, cfg)
	if err != nil {
		pool.Close()
		return nil, err
	}
	d := &Driver{pool: pool, schema: cfg.Schema, partitions: partitions}
	d.startWorkers(workerCount(cfg.MaxConns))
	return d, nil
}

// Info describes the open store.
func (d *Driver) Info() storage.Info {
	return storage.Info{Backend: "postgres", Partitions: d.partitions, SchemaVersion: SchemaVersion}
}

// Schema returns the schema that holds the store's tables.
func (d *Driver) Schema() string { return d.schema }

// Now returns the database's clock.
func (d *Driver) Now(ctx context.Context) (time.Time, error) {
	var us int64
	if err := d.pool.QueryRow(ctx, `SELECT `+nowSQL).Scan(&us); err != nil {
		return time.Time{}, fmt.Errorf("postgres: now: %w", err)
	}
	return fromMicros(us), nil
}

// Close fails the commits still queued, waits for the groups in flight,
// closes the idle connections, makes every later call fail, and returns
// once the connections in use have come back and been closed. It is safe
// to call twice.
func (d *Driver) Close() error {
	d.closeOnce.Do(func() {
		d.stopWorkers()
		d.pool.Close()
	})
	return nil
}

// checkKey validates a name or id given as a lookup key, with the bounds
// storage applies to the keys it stores.
func checkKey(what, s string) error {
	if s == "" || len(s) > storage.MaxKeyLength {
		return fmt.Errorf("%w: %s must be 1..%d bytes", storage.ErrInvalid, what, storage.MaxKeyLength)
	}
	return nil
}

// fromMicros converts a stored time to the UTC time.Time callers see.
func fromMicros(us int64) time.Time { return time.UnixMicro(us).UTC() }

// fromNullMicros converts a nullable stored time; NULL is the zero time.
func fromNullMicros(us *int64) time.Time {
	if us == nil {
		return time.Time{}
	}
	return fromMicros(*us)
}

// Unique constraints whose violations mean something to callers.
const (
	pgUniqueViolation = "23505"

	constraintStreamsPkey         = "streams_pkey"
	constraintEventsStreamVersion = "events_stream_version_key"
	constraintIdempotencyKeysPkey = "idempotency_keys_pkey"
	constraintTasksPkey           = "tasks_pkey"
	constraintTimersPkey          = "timers_pkey"
)

// uniqueViolation returns the constraint a unique violation broke, or "".
func uniqueViolation(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == pgUniqueViolation {
		return pgErr.ConstraintName
	}
	return ""
}

// collect scans every row of rows with scan, and closes rows.
func collect[T any](rows pgx.Rows, scan func(pgx.Rows) (T, error)) ([]T, error) {
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// queryAll runs a query and scans every row it returns with scan.
func queryAll[T any](ctx context.Context, q interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}, scan func(pgx.Rows) (T, error), sql string, args ...any) ([]T, error) {
	rows, err := q.Query(ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	return collect(rows, scan)
}
