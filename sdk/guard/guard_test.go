package guard

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"sync"
	"testing"
)

func TestNewTableNames(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"guard", "_g", "participant_guard_2", strings.Repeat("a", MaxTableLength)} {
		g, err := New(Options{Table: name, Dialect: SQLite})
		if err != nil || g.Table() != name {
			t.Errorf("New(%q) = %v; want it accepted", name, err)
		}
	}
	g, err := New(Options{Dialect: Postgres})
	if err != nil || g.Table() != TableDefault {
		t.Errorf("New without a table: %v, table %v; want %q", err, g, TableDefault)
	}
	for _, name := range []string{
		"1guard", "Guard", "accord-guard", "accord guard", "guard;", `gu"ard`,
		"public.guard", "guard\x00", "gärd", "guard--", strings.Repeat("a", MaxTableLength+1),
		"guard; DROP TABLE accounts",
	} {
		if _, err := New(Options{Table: name, Dialect: Postgres}); err == nil {
			t.Errorf("New(%q) accepted it", name)
		}
	}
}

func TestNewDialect(t *testing.T) {
	t.Parallel()
	for _, d := range []Dialect{0, 3, -1} {
		if _, err := New(Options{Dialect: d}); err == nil {
			t.Errorf("New with dialect %v accepted it", d)
		}
	}
	if Postgres.String() != "postgres" || SQLite.String() != "sqlite" || Dialect(7).String() != "Dialect(7)" {
		t.Errorf("Dialect names: %v, %v, %v", Postgres, SQLite, Dialect(7))
	}
}

func TestMigrate(t *testing.T) {
	t.Parallel()
	eachDialect(t, func(t *testing.T, d *testDB) {
		ctx := context.Background()
		if err := d.g.Migrate(ctx, d.db); err != nil {
			t.Fatalf("migrate again: %v", err)
		}
		// A second table, named after a reserved word, created by many
		// processes starting at once: no catalog collision.
		g2, err := New(Options{Table: "select", Dialect: d.dialect})
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		start := make(chan struct{})
		for range cap(errs) {
			wg.Go(func() {
				<-start
				errs <- g2.Migrate(ctx, d.db)
			})
		}
		close(start)
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Error(err)
			}
		}
		k := Key{SagaID: "order-1", Step: "charge"}
		err = d.inTx(ctx, func(tx *sql.Tx) error {
			_, err := g2.Compensate(ctx, tx, k, func() error { return nil })
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if s := d.state(t, k); s != "" {
			t.Errorf("the second guard wrote to the first's table: state %q", s)
		}
		if err := d.g.Migrate(ctx, nil); err == nil {
			t.Error("Migrate of a nil database succeeded")
		}
	})
}

func TestMigrateTableClash(t *testing.T) {
	t.Parallel()
	eachDialect(t, func(t *testing.T, d *testDB) {
		// A table of another shape under the guard's name makes the
		// guard fail, not misbehave.
		ctx := context.Background()
		if _, err := d.db.ExecContext(ctx, `CREATE TABLE other_guard (id TEXT PRIMARY KEY)`); err != nil {
			t.Fatal(err)
		}
		g, err := New(Options{Table: "other_guard", Dialect: d.dialect})
		if err != nil {
			t.Fatal(err)
		}
		if err := g.Migrate(ctx, d.db); err == nil {
			// CREATE TABLE IF NOT EXISTS leaves the table alone; the
			// index on a missing column fails.
			t.Fatal("Migrate over a foreign table succeeded")
		}
		err = d.inTx(ctx, func(tx *sql.Tx) error {
			_, _, err := g.Action(ctx, tx, Key{SagaID: "s", Step: "a"}, func() ([]byte, error) { return nil, nil })
			return err
		})
		if err == nil {
			t.Fatal("Action on a foreign table succeeded")
		}
	})
}

// TestBusy holds the lock a delivery needs, and checks that the delivery
// gives up with ErrBusy once the database stops waiting.
func TestBusy(t *testing.T) {
	t.Parallel()
	eachDialect(t, func(t *testing.T, d *testDB) {
		ctx := context.Background()
		k := Key{SagaID: "order-1", Step: "charge"}

		// The holder's transaction claims the step and stays open.
		holder, err := d.db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = holder.Rollback() }()
		if _, _, err := d.g.Action(ctx, holder, k, func() ([]byte, error) { return nil, nil }); err != nil {
			t.Fatal(err)
		}

		var tx *sql.Tx
		switch d.dialect {
		case SQLite:
			// A deferred transaction without busy_timeout: it takes
			// the write lock at the guard's first statement, and
			// fails at once.
			dsn := strings.Replace(d.dsn, "_pragma=busy_timeout(5000)", "_pragma=busy_timeout(0)", 1)
			dsn = strings.Replace(dsn, "_txlock=immediate", "_txlock=deferred", 1)
			tx, err = openDB(t, "sqlite", dsn).BeginTx(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
		case Postgres:
			tx, err = d.db.BeginTx(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tx.ExecContext(ctx, `SET LOCAL lock_timeout = '20ms'`); err != nil {
				t.Fatal(err)
			}
		}
		defer func() { _ = tx.Rollback() }()
		ran, err := d.g.Compensate(ctx, tx, k, func() error { t.Error("compensation ran"); return nil })
		if !errors.Is(err, ErrBusy) || ran {
			t.Fatalf("Compensate while another transaction holds the step: ran %v, %v; want ErrBusy", ran, err)
		}
	})
}

func TestIsBusyReadsMessages(t *testing.T) {
	t.Parallel()
	for msg, want := range map[string]bool{
		"database is locked":                   true,
		"sqlite3: database table is locked":    true,
		"SQLITE_BUSY: cannot commit":           true,
		"UNIQUE constraint failed: accord_gua": false,
		"connection refused":                   false,
	} {
		if got := isBusy(errors.New(msg)); got != want {
			t.Errorf("isBusy(%q) = %v, want %v", msg, got, want)
		}
	}
}
