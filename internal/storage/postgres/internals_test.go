package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/accord-saga/accord/internal/storage/postgres"
	"github.com/accord-saga/accord/internal/storage/postgres/pgtest"
)

func TestMigrationsAreNumberedFromOne(t *testing.T) {
	t.Parallel()
	vs := postgres.MigrationVersions()
	for i, v := range vs {
		if v != i+1 {
			t.Fatalf("migration versions %v: want 1, 2, 3… without gaps", vs)
		}
	}
	if postgres.SchemaVersion != len(vs) {
		t.Fatalf("SchemaVersion %d, want the last migration's %d", postgres.SchemaVersion, len(vs))
	}
}

func TestSessionSettings(t *testing.T) {
	t.Parallel()
	d := pgtest.NewStore(t, 1)
	for name, want := range map[string]string{
		"synchronous_commit": "on",
		"search_path":        d.Schema(),
	} {
		got, err := postgres.SessionSetting(t.Context(), d, name)
		if err != nil || got != want {
			t.Errorf("%s = %q, %v; want %q", name, got, err, want)
		}
	}
}

// silentServer accepts connections and never answers, like a database
// host whose server hangs.
func silentServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	})
	t.Cleanup(func() {
		_ = ln.Close()
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	return ln.Addr().String()
}

func TestOpenHonorsContext(t *testing.T) {
	t.Parallel()
	addr := silentServer(t)
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := postgres.Open(ctx, postgres.Config{URL: "postgres://postgres@" + addr + "/test?sslmode=disable", ConnectTimeout: time.Minute})
	if err == nil || !strings.Contains(err.Error(), addr) {
		t.Fatalf("Open = %v, want an error naming %s", err, addr)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("Open took %v despite a 300ms context", took)
	}
}

func TestOpenConnectTimeout(t *testing.T) {
	t.Parallel()
	addr := silentServer(t)
	start := time.Now()
	_, err := postgres.Open(context.Background(), postgres.Config{URL: "postgres://postgres@" + addr + "/test?sslmode=disable", ConnectTimeout: 300 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), addr) {
		t.Fatalf("Open = %v, want an error naming %s", err, addr)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("Open took %v despite a 300ms connect timeout", took)
	}
}

// openStore opens a store of at most maxConns connections in a fresh
// schema; it is closed when the test ends.
func openStore(t *testing.T, maxConns int32) *postgres.Driver {
	t.Helper()
	url, schema := pgtest.Schema(t)
	d, err := postgres.Open(t.Context(), postgres.Config{URL: url, Schema: schema, Partitions: 1, MaxConns: maxConns})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	return d
}

func acquire(t *testing.T, d *postgres.Driver) *pgxpool.Conn {
	t.Helper()
	c, err := postgres.AcquireConn(t.Context(), d)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func backendPID(t *testing.T, c *pgxpool.Conn) int32 {
	t.Helper()
	var pid int32
	if err := c.QueryRow(t.Context(), `SELECT pg_backend_pid()`).Scan(&pid); err != nil {
		t.Fatal(err)
	}
	return pid
}

// eventually fails the test unless cond holds within a minute (a last
// guard: a busy machine slows everything).
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
	}
}

// waitBackendGone waits until the server backend pid has ended, that is,
// until the store closed its connection. It asks the server, not the
// connection, which the pool may be closing at the same time.
func waitBackendGone(t *testing.T, pid int32) {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	eventually(t, fmt.Sprintf("backend %d has ended", pid), func() bool {
		var n int
		if err := conn.QueryRow(t.Context(), `SELECT count(*) FROM pg_stat_activity WHERE pid = $1`, pid).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n == 0
	})
}

func TestSessionSettingsOnEveryConnection(t *testing.T) {
	t.Parallel()
	const n = 3
	d := openStore(t, n)
	pids := map[int32]bool{}
	for range n {
		c := acquire(t, d)
		defer c.Release()
		pids[backendPID(t, c)] = true
		var searchPath, syncCommit string
		err := c.QueryRow(t.Context(), `SELECT current_setting('search_path'), current_setting('synchronous_commit')`).
			Scan(&searchPath, &syncCommit)
		if err != nil {
			t.Fatal(err)
		}
		if searchPath != d.Schema() || syncCommit != "on" {
			t.Errorf("backend %d: search_path %q, synchronous_commit %q; want %q, on", backendPID(t, c), searchPath, syncCommit, d.Schema())
		}
	}
	if len(pids) != n {
		t.Fatalf("%d connections held at once share %d backends", n, len(pids))
	}
}

func TestMaxConnsBoundsConnections(t *testing.T) {
	t.Parallel()
	d := openStore(t, 2)
	a := acquire(t, d)
	defer a.Release()
	b := acquire(t, d)
	defer b.Release()
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	if c, err := postgres.AcquireConn(ctx, d); !errors.Is(err, context.DeadlineExceeded) {
		if err == nil {
			c.Release()
		}
		t.Fatalf("third connection of a store of 2 = %v, want the context's deadline", err)
	}
	ctx2, cancel2 := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel2()
	if _, err := d.Now(ctx2); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Now with every connection in use = %v, want the context's deadline", err)
	}
	a.Release()
	if _, err := d.Now(t.Context()); err != nil {
		t.Fatalf("Now once a connection came back: %v", err)
	}
}

func TestConnectionInTransactionIsDiscarded(t *testing.T) {
	t.Parallel()
	d := openStore(t, 1)
	a := acquire(t, d)
	pidA := backendPID(t, a)
	if _, err := a.Exec(t.Context(), "BEGIN"); err != nil {
		a.Release()
		t.Fatal(err)
	}
	a.Release()
	b := acquire(t, d)
	defer b.Release()
	if pid := backendPID(t, b); pid == pidA {
		t.Fatal("a connection released inside a transaction was reused")
	}
	waitBackendGone(t, pidA)
}

func TestCloseWhileInUse(t *testing.T) {
	t.Parallel()
	d := openStore(t, 2)
	loaned := acquire(t, d)
	defer loaned.Release() // a second Release is harmless
	loanedPID := backendPID(t, loaned)
	idle := acquire(t, d)
	idlePID := backendPID(t, idle)
	idle.Release()

	closed := make(chan error, 1)
	go func() { closed <- d.Close() }()
	eventually(t, "calls fail once Close has begun", func() bool {
		_, err := d.Now(t.Context())
		return err != nil
	})
	waitBackendGone(t, idlePID)
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) with a connection in use", err)
	case <-time.After(100 * time.Millisecond):
	}
	// Work in flight on a loaned connection finishes.
	if _, err := loaned.Exec(t.Context(), "SELECT 1"); err != nil {
		t.Fatalf("statement on a loaned connection during Close: %v", err)
	}
	loaned.Release()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return once the connection came back")
	}
	waitBackendGone(t, loanedPID)
	if err := d.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}
