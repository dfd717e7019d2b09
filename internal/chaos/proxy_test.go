package chaos

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// echoServer answers every line with the same line.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

func newTestProxy(t *testing.T) *Proxy {
	t.Helper()
	p, err := NewProxy(echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// roundTrip writes a line and reads the echo, within d.
func roundTrip(c net.Conn, d time.Duration) (string, error) {
	_ = c.SetDeadline(time.Now().Add(d))
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return "", err
	}
	return bufio.NewReader(c).ReadString('\n')
}

func dial(t *testing.T, p *Proxy) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestProxyForwards(t *testing.T) {
	p := newTestProxy(t)
	c := dial(t, p)
	got, err := roundTrip(c, 5*time.Second)
	if err != nil || got != "ping\n" {
		t.Fatalf("round trip: %q, %v", got, err)
	}
	if p.Accepted() != 1 || p.Open() != 1 {
		t.Fatalf("accepted %d, open %d; want 1, 1", p.Accepted(), p.Open())
	}
}

func TestProxyLatency(t *testing.T) {
	p := newTestProxy(t)
	p.SetLatency(150 * time.Millisecond)
	c := dial(t, p)
	start := time.Now()
	if _, err := roundTrip(c, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	// One chunk each way: at least twice the latency.
	if took := time.Since(start); took < 300*time.Millisecond {
		t.Fatalf("round trip took %v with 150ms each way", took)
	}
	p.SetLatency(0)
	start = time.Now()
	if _, err := roundTrip(c, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took >= 300*time.Millisecond {
		t.Fatalf("round trip took %v after the latency was removed", took)
	}
}

func TestProxyBlackhole(t *testing.T) {
	p := newTestProxy(t)
	open := dial(t, p)
	if _, err := roundTrip(open, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	p.SetBlackhole(true)
	// A new connection is accepted but nothing comes back.
	c := dial(t, p)
	if got, err := roundTrip(c, 300*time.Millisecond); !isTimeout(err) {
		t.Fatalf("blackholed new connection: %q, %v; want a timeout", got, err)
	}
	// An open one goes silent too.
	if got, err := roundTrip(open, 300*time.Millisecond); !isTimeout(err) {
		t.Fatalf("blackholed open connection: %q, %v; want a timeout", got, err)
	}
	p.SetBlackhole(false)
	fresh := dial(t, p)
	if got, err := roundTrip(fresh, 5*time.Second); err != nil || got != "ping\n" {
		t.Fatalf("after the blackhole: %q, %v", got, err)
	}
}

func TestProxyRefuse(t *testing.T) {
	p := newTestProxy(t)
	p.SetRefuse(true)
	// The reset may reach the dialler before or after its connect returns.
	if c, err := net.Dial("tcp", p.Addr()); err == nil {
		defer c.Close()
		if _, err := roundTrip(c, 5*time.Second); err == nil || isTimeout(err) {
			t.Fatalf("refused connection: %v; want a reset or EOF", err)
		}
	}
	if p.Accepted() != 1 || p.Open() != 0 {
		t.Fatalf("accepted %d, open %d; want 1, 0", p.Accepted(), p.Open())
	}
	p.SetRefuse(false)
	if _, err := roundTrip(dial(t, p), 5*time.Second); err != nil {
		t.Fatalf("after refusal: %v", err)
	}
}

func TestProxyResetAndCut(t *testing.T) {
	for _, tc := range []struct {
		name string
		do   func(*Proxy) int
		want func(error) bool
	}{
		{"reset", (*Proxy).Reset, func(err error) bool { return errors.Is(err, syscall.ECONNRESET) }},
		{"cut", (*Proxy).Cut, func(err error) bool { return errors.Is(err, io.EOF) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newTestProxy(t)
			a, b := dial(t, p), dial(t, p)
			for _, c := range []net.Conn{a, b} {
				if _, err := roundTrip(c, 5*time.Second); err != nil {
					t.Fatal(err)
				}
			}
			if n := tc.do(p); n != 2 {
				t.Fatalf("closed %d connections, want 2", n)
			}
			_ = a.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, err := a.Read(make([]byte, 1))
			if !tc.want(err) {
				t.Fatalf("read after %s: %v", tc.name, err)
			}
			if p.Cuts() != 2 {
				t.Fatalf("cuts %d, want 2", p.Cuts())
			}
			// The proxy goes on serving new connections.
			if _, err := roundTrip(dial(t, p), 5*time.Second); err != nil {
				t.Fatalf("after %s: %v", tc.name, err)
			}
		})
	}
}

func isTimeout(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }
