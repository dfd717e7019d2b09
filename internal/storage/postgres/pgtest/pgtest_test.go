package pgtest_test

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/accord-saga/accord/internal/storage/postgres/pgtest"
)

// recorder stands in for a test so that Fatalf and Skipf can be observed;
// like the real ones they end the calling goroutine.
type recorder struct {
	testing.TB
	fatal, skip string
}

func (r *recorder) Helper() {}

func (r *recorder) Fatalf(format string, args ...any) {
	r.fatal = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func (r *recorder) Skipf(format string, args ...any) {
	r.skip = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func runURL(t *testing.T) *recorder {
	r := &recorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		pgtest.URL(r)
	}()
	<-done
	return r
}

func TestUnreachableSkipsOutsideCI(t *testing.T) {
	t.Setenv(pgtest.EnvURL, "postgres://postgres@127.0.0.1:1/test?sslmode=disable")
	t.Setenv("CI", "")
	r := runURL(t)
	if r.fatal != "" || !strings.Contains(r.skip, pgtest.EnvURL) {
		t.Fatalf("skip %q, fatal %q; want a skip that says how to run the test", r.skip, r.fatal)
	}
}

func TestUnreachableFailsInCI(t *testing.T) {
	t.Setenv(pgtest.EnvURL, "postgres://postgres@127.0.0.1:1/test?sslmode=disable&application_name=ci")
	t.Setenv("CI", "true")
	r := runURL(t)
	if r.skip != "" || !strings.Contains(r.fatal, "127.0.0.1") {
		t.Fatalf("skip %q, fatal %q; want a failure naming the reason", r.skip, r.fatal)
	}
}

func TestNewStoreIsFreshAndDropped(t *testing.T) {
	var schema string
	t.Run("store", func(t *testing.T) {
		d := pgtest.NewStore(t, 3)
		schema = d.Schema()
		if !strings.HasPrefix(schema, pgtest.SchemaPrefix) || d.Info().Partitions != 3 {
			t.Fatalf("store in %s with %+v, want a fresh schema and 3 partitions", schema, d.Info())
		}
		if h, err := d.PartitionHead(t.Context(), 2); err != nil || h != 0 {
			t.Fatalf("PartitionHead = %d, %v; want an empty store", h, err)
		}
	})
	d := pgtest.NewStore(t, 1)
	if d.Schema() == schema {
		t.Fatal("two stores share a schema")
	}
	conn, err := pgx.Connect(t.Context(), pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var exists bool
	if err := conn.QueryRow(t.Context(), `SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)`, schema).Scan(&exists); err != nil || exists {
		t.Fatalf("schema %s exists = %v, %v after its test ended; want it dropped", schema, exists, err)
	}
}
