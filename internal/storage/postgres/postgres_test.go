package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"

	"github.com/accord-saga/accord/internal/storage"
	"github.com/accord-saga/accord/internal/storage/postgres"
	"github.com/accord-saga/accord/internal/storage/postgres/pgtest"
	"github.com/accord-saga/accord/internal/storage/storagetest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestConformance(t *testing.T) {
	storagetest.Exercise(t, storagetest.Harness{
		Open: func(t *testing.T, partitions int) storage.Driver {
			return pgtest.NewStore(t, partitions)
		},
		Reopen: func(t *testing.T, d storage.Driver) storage.Driver {
			pd := d.(*postgres.Driver)
			if err := pd.Close(); err != nil {
				t.Fatalf("close: %v", err)
			}
			re, err := pgtest.Open(t.Context(), pgtest.URL(t), pd.Schema(), 0)
			if err != nil {
				t.Fatalf("reopen: %v", err)
			}
			t.Cleanup(func() { _ = re.Close() })
			return re
		},
	})
}

// exec runs statements on a connection of its own, outside any store.
func exec(t *testing.T, url string, sqls ...string) {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close(context.Background())
	for _, sql := range sqls {
		if _, err := conn.Exec(t.Context(), sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
}

// tables lists the tables in schema.
func tables(t *testing.T, url, schema string) []string {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(t.Context(), `SELECT tablename FROM pg_tables WHERE schemaname = $1 ORDER BY tablename`, schema)
	if err != nil {
		t.Fatal(err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return names
}

func TestOpenUnreachable(t *testing.T) {
	t.Parallel()
	start := time.Now()
	_, err := postgres.Open(t.Context(), postgres.Config{
		URL:            "postgres://postgres@127.0.0.1:1/test?sslmode=disable",
		ConnectTimeout: 2 * time.Second,
	})
	if err == nil {
		t.Fatal("Open of an unreachable database succeeded")
	}
	if !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Fatalf("error %q does not name the address", err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("Open took %v to fail", took)
	}
}

func TestConfigInvalid(t *testing.T) {
	t.Parallel()
	for _, cfg := range []postgres.Config{
		{},
		{URL: "postgres://x", Schema: "Bad-Name"},
		{URL: "postgres://x", Schema: "1abc"},
		{URL: "postgres://x", Schema: strings.Repeat("a", 64)},
		{URL: "postgres://x", Schema: "a; DROP TABLE x"},
		{URL: "postgres://x", Partitions: -1},
		{URL: "postgres://x", Partitions: storage.MaxPartitions + 1},
		{URL: "postgres://x", MaxConns: -1},
		{URL: "postgres://x", ConnectTimeout: -time.Second},
	} {
		if _, err := postgres.Open(t.Context(), cfg); !errors.Is(err, storage.ErrInvalid) {
			t.Errorf("Open(%+v) = %v, want ErrInvalid", cfg, err)
		}
	}
	if _, err := postgres.Open(t.Context(), postgres.Config{URL: "::not a url::"}); err == nil {
		t.Error("Open of an unparsable URL succeeded")
	}
}

func TestOpenNotAStore(t *testing.T) {
	t.Parallel()
	url, schema := pgtest.Schema(t)
	exec(t, url, "CREATE SCHEMA "+schema, "CREATE TABLE "+schema+".customers (id int)")
	_, err := postgres.Open(t.Context(), postgres.Config{URL: url, Schema: schema})
	if !errors.Is(err, storage.ErrNotAStore) {
		t.Fatalf("Open of a foreign schema = %v, want ErrNotAStore", err)
	}
	if got := tables(t, url, schema); fmt.Sprint(got) != "[customers]" {
		t.Fatalf("tables after a refused Open = %v, want only customers", got)
	}
}

func TestOpenEmptySchema(t *testing.T) {
	t.Parallel()
	url, schema := pgtest.Schema(t)
	exec(t, url, "CREATE SCHEMA "+schema)
	d, err := pgtest.Open(t.Context(), url, schema, 2)
	if err != nil {
		t.Fatalf("Open of an empty schema: %v", err)
	}
	defer d.Close()
	if d.Info().Partitions != 2 {
		t.Fatalf("Info = %+v, want 2 partitions", d.Info())
	}
}

func TestOpenSchemaTooNew(t *testing.T) {
	t.Parallel()
	url, schema := pgtest.Schema(t)
	d, err := pgtest.Open(t.Context(), url, schema, 2)
	if err != nil {
		t.Fatal(err)
	}
	_ = d.Close()
	newer := postgres.SchemaVersion + 1
	exec(t, url, fmt.Sprintf("UPDATE %s.meta SET value = %d WHERE key = 'schema_version'", schema, newer))
	before := tables(t, url, schema)

	_, err = pgtest.Open(t.Context(), url, schema, 2)
	var tooNew *storage.SchemaTooNewError
	if !errors.As(err, &tooNew) || !errors.Is(err, storage.ErrSchemaTooNew) {
		t.Fatalf("Open of a newer store = %v, want *SchemaTooNewError", err)
	}
	if tooNew.StoreVersion != newer || tooNew.BinaryVersion != postgres.SchemaVersion {
		t.Fatalf("error = %+v, want store %d binary %d", *tooNew, newer, postgres.SchemaVersion)
	}
	if after := tables(t, url, schema); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("tables changed from %v to %v", before, after)
	}
	conn, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var v int
	if err := conn.QueryRow(t.Context(), "SELECT value FROM "+schema+".meta WHERE key = 'schema_version'").Scan(&v); err != nil || v != newer {
		t.Fatalf("schema version after a refused Open = %d, %v; want %d", v, err, newer)
	}
}

func TestOpenKeepsPartitionCount(t *testing.T) {
	t.Parallel()
	url, schema := pgtest.Schema(t)
	d, err := pgtest.Open(t.Context(), url, schema, 3)
	if err != nil {
		t.Fatal(err)
	}
	_ = d.Close()
	d, err = pgtest.Open(t.Context(), url, schema, 8)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if got := d.Info().Partitions; got != 3 {
		t.Fatalf("reopened with 8 partitions configured: Info().Partitions = %d, want the store's 3", got)
	}
	ls, err := d.LeaseList(t.Context())
	if err != nil || len(ls) != 3 {
		t.Fatalf("LeaseList = %d leases, %v; want 3", len(ls), err)
	}
}

// TestOpenConcurrently starts several nodes on one new schema at once: the
// advisory lock lets one create the store and the others find it.
func TestOpenConcurrently(t *testing.T) {
	t.Parallel()
	url, schema := pgtest.Schema(t)
	const nodes = 5
	drivers := make([]*postgres.Driver, nodes)
	errs := make([]error, nodes)
	var wg sync.WaitGroup
	for i := range nodes {
		wg.Go(func() {
			drivers[i], errs[i] = postgres.Open(t.Context(), postgres.Config{URL: url, Schema: schema, Partitions: 4, MaxConns: 2})
		})
	}
	wg.Wait()
	for i := range nodes {
		if errs[i] != nil {
			t.Fatalf("node %d: %v", i, errs[i])
		}
		defer drivers[i].Close()
		if drivers[i].Info().Partitions != 4 {
			t.Fatalf("node %d sees %+v", i, drivers[i].Info())
		}
	}
	ls, err := drivers[0].LeaseList(t.Context())
	if err != nil || len(ls) != 4 {
		t.Fatalf("LeaseList = %d leases, %v; want 4", len(ls), err)
	}
}

func TestClosedStoreFails(t *testing.T) {
	t.Parallel()
	d := pgtest.NewStore(t, 1)
	_ = d.Close()
	if _, err := d.Now(t.Context()); err == nil {
		t.Fatal("Now on a closed store succeeded")
	}
	if _, err := d.Commit(t.Context(), &storage.CommitParams{Partition: 0, Epoch: 1}); err == nil {
		t.Fatal("Commit on a closed store succeeded")
	}
}

func TestNilParams(t *testing.T) {
	t.Parallel()
	d := pgtest.NewStore(t, 1)
	ctx := t.Context()
	calls := map[string]func() error{
		"Commit":          func() error { _, err := d.Commit(ctx, nil); return err },
		"StreamRead":      func() error { _, err := d.StreamRead(ctx, nil); return err },
		"PartitionRead":   func() error { _, err := d.PartitionRead(ctx, nil); return err },
		"TaskClaim":       func() error { _, err := d.TaskClaim(ctx, nil); return err },
		"TaskHeartbeat":   func() error { _, err := d.TaskHeartbeat(ctx, nil); return err },
		"TaskRelease":     func() error { return d.TaskRelease(ctx, nil) },
		"TimerDue":        func() error { _, err := d.TimerDue(ctx, nil); return err },
		"TimerList":       func() error { _, err := d.TimerList(ctx, nil); return err },
		"LeaseAcquire":    func() error { _, err := d.LeaseAcquire(ctx, nil); return err },
		"LeaseRenew":      func() error { _, err := d.LeaseRenew(ctx, nil); return err },
		"LeaseRelease":    func() error { return d.LeaseRelease(ctx, nil) },
		"DefinitionList":  func() error { _, err := d.DefinitionList(ctx, nil); return err },
		"SagaList":        func() error { _, err := d.SagaList(ctx, nil); return err },
		"SagaDeleteEnded": func() error { _, err := d.SagaDeleteEnded(ctx, nil); return err },
	}
	for name, call := range calls {
		if err := call(); !errors.Is(err, storage.ErrInvalid) {
			t.Errorf("%s(nil) = %v, want ErrInvalid", name, err)
		}
	}
}
