package postgres_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

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

func testPool(t *testing.T, maxConns int32) *postgres.TestPool {
	t.Helper()
	cfg, err := pgx.ParseConfig(pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	p := postgres.NewTestPool(cfg, maxConns)
	t.Cleanup(p.Close)
	return p
}

func backendPID(t *testing.T, c *postgres.TestConn) int32 {
	t.Helper()
	var pid int32
	if err := c.Conn().QueryRow(t.Context(), `SELECT pg_backend_pid()`).Scan(&pid); err != nil {
		t.Fatal(err)
	}
	return pid
}

func TestPoolBoundsConnections(t *testing.T) {
	t.Parallel()
	p := testPool(t, 2)
	a, err := p.Acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	b, err := p.Acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	if _, err := p.Acquire(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("third Acquire of a pool of 2 = %v, want the context's deadline", err)
	}
	pidA := backendPID(t, a)
	a.Release()
	a.Release() // twice is harmless, and must not free a second slot
	c, err := p.Acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if pid := backendPID(t, c); pid != pidA {
		t.Fatalf("released connection not reused: backend %d, want %d", pid, pidA)
	}
	ctx2, cancel2 := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel2()
	if _, err := p.Acquire(ctx2); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Acquire with both slots out = %v, want the context's deadline", err)
	}
	b.Release()
	c.Release()
}

func TestPoolDiscardsConnectionInTransaction(t *testing.T) {
	t.Parallel()
	p := testPool(t, 1)
	a, err := p.Acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	pidA := backendPID(t, a)
	if _, err := a.Conn().Exec(t.Context(), "BEGIN"); err != nil {
		t.Fatal(err)
	}
	conn := a.Conn()
	a.Release()
	if !conn.IsClosed() {
		t.Fatal("a connection released inside a transaction was kept open")
	}
	b, err := p.Acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Release()
	if pid := backendPID(t, b); pid == pidA {
		t.Fatal("a connection released inside a transaction was reused")
	}
}

func TestPoolClose(t *testing.T) {
	t.Parallel()
	p := testPool(t, 2)
	idle, err := p.Acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	idleConn := idle.Conn()
	idle.Release()
	loaned, err := p.Acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	loanedConn := loaned.Conn()
	p.Close()
	p.Close()
	if _, err := p.Acquire(t.Context()); !postgres.IsPoolClosed(err) {
		t.Fatalf("Acquire after Close = %v, want the closed-store error", err)
	}
	loaned.Release()
	for _, c := range []*pgx.Conn{idleConn, loanedConn} {
		if !c.IsClosed() {
			t.Fatal("a connection survived Close")
		}
	}
}
