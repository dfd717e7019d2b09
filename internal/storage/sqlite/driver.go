package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/accord-saga/accord/internal/storage"

	_ "modernc.org/sqlite" // registers the pure-Go "sqlite" driver
)

const driverName = "sqlite"

// ErrClosed is returned by calls on a closed Driver.
var ErrClosed = errors.New("sqlite: driver is closed")

// Driver is the SQLite storage backend. It is safe for concurrent use.
type Driver struct {
	path  string
	info  storage.Info
	clock clock
	lock  *storeLock // held from Open to Close

	wdb  *sql.DB       // holds the one writer connection
	w    *writer       // owns wconn and every write
	rdb  *sql.DB       // read connections
	r    readStmts     // prepared on rdb
	ckpt *checkpointer // moves the WAL into the database file

	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
}

var _ storage.Driver = (*Driver)(nil)

// Open opens the store at cfg.Path, creating it if the file does not exist
// or is empty. A file that is not an SQLite database, or an SQLite database
// that is not an Accord store, is refused with storage.ErrNotAStore and
// left untouched; a store written by a newer binary with
// *storage.SchemaTooNewError, also untouched. A store that another Driver
// has open, in this process or another, is refused at once with
// *InUseError, and nothing is touched: the Driver holds a lock on the
// file Path+"-lock" from Open to Close.
func Open(ctx context.Context, cfg Config) (*Driver, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(cfg.Path)
	if err != nil {
		return nil, fmt.Errorf("sqlite: path %q: %w", cfg.Path, err)
	}
	dir := filepath.Dir(abs)
	if fi, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("sqlite: directory %s of the store: %w (the directory must exist)", dir, err)
	} else if !fi.IsDir() {
		return nil, fmt.Errorf("sqlite: %s, the directory of the store, is not a directory", dir)
	}
	lock, err := lockStore(abs)
	if err != nil {
		return nil, err
	}
	d := &Driver{path: abs, lock: lock}
	if cfg.Clock != nil {
		d.clock.src = cfg.Clock.Now
	}
	if err := d.openLocked(ctx, cfg, abs); err != nil {
		_ = d.closeAll()
		_ = lock.release(lock.created)
		return nil, err
	}
	return d, nil
}

// openLocked opens the store once its lock is held.
func (d *Driver) openLocked(ctx context.Context, cfg Config, abs string) error {
	exists, err := checkFile(abs)
	if err != nil {
		return err
	}
	if exists {
		if _, err := inspect(ctx, abs, cfg.BusyTimeout); err != nil {
			return err
		}
	}
	return d.open(ctx, cfg, abs)
}

func (d *Driver) open(ctx context.Context, cfg Config, abs string) error {
	busy := fmt.Sprintf("_pragma=busy_timeout(%d)", cfg.BusyTimeout.Milliseconds())
	var err error
	d.wdb, err = sql.Open(driverName, dsn(abs, busy,
		"_pragma=journal_mode(WAL)",
		"_pragma=synchronous("+strings.ToUpper(cfg.Synchronous)+")",
		// A bigger page cache for the writer keeps the hot index pages of
		// events, tasks and timers in memory (negative: KiB).
		"_pragma=cache_size(-32768)",
		// After a checkpoint resets the write-ahead log, truncate its file
		// to this size rather than keep the largest it ever grew to.
		"_pragma=journal_size_limit(67108864)",
		// Statement and savepoint journals (one per batched commit) in
		// memory rather than in temporary files: they only ever roll back
		// a part of an open transaction, so they need no durability, and
		// on a file they cost a write system call per statement.
		"_pragma=temp_store(MEMORY)",
		// No automatic checkpoints on the writer: the checkpointer runs
		// them on a connection of its own (see checkpoint.go).
		"_pragma=wal_autocheckpoint(0)",
	))
	if err != nil {
		return fmt.Errorf("sqlite: open %s: %w", abs, err)
	}
	d.wdb.SetMaxOpenConns(1)
	d.wdb.SetMaxIdleConns(1)
	d.wdb.SetConnMaxLifetime(0)
	d.wdb.SetConnMaxIdleTime(0)
	conn, err := d.wdb.Conn(ctx)
	if err != nil {
		return fmt.Errorf("sqlite: open %s: %w", abs, err)
	}
	var mode string
	if err := conn.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil || !strings.EqualFold(mode, "wal") {
		_ = conn.Close()
		return fmt.Errorf("sqlite: %s: journal mode is %q, want wal (%v)", abs, mode, err)
	}
	st, err := migrate(ctx, conn, abs, cfg.Partitions)
	if err != nil {
		_ = conn.Close()
		return err
	}
	d.info = storage.Info{Backend: "sqlite", Partitions: st.partitions, SchemaVersion: st.version, Exclusive: true}

	d.rdb, err = sql.Open(driverName, dsn(abs, busy, "_pragma=query_only(1)"))
	if err != nil {
		_ = conn.Close()
		return fmt.Errorf("sqlite: open %s for reading: %w", abs, err)
	}
	d.rdb.SetMaxOpenConns(cfg.ReadConnections)
	d.rdb.SetMaxIdleConns(cfg.ReadConnections)
	d.rdb.SetConnMaxLifetime(0)
	d.rdb.SetConnMaxIdleTime(0)
	if err := d.r.prepare(ctx, d.rdb); err != nil {
		_ = conn.Close()
		return err
	}
	d.w, err = startWriter(ctx, conn, &d.clock, st.partitions)
	if err != nil {
		_ = conn.Close()
		return err
	}
	cdb, err := sql.Open(driverName, dsn(abs, busy, "_pragma=synchronous("+strings.ToUpper(cfg.Synchronous)+")"))
	if err != nil {
		return fmt.Errorf("sqlite: open %s for checkpoints: %w", abs, err)
	}
	cdb.SetMaxOpenConns(1)
	cdb.SetMaxIdleConns(1)
	cdb.SetConnMaxLifetime(0)
	cdb.SetConnMaxIdleTime(0)
	d.ckpt = startCheckpointer(cdb, func() { d.w.walFull.Store(true) })
	return nil
}

// Close stops the writer (queued writes fail with ErrClosed) and closes
// every connection, then gives up the store's lock. It is safe to call
// twice; it waits for the writer.
func (d *Driver) Close() error {
	d.closeOnce.Do(func() {
		d.closed.Store(true)
		err := d.closeAll()
		if lerr := d.lock.release(true); lerr != nil {
			err = errors.Join(err, fmt.Errorf("sqlite: release lock: %w", lerr))
		}
		d.closeErr = err
	})
	return d.closeErr
}

func (d *Driver) closeAll() error {
	var errs []error
	if d.ckpt != nil {
		errs = append(errs, d.ckpt.close())
	}
	if d.w != nil {
		errs = append(errs, d.w.stop())
	}
	errs = append(errs, d.r.close())
	if d.rdb != nil {
		errs = append(errs, d.rdb.Close())
	}
	if d.wdb != nil {
		errs = append(errs, d.wdb.Close())
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("sqlite: close: %w", err)
	}
	return nil
}

// Info describes the open store.
func (d *Driver) Info() storage.Info { return d.info }

// Path is the absolute path of the database file.
func (d *Driver) Path() string { return d.path }

// Now is the store's clock: the host's wall clock in microseconds, never
// going backwards while the store is open. Every write reads it once per
// transaction.
func (d *Driver) Now(ctx context.Context) (time.Time, error) {
	if err := ctx.Err(); err != nil {
		return time.Time{}, err
	}
	return fromMicros(d.clock.now()), nil
}

// IntegrityCheck runs SQLite's integrity_check over the whole database and
// returns an error listing what it found unless the answer is "ok".
func (d *Driver) IntegrityCheck(ctx context.Context) error {
	if d.closed.Load() {
		return ErrClosed
	}
	rows, err := d.rdb.QueryContext(ctx, "PRAGMA integrity_check")
	if err != nil {
		return fmt.Errorf("sqlite: integrity check: %w", err)
	}
	defer rows.Close()
	var problems []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return fmt.Errorf("sqlite: integrity check: %w", err)
		}
		problems = append(problems, s)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("sqlite: integrity check: %w", err)
	}
	if len(problems) == 1 && problems[0] == "ok" {
		return nil
	}
	return fmt.Errorf("sqlite: integrity check of %s failed: %s", d.path, strings.Join(problems, "; "))
}

// clock is the store's time source: the host's wall clock, as SQLite's
// own would be, but read in Go because SQLite's unixepoch('subsec') has
// only millisecond resolution and costs a statement per transaction. The
// wall clock may step back (NTP); the store's clock holds still instead,
// so that times recorded in position order never decrease.
type clock struct {
	last atomic.Int64
	src  func() time.Time // nil: time.Now
}

func (c *clock) now() int64 {
	src := c.src
	if src == nil {
		src = time.Now
	}
	n := src().UnixMicro()
	for {
		l := c.last.Load()
		if n <= l {
			return l
		}
		if c.last.CompareAndSwap(l, n) {
			return n
		}
	}
}

func fromMicros(us int64) time.Time { return time.UnixMicro(us).UTC() }

func toMicros(t time.Time) int64 { return t.UnixMicro() }

func durMicros(d time.Duration) int64 { return d.Microseconds() }
