package guard

import (
	"cmp"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"
	_ "modernc.org/sqlite"
)

const (
	// envPostgresURL overrides defaultPostgresURL.
	envPostgresURL     = "ACCORD_TEST_DATABASE_URL"
	defaultPostgresURL = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	schemaPrefix       = "accord_guard_test_"
)

// sqliteDSN opens path the way the package documentation asks a
// participant to: transactions begin with BEGIN IMMEDIATE and wait for the
// write lock.
func sqliteDSN(path string) string {
	return "file:" + path + "?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)&_txlock=immediate"
}

// testDB is a participant's database: the guard's table beside the
// participant's own accounts, whose balance the steps change, and effects,
// a log of every action and compensation that took effect.
type testDB struct {
	dialect Dialect
	db      *sql.DB
	g       *Guard
	dsn     string
}

// eachDialect runs f, in parallel, against a fresh SQLite database and a
// fresh PostgreSQL schema.
func eachDialect(t *testing.T, f func(t *testing.T, d *testDB)) {
	t.Helper()
	for _, dialect := range []Dialect{SQLite, Postgres} {
		t.Run(dialect.String(), func(t *testing.T) {
			t.Parallel()
			f(t, newTestDB(t, dialect))
		})
	}
}

func newTestDB(t *testing.T, dialect Dialect) *testDB {
	t.Helper()
	d := &testDB{dialect: dialect}
	switch dialect {
	case SQLite:
		d.dsn = sqliteDSN(filepath.Join(t.TempDir(), "participant.db"))
		d.db = openDB(t, "sqlite", d.dsn)
		// A participant's pool, not the lock, queues its requests: the
		// pool is fair, SQLite's busy handler is not.
		d.db.SetMaxOpenConns(4)
	case Postgres:
		d.dsn = postgresSchema(t)
		d.db = openDB(t, "pgx", d.dsn)
		d.db.SetMaxOpenConns(16)
	}
	g, err := New(Options{Dialect: dialect})
	if err != nil {
		t.Fatal(err)
	}
	d.g = g
	ctx := context.Background()
	if err := g.Migrate(ctx, d.db); err != nil {
		t.Fatal(err)
	}
	for _, stmt := range []string{
		`CREATE TABLE accounts (id TEXT PRIMARY KEY, balance BIGINT NOT NULL)`,
		`CREATE TABLE effects (saga_id TEXT NOT NULL, step TEXT NOT NULL, kind TEXT NOT NULL)`,
	} {
		if _, err := d.db.ExecContext(ctx, stmt); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

func openDB(t *testing.T, driver, dsn string) *sql.DB {
	t.Helper()
	db, err := sql.Open(driver, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

var postgresReach struct {
	once sync.Once
	url  string
	err  error
}

// postgresURL returns the test database's URL. When the database cannot be
// reached it fails the test if CI=true and skips it otherwise.
func postgresURL(t *testing.T) string {
	t.Helper()
	r := &postgresReach
	r.once.Do(func() {
		r.url = cmp.Or(os.Getenv(envPostgresURL), defaultPostgresURL)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // generous: a busy machine slows a live database
		defer cancel()
		db, err := sql.Open("pgx", r.url)
		if err == nil {
			err = db.PingContext(ctx)
			_ = db.Close()
		}
		r.err = err
	})
	if r.err != nil {
		where := "the URL in " + envPostgresURL
		if u, err := url.Parse(r.url); err == nil {
			where = u.Redacted()
		}
		if os.Getenv("CI") == "true" {
			t.Fatalf("PostgreSQL is required in CI and unreachable at %s: %v", where, r.err)
		}
		t.Skipf("PostgreSQL unreachable at %s (%v); start it, or set %s to a reachable database, to run this test", where, r.err, envPostgresURL)
	}
	return r.url
}

// postgresSchema creates a fresh schema, dropped when the test ends, and
// returns a DSN whose connections use it.
func postgresSchema(t *testing.T) string {
	t.Helper()
	base := postgresURL(t)
	var b [8]byte
	_, _ = rand.Read(b[:])
	schema := schemaPrefix + hex.EncodeToString(b[:])
	admin := openDB(t, "pgx", base)
	ctx := context.Background()
	// The name is ours, made of the prefix and hex digits: safe unquoted.
	if _, err := admin.ExecContext(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := admin.ExecContext(context.Background(), "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

// sql adapts a test statement written with $n placeholders to d's dialect.
func (d *testDB) sql(s string) string {
	if d.dialect == SQLite {
		return strings.ReplaceAll(s, "$", "?")
	}
	return s
}

const (
	openingBalance = 100
	amount         = 10
)

func (d *testDB) openAccount(t *testing.T, id string) {
	t.Helper()
	if _, err := d.db.Exec(d.sql(`INSERT INTO accounts (id, balance) VALUES ($1, $2)`), id, openingBalance); err != nil {
		t.Fatal(err)
	}
}

// inTx runs f in a transaction and commits it if f succeeds.
func (d *testDB) inTx(ctx context.Context, f func(tx *sql.Tx) error) error {
	tx, err := d.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := f(tx); err != nil {
		return errors.Join(err, tx.Rollback())
	}
	return tx.Commit()
}

// debit is the test participant's action: it takes amount from the saga's
// account and answers with the new balance.
func (d *testDB) debit(ctx context.Context, tx *sql.Tx, k Key) ([]byte, error) {
	var balance int64
	err := tx.QueryRowContext(ctx, d.sql(`UPDATE accounts SET balance = balance - $1 WHERE id = $2 RETURNING balance`),
		amount, k.SagaID).Scan(&balance)
	if err != nil {
		return nil, err
	}
	if err := d.logEffect(ctx, tx, k, "action"); err != nil {
		return nil, err
	}
	return fmt.Appendf(nil, "balance %d", balance), nil
}

// credit is the test participant's compensation: it gives amount back.
func (d *testDB) credit(ctx context.Context, tx *sql.Tx, k Key) error {
	if _, err := tx.ExecContext(ctx, d.sql(`UPDATE accounts SET balance = balance + $1 WHERE id = $2`), amount, k.SagaID); err != nil {
		return err
	}
	return d.logEffect(ctx, tx, k, "compensation")
}

func (d *testDB) logEffect(ctx context.Context, tx *sql.Tx, k Key, kind string) error {
	_, err := tx.ExecContext(ctx, d.sql(`INSERT INTO effects (saga_id, step, kind) VALUES ($1, $2, $3)`), k.SagaID, k.Step, kind)
	return err
}

// action delivers k's action the way a participant handles it: one
// transaction around the guard and the effect.
func (d *testDB) action(ctx context.Context, k Key) (out []byte, ran bool, err error) {
	err = d.inTx(ctx, func(tx *sql.Tx) error {
		out, ran, err = d.g.Action(ctx, tx, k, func() ([]byte, error) { return d.debit(ctx, tx, k) })
		return err
	})
	return out, ran, err
}

// compensate delivers k's compensation.
func (d *testDB) compensate(ctx context.Context, k Key) (ran bool, err error) {
	err = d.inTx(ctx, func(tx *sql.Tx) error {
		ran, err = d.g.Compensate(ctx, tx, k, func() error { return d.credit(ctx, tx, k) })
		return err
	})
	return ran, err
}

func (d *testDB) balance(t *testing.T, id string) int64 {
	t.Helper()
	var b int64
	if err := d.db.QueryRow(d.sql(`SELECT balance FROM accounts WHERE id = $1`), id).Scan(&b); err != nil {
		t.Fatal(err)
	}
	return b
}

// effects counts the effects of kind that k took.
func (d *testDB) effects(t *testing.T, k Key, kind string) int {
	t.Helper()
	var n int
	err := d.db.QueryRow(d.sql(`SELECT count(*) FROM effects WHERE saga_id = $1 AND step = $2 AND kind = $3`),
		k.SagaID, k.Step, kind).Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// state returns k's record's state, or "" when there is none.
func (d *testDB) state(t *testing.T, k Key) string {
	t.Helper()
	var s string
	err := d.db.QueryRow(d.sql(`SELECT state FROM accord_guard WHERE saga_id = $1 AND step = $2`), k.SagaID, k.Step).Scan(&s)
	if errors.Is(err, sql.ErrNoRows) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (d *testDB) records(t *testing.T) int {
	t.Helper()
	var n int
	if err := d.db.QueryRow(`SELECT count(*) FROM accord_guard`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// ledger checks k's account and effects: the balance, and how many times
// the action and the compensation took effect.
func (d *testDB) ledger(t *testing.T, k Key, balance int64, actions, compensations int) {
	t.Helper()
	if got := d.balance(t, k.SagaID); got != balance {
		t.Errorf("%s: balance %d, want %d", k, got, balance)
	}
	if got := d.effects(t, k, "action"); got != actions {
		t.Errorf("%s: action took effect %d times, want %d", k, got, actions)
	}
	if got := d.effects(t, k, "compensation"); got != compensations {
		t.Errorf("%s: compensation took effect %d times, want %d", k, got, compensations)
	}
}
