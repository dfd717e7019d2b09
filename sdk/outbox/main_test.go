package outbox_test

import (
	"context"
	"database/sql"
	"net/url"
	"path/filepath"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib"
	"go.uber.org/goleak"
	_ "modernc.org/sqlite"

	"github.com/accord-saga/accord/internal/storage/postgres/pgtest"
	"github.com/accord-saga/accord/sdk/outbox"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// eachDialect runs f, in parallel, against a fresh SQLite database and a
// fresh PostgreSQL schema, each with the outbox table.
func eachDialect(t *testing.T, f func(t *testing.T, d outbox.Dialect, db *sql.DB)) {
	t.Helper()
	for _, d := range []outbox.Dialect{outbox.SQLite, outbox.Postgres} {
		t.Run(d.String(), func(t *testing.T) {
			t.Parallel()
			db := openDB(t, d)
			if err := outbox.Migrate(context.Background(), db, d); err != nil {
				t.Fatal(err)
			}
			f(t, d, db)
		})
	}
}

// openDB opens a participant's database: SQLite as sdk/guard asks
// (BEGIN IMMEDIATE, a busy timeout), PostgreSQL in a fresh schema.
func openDB(t *testing.T, d outbox.Dialect) *sql.DB {
	t.Helper()
	var db *sql.DB
	var err error
	switch d {
	case outbox.SQLite:
		path := filepath.Join(t.TempDir(), "participant.db")
		db, err = sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_txlock=immediate")
		if err == nil {
			db.SetMaxOpenConns(4)
		}
	case outbox.Postgres:
		base, schema := pgtest.Schema(t)
		admin, err := sql.Open("pgx", base)
		if err != nil {
			t.Fatal(err)
		}
		// The name is pgtest's, made of a prefix and hex digits.
		_, err = admin.Exec("CREATE SCHEMA " + schema)
		_ = admin.Close()
		if err != nil {
			t.Fatal(err)
		}
		u, err := url.Parse(base)
		if err != nil {
			t.Fatal(err)
		}
		q := u.Query()
		q.Set("search_path", schema)
		u.RawQuery = q.Encode()
		db, err = sql.Open("pgx", u.String())
		if err == nil {
			db.SetMaxOpenConns(8)
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}
