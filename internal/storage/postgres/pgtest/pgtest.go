package pgtest

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/accord-saga/accord/internal/storage"
	"github.com/accord-saga/accord/internal/storage/postgres"
)

const (
	// EnvURL names the environment variable that overrides DefaultURL.
	EnvURL = "ACCORD_TEST_DATABASE_URL"
	// DefaultURL is the database tests use when EnvURL is unset.
	DefaultURL = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	// SchemaPrefix starts the name of every schema this package creates.
	SchemaPrefix = "accord_test_"
)

// connectTimeout bounds the reachability check. A missing database refuses
// the connection at once; the bound is for a host that never answers, and
// is generous because a busy machine can keep a live database from
// answering for seconds (with CI=true a late answer fails every test).
const connectTimeout = 30 * time.Second

// maxConns keeps a test store's pool small: many tests, in many packages,
// share one server's connection limit.
const maxConns = 8

var reach sync.Map // URL → *reachability

type reachability struct {
	once sync.Once
	err  error
}

// URL returns the test database's URL. If the database cannot be reached it
// fails the test when CI=true and skips it otherwise.
func URL(t testing.TB) string {
	t.Helper()
	url := cmp.Or(os.Getenv(EnvURL), DefaultURL)
	v, _ := reach.LoadOrStore(url, &reachability{})
	r := v.(*reachability)
	r.once.Do(func() { r.err = ping(url) })
	if r.err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("pgtest: PostgreSQL is required in CI and unreachable: %v", r.err)
		}
		t.Skipf("pgtest: PostgreSQL unreachable (%v); start it, or set %s to a reachable database, to run this test", r.err, EnvURL)
	}
	return url
}

func ping(url string) error {
	ctx, cancel := context.WithTimeout(context.Background(), connectTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	return conn.Ping(ctx)
}

// Schema returns the test database's URL and the name of a fresh schema,
// which does not exist yet and is dropped, with everything in it, when the
// test ends. It is for tests that open the store themselves, for example
// from a child process.
func Schema(t testing.TB) (url, schema string) {
	t.Helper()
	url = URL(t)
	schema = SchemaPrefix + storage.NewToken()[:16]
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := dropSchema(ctx, url, schema); err != nil {
			t.Errorf("pgtest: drop schema %s: %v", schema, err)
		}
	})
	return url, schema
}

func dropSchema(ctx context.Context, url, schema string) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	// The name is ours, made of the prefix and hex digits: safe unquoted.
	_, err = conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+schema+" CASCADE")
	return err
}

// NewStore opens a store with the given partition count (0: the default)
// in a fresh schema. The store is closed, and its schema dropped, when the
// test ends.
func NewStore(t testing.TB, partitions int) *postgres.Driver {
	t.Helper()
	url, schema := Schema(t)
	d, err := Open(context.Background(), url, schema, partitions)
	if err != nil {
		t.Fatalf("pgtest: open store: %v", err)
	}
	t.Cleanup(func() { _ = d.Close() })
	return d
}

// Open opens (creating if need be) the store in schema with the settings
// NewStore uses. The caller closes it.
func Open(ctx context.Context, url, schema string, partitions int) (*postgres.Driver, error) {
	d, err := postgres.Open(ctx, postgres.Config{
		URL:        url,
		Schema:     schema,
		Partitions: partitions,
		MaxConns:   maxConns,
	})
	if err != nil {
		return nil, fmt.Errorf("pgtest: %w", err)
	}
	return d, nil
}
