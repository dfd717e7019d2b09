package chaos

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Proxy forwards TCP connections from a loopback listener to a target and
// injects faults on the link: latency, a blackhole (connections accepted,
// bytes never forwarded), refusal (new connections reset at once), and
// resetting or cutting every open connection now.
type Proxy struct {
	ln     net.Listener
	target string

	latency   atomic.Int64 // nanoseconds added before each forwarded chunk
	blackhole atomic.Bool
	refuse    atomic.Bool

	accepted atomic.Int64
	cuts     atomic.Int64

	// pg makes the proxy read the PostgreSQL protocol from the client, so
	// that it can cut a link right after forwarding a COMMIT.
	pg         bool
	commitArms atomic.Int64 // COMMITs still to cut
	commitCuts atomic.Int64

	mu     sync.Mutex
	conns  map[*link]struct{}
	closed bool
	wg     sync.WaitGroup
}

// link is one proxied connection: the client's side and the target's (nil
// while blackholed before it was dialled).
type link struct {
	client, server net.Conn
	cut            bool // set by Reset or Cut, under Proxy.mu
}

// NewProxy listens on 127.0.0.1 (a free port) and forwards to target
// (host:port).
func NewProxy(target string) (*Proxy, error) { return newProxy(target, false) }

func newProxy(target string, pg bool) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("chaos: proxy listen: %w", err)
	}
	p := &Proxy{ln: ln, target: target, pg: pg, conns: map[*link]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// NewPGProxy is NewProxy for a PostgreSQL server: it can also cut a link
// at commit time (ArmCommitCuts).
func NewPGProxy(target string) (*Proxy, error) { return newProxy(target, true) }

// ArmCommitCuts makes the proxy cut the next n COMMITs it forwards, on any
// connection: right after a COMMIT (with, in a pipeline, its Sync) is
// forwarded, the client's side of the link is reset and the database's
// closed normally, so the database reads the COMMIT and carries it out
// while the client never learns whether it committed: an ambiguous commit.
func (p *Proxy) ArmCommitCuts(n int) { p.commitArms.Add(int64(n)) }

// CommitCuts is how many links were cut right after a COMMIT.
func (p *Proxy) CommitCuts() int64 { return p.commitCuts.Load() }

// Addr is the proxy's listening address, host:port.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// SetLatency delays every chunk of bytes forwarded, in either direction,
// by d (0: none).
func (p *Proxy) SetLatency(d time.Duration) { p.latency.Store(int64(d)) }

// SetBlackhole turns the blackhole on or off. While on, new connections are
// accepted and never forwarded, and bytes on open connections are dropped;
// nothing is closed, so the peers wait until their own timeouts.
func (p *Proxy) SetBlackhole(on bool) { p.blackhole.Store(on) }

// SetRefuse turns refusal on or off: while on, every new connection is
// reset as soon as it is accepted.
func (p *Proxy) SetRefuse(on bool) { p.refuse.Store(on) }

// Accepted is the number of connections accepted so far.
func (p *Proxy) Accepted() int64 { return p.accepted.Load() }

// Cuts is the number of connections closed by Reset or Cut so far.
func (p *Proxy) Cuts() int64 { return p.cuts.Load() }

// Open is the number of connections open now.
func (p *Proxy) Open() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// Reset closes every open connection with a TCP reset on both sides.
func (p *Proxy) Reset() int { return p.closeAll(true) }

// Cut closes every open connection now, with an orderly close on both
// sides.
func (p *Proxy) Cut() int { return p.closeAll(false) }

func (p *Proxy) closeAll(reset bool) int {
	p.mu.Lock()
	links := make([]*link, 0, len(p.conns))
	for l := range p.conns {
		if !l.cut {
			l.cut = true
			links = append(links, &link{client: l.client, server: l.server})
		}
	}
	p.mu.Unlock()
	for _, l := range links {
		l.close(reset)
	}
	p.cuts.Add(int64(len(links)))
	return len(links)
}

// Close stops listening and closes every connection.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	err := p.ln.Close()
	p.closeAll(false)
	p.wg.Wait()
	if err != nil {
		return fmt.Errorf("chaos: proxy close: %w", err)
	}
	return nil
}

func (l *link) close(reset bool) {
	for _, c := range []net.Conn{l.client, l.server} {
		if c == nil {
			continue
		}
		if tc, ok := c.(*net.TCPConn); ok && reset {
			_ = tc.SetLinger(0)
		}
		_ = c.Close()
	}
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		p.accepted.Add(1)
		if p.refuse.Load() {
			(&link{client: c}).close(true)
			continue
		}
		l := &link{client: c}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			_ = c.Close()
			return
		}
		p.conns[l] = struct{}{}
		p.mu.Unlock()
		p.wg.Add(1)
		go p.serve(l)
	}
}

// serve forwards one connection until either side closes it.
func (p *Proxy) serve(l *link) {
	defer p.wg.Done()
	defer func() {
		p.mu.Lock()
		delete(p.conns, l)
		p.mu.Unlock()
		l.close(false)
	}()
	if p.blackhole.Load() {
		// Accepted, never forwarded: read and drop until the client gives
		// up or the connection is cut.
		_, _ = io.Copy(io.Discard, l.client)
		return
	}
	s, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		(&link{client: l.client}).close(true)
		return
	}
	p.mu.Lock()
	if l.cut {
		// Cut while dialling.
		p.mu.Unlock()
		_ = s.Close()
		return
	}
	l.server = s
	p.mu.Unlock()
	done := make(chan struct{}, 2)
	go func() {
		if p.pg {
			p.pipePG(l)
		} else {
			p.pipe(l.server, l.client)
		}
		done <- struct{}{}
	}()
	go func() { p.pipe(l.client, l.server); done <- struct{}{} }()
	<-done
	l.close(false)
	<-done
}

// pipe copies src to dst chunk by chunk, applying the latency and the
// blackhole as they are at each chunk.
func (p *Proxy) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if d := time.Duration(p.latency.Load()); d > 0 {
				time.Sleep(d) // the injected latency
			}
			if !p.blackhole.Load() {
				if _, werr := dst.Write(buf[:n]); werr != nil {
					return
				}
			}
		}
		if err != nil {
			return
		}
	}
}

// pipePG copies the client's PostgreSQL messages to the server one by one
// (applying the latency and the blackhole as pipe does), and cuts the
// client's side right after a COMMIT when a commit cut is armed.
func (p *Proxy) pipePG(l *link) {
	r := bufio.NewReaderSize(l.client, 32<<10)
	forward := func(msg []byte) bool {
		if d := time.Duration(p.latency.Load()); d > 0 {
			time.Sleep(d) // the injected latency
		}
		if p.blackhole.Load() {
			return true
		}
		_, err := l.server.Write(msg)
		return err == nil
	}
	// Untyped messages first: SSL or GSS encryption requests, then the
	// startup message.
	for {
		var head [4]byte
		if _, err := io.ReadFull(r, head[:]); err != nil {
			return
		}
		n := int(binary.BigEndian.Uint32(head[:]))
		if n < 8 || n > 1<<20 {
			return
		}
		msg := make([]byte, n)
		copy(msg, head[:])
		if _, err := io.ReadFull(r, msg[4:]); err != nil {
			return
		}
		if !forward(msg) {
			return
		}
		code := binary.BigEndian.Uint32(msg[4:8])
		if code != 80877103 && code != 80877104 { // SSLRequest, GSSENCRequest
			break
		}
	}
	stmts := map[string]bool{} // prepared statement name → it is COMMIT
	pendingCommit := false
	for {
		var head [5]byte
		if _, err := io.ReadFull(r, head[:]); err != nil {
			return
		}
		n := int(binary.BigEndian.Uint32(head[1:]))
		if n < 4 || n > 1<<30 {
			return
		}
		msg := make([]byte, 1+n)
		copy(msg, head[:])
		if _, err := io.ReadFull(r, msg[5:]); err != nil {
			return
		}
		if !forward(msg) {
			return
		}
		// A COMMIT comes as a simple query, or — in a pipeline — as the
		// execution of a statement parsed as COMMIT (perhaps long before,
		// when it was first prepared), carried out when the Sync arrives.
		commit := false
		switch head[0] {
		case 'Q':
			commit = isCommit(msg[5:])
		case 'P': // Parse: name, query, ...
			name, rest, _ := strings.Cut(string(msg[5:]), "\x00")
			stmts[name] = isCommit([]byte(rest))
		case 'B': // Bind: portal, statement, ...
			parts := strings.SplitN(string(msg[5:]), "\x00", 3)
			if len(parts) >= 2 && stmts[parts[1]] {
				pendingCommit = true
			}
		case 'S': // Sync
			commit, pendingCommit = pendingCommit, false
		}
		if commit {
			if p.commitArms.Add(-1) >= 0 {
				p.commitCuts.Add(1)
				if tc, ok := l.client.(*net.TCPConn); ok {
					_ = tc.SetLinger(0)
				}
				_ = l.client.Close() // the server's answer has nowhere to go
				return
			}
			p.commitArms.Add(1) // none was armed
		}
	}
}

// isCommit reports whether a query text (NUL-terminated, perhaps with more
// after it) is COMMIT.
func isCommit(b []byte) bool {
	q, _, _ := strings.Cut(string(b), "\x00")
	q = strings.TrimSuffix(strings.TrimSpace(q), ";")
	return strings.EqualFold(strings.TrimSpace(q), "commit")
}
