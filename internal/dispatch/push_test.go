package dispatch

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/accord-saga/accord/internal/engine"
)

// TestGoroutinesStayBounded runs alone (not parallel) so that the
// goroutine count belongs to it.
func TestGoroutinesStayBounded(t *testing.T) {
	const (
		tasks   = 1000
		workers = 16
		slots   = 16
	)
	baseline := runtime.NumGoroutine()
	var peak atomic.Int64
	s, _ := server(t, func(w http.ResponseWriter, r *http.Request) {
		n := int64(runtime.NumGoroutine())
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		writeJSON(w, 200, `{"ok":true}`)
	})
	b := setup(t, func(c *Config) {
		c.Workers = workers
		c.QueueSize = tasks
		c.Bulkhead = BulkheadConfig{MaxConcurrent: slots, MaxWait: waitTimeout}
	})
	for i := range tasks {
		task := newTask(fmt.Sprintf("g%d", i), s.URL)
		task.AttemptTimeoutMS = 0 // the default 30s: a busy machine is slow
		b.push.Dispatch(task)
	}
	for i := range tasks {
		if r := b.done.wait(t, fmt.Sprintf("g%d", i)); r.Outcome != OutcomeSuccess {
			t.Fatalf("task %d: %q %q %s", i, r.Outcome, r.ErrorCode, r.ErrorMessage)
		}
	}
	// Workers, the pool's waiter, and per connection (at most slots busy
	// plus slots idle) two client and two server goroutines, plus slack
	// for the test server and the runtime.
	limit := int64(baseline + workers + 1 + 4*2*slots + 32)
	if p := peak.Load(); p > limit {
		t.Errorf("peak goroutines %d over the bound %d (baseline %d)", p, limit, baseline)
	}
	t.Logf("baseline %d, peak %d, bound %d, for %d tasks", baseline, peak.Load(), limit, tasks)
	if st := b.push.Stats(); st.Dispatched != tasks || st.Dropped != 0 || st.Success != tasks {
		t.Errorf("stats %+v", st)
	}
}

func TestQueueFullDrops(t *testing.T) {
	t.Parallel()
	done := newCompleter()
	p, err := New(Config{Complete: done.Complete, Allow: []string{"*"}, QueueSize: 10, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 15 {
		p.Dispatch(newTask(fmt.Sprint(i), "http://127.0.0.1:1/"))
	}
	st := p.Stats()
	if st.Dispatched != 10 || st.Dropped != 5 || st.Queued != 10 || st.QueueCap != 10 {
		t.Errorf("stats %+v", st)
	}
	if err := p.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st := p.Stats(); st.Abandoned != 10 || st.Queued != 0 {
		t.Errorf("after stop: %+v", st)
	}
	if done.count() != 0 {
		t.Errorf("%d results for tasks never called", done.count())
	}
	if err := p.Start(context.Background()); !errors.Is(err, ErrStopped) {
		t.Errorf("Start after Stop: %v", err)
	}
}

func TestLifecycle(t *testing.T) {
	t.Parallel()
	s, hits := server(t, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) })
	b := setup(t, nil)
	if err := b.push.Start(context.Background()); !errors.Is(err, ErrAlreadyStarted) {
		t.Errorf("second Start: %v", err)
	}
	if err := b.push.Stop(context.Background()); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := b.push.Stop(context.Background()); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	b.push.Dispatch(newTask("late", s.URL))
	if st := b.push.Stats(); st.Dropped != 1 || st.Dispatched != 0 {
		t.Errorf("dispatch after stop: %+v", st)
	}
	if hits.Load() != 0 || b.done.count() != 0 {
		t.Errorf("a stopped dispatcher called out")
	}
}

func TestStopWaitsForInFlightCalls(t *testing.T) {
	t.Parallel()
	entered := make(chan struct{})
	release := make(chan struct{})
	s, _ := server(t, func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		select {
		case <-release:
			writeJSON(w, 200, `{"late":true}`)
		case <-r.Context().Done():
		}
	})
	b := setup(t, nil)
	b.push.Dispatch(newTask("s1", s.URL))
	<-entered
	stopped := make(chan error, 1)
	go func() { stopped <- b.push.Stop(context.Background()) }()
	eventually(t, "intake stopped", func() bool {
		select {
		case <-b.push.quit:
			return true
		default:
			return false
		}
	})
	select {
	case err := <-stopped:
		t.Fatalf("Stop returned (%v) while a call was in flight", err)
	default:
	}
	close(release)
	if err := <-stopped; err != nil {
		t.Fatalf("Stop: %v", err)
	}
	r, ok := b.done.get("s1")
	if !ok || r.Outcome != OutcomeSuccess || string(r.Output) != `{"late":true}` {
		t.Fatalf("in-flight call's result: %+v (%v)", r, ok)
	}
}

func TestStopCutsOffAtItsDeadline(t *testing.T) {
	t.Parallel()
	entered := make(chan struct{})
	s, _ := server(t, func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-r.Context().Done()
	})
	b := setup(t, nil)
	b.push.Dispatch(newTask("h1", s.URL))
	<-entered
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err := b.push.Stop(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Stop: %v, want deadline exceeded", err)
	}
	if b.done.count() != 0 {
		t.Errorf("a cut-off call reported a result")
	}
	if st := b.push.Stats(); st.Abandoned != 1 || st.InFlight != 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestCancelStartContextAbandons(t *testing.T) {
	t.Parallel()
	entered := make(chan struct{})
	s, _ := server(t, func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-r.Context().Done()
	})
	done := newCompleter()
	p, err := New(Config{Complete: done.Complete, Allow: []string{"127.0.0.1"}, Workers: 2, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	p.Dispatch(newTask("c1", s.URL))
	<-entered
	cancel()
	if err := p.Stop(context.Background()); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if done.count() != 0 || p.Stats().Abandoned != 1 {
		t.Errorf("results %d, stats %+v", done.count(), p.Stats())
	}
}

func TestTimeoutAndConnectionErrors(t *testing.T) {
	t.Parallel()
	s, _ := server(t, func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + ln.Addr().String() + "/"
	ln.Close()
	b := setup(t, nil)
	slow := newTask("slow", s.URL)
	slow.AttemptTimeoutMS = 200
	b.push.Dispatch(slow)
	b.push.Dispatch(newTask("refused", closed))
	if r := b.done.wait(t, "refused"); r.Outcome != OutcomeRetryable || r.ErrorCode != CodeConnectionError {
		t.Errorf("refused: %q %q %s", r.Outcome, r.ErrorCode, r.ErrorMessage)
	}
	// A timeout is an unknown outcome: no result; the engine's attempt
	// timeout records it.
	eventually(t, "the timeout counted as unknown", func() bool { return b.push.Stats().Unknown == 1 })
	if r, ok := b.done.get("slow"); ok {
		t.Errorf("slow: a timeout reported a result: %+v", r)
	}
	st, _ := breakerOf(b.push, endpointOf(s))
	if st.Failures != 1 {
		t.Errorf("a timeout must count against the breaker: %+v", st)
	}
}

// rawServer answers each connection with a scripted byte string chosen by
// the request path, then closes it. Its goroutines end at cleanup.
func rawServer(t *testing.T, replies map[string]string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer conn.Close()
				_ = conn.SetDeadline(time.Now().Add(waitTimeout))
				req, err := http.ReadRequest(bufio.NewReader(conn))
				if err != nil {
					return
				}
				_, _ = io.Copy(io.Discard, req.Body)
				_, _ = io.WriteString(conn, replies[req.URL.Path])
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return "http://" + ln.Addr().String()
}

func TestMalformedResponses(t *testing.T) {
	t.Parallel()
	replies := map[string]string{
		"/short":       "HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{\"a\":",
		"/garbage":     "SPDY/9 hello\r\n\r\n",
		"/silence":     "",
		"/status999":   "HTTP/1.1 999 Odd\r\nContent-Length: 2\r\n\r\n{}",
		"/status099":   "HTTP/1.1 099 Low\r\nContent-Length: 0\r\n\r\n",
		"/badchunk":    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
		"/hugeheader":  "HTTP/1.1 200 OK\r\nX-Big: " + strings.Repeat("a", 100<<10) + "\r\nContent-Length: 0\r\n\r\n",
		"/binary":      "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n\x00\xff\xfe\x01",
		"/409garbage":  "HTTP/1.1 409 Conflict\r\nContent-Length: 4\r\n\r\n\x00\xff{[",
		"/problemjunk": "HTTP/1.1 422 X\r\nContent-Type: application/problem+json\r\nContent-Length: 36\r\n\r\n{\"code\":[1],\"title\":{},\"detail\":null}",
		"/202junk":     "HTTP/1.1 202 Accepted\r\nRetry-After: soon\r\nContent-Length: 0\r\n\r\n",
	}
	want := map[string][2]string{
		"/short":       {OutcomeRetryable, CodeConnectionError},
		"/garbage":     {OutcomeRetryable, CodeConnectionError},
		"/silence":     {OutcomeRetryable, CodeConnectionError},
		"/status999":   {OutcomeRetryable, CodeInvalidResponse},
		"/status099":   {OutcomeRetryable, CodeInvalidResponse},
		"/badchunk":    {OutcomeRetryable, CodeConnectionError},
		"/hugeheader":  {OutcomeRetryable, CodeConnectionError},
		"/binary":      {OutcomeRetryable, CodeInvalidResponse},
		"/409garbage":  {OutcomeFailure, "http_409"},
		"/problemjunk": {OutcomeFailure, "http_422"},
	}
	base := rawServer(t, replies)
	observed := make(chan string, len(replies))
	b := setup(t, func(c *Config) {
		c.Observe = func(_, outcome string, _ time.Duration) { observed <- outcome }
	})
	for path := range replies {
		task := newTask(path, base+path)
		// Without an attempt timeout, an unknown outcome (a 2xx cut off or
		// not JSON) is reported: see TestUnknownOutcomeLeftToTimeout.
		task.AttemptTimeoutMS = 0
		if path == "/202junk" {
			task.AttemptTimeoutMS = 50 // shorter than the default poll: abandoned
		}
		b.push.Dispatch(task)
	}
	for path, w := range want {
		r := b.done.wait(t, path)
		if r.Outcome != w[0] || r.ErrorCode != w[1] {
			t.Errorf("%s: got %q %q (%s), want %q %q", path, r.Outcome, r.ErrorCode, r.ErrorMessage, w[0], w[1])
		}
		if !utf8Clean(r.ErrorMessage) {
			t.Errorf("%s: message not clean: %q", path, r.ErrorMessage)
		}
	}
	for range replies {
		<-observed
	}
	if _, ok := b.done.get("/202junk"); ok {
		t.Error("202 past the attempt timeout reported a result")
	}
}

func utf8Clean(s string) bool {
	for _, r := range s {
		if r == '\uFFFD' || r < 0x20 {
			return false
		}
	}
	return true
}

func TestCompleteErrorsAreCounted(t *testing.T) {
	t.Parallel()
	s, _ := server(t, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) })
	b := setup(t, nil)
	b.done.err = errors.New("engine: task not found")
	b.push.Dispatch(newTask("x1", s.URL))
	b.done.wait(t, "x1")
	eventually(t, "complete error counted", func() bool { return b.push.Stats().CompleteErrors == 1 })
}

func TestObserve(t *testing.T) {
	t.Parallel()
	s, _ := server(t, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(500) })
	type obs struct {
		endpoint, outcome string
		d                 time.Duration
	}
	got := make(chan obs, 1)
	b := setup(t, func(c *Config) {
		c.Observe = func(endpoint, outcome string, d time.Duration) { got <- obs{endpoint, outcome, d} }
	})
	b.push.Dispatch(newTask("o1", s.URL+"/path?q=1"))
	o := <-got
	if o.endpoint != endpointOf(s) || o.outcome != OutcomeRetryable || o.d <= 0 {
		t.Errorf("observed %+v", o)
	}
}

func TestConfig(t *testing.T) {
	t.Parallel()
	ok := func(context.Context, engine.Result) error { return nil }
	bad := []Config{
		{},
		{Complete: ok, Workers: -1},
		{Complete: ok, QueueSize: -5},
		{Complete: ok, DefaultAttemptTimeout: -time.Second},
		{Complete: ok, MaxResponseBytes: MaxResponseBytesLimit + 1},
		{Complete: ok, Breaker: BreakerConfig{FailureRatio: 1.5}},
		{Complete: ok, Bulkhead: BulkheadConfig{MaxConcurrent: -1}},
		{Complete: ok, Bulkhead: BulkheadConfig{MaxWait: -time.Second}},
		{Complete: ok, Allow: []string{"http://x/path"}},
	}
	for i, c := range bad {
		c.Logger = slog.New(slog.DiscardHandler)
		if _, err := New(c); err == nil {
			t.Errorf("config %d accepted: %+v", i, c)
		} else if !strings.HasPrefix(err.Error(), "dispatch: ") {
			t.Errorf("config %d: error %q lacks the package prefix", i, err)
		}
	}
	p, err := New(Config{Complete: ok, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if p.cfg.Workers != DefaultWorkers || p.cfg.Bulkhead.MaxConcurrent != DefaultBulkheadMaxConcurrent ||
		p.cfg.Breaker.ConsecutiveFailures != DefaultConsecutiveFailures || p.transport.MaxIdleConnsPerHost < DefaultBulkheadMaxConcurrent {
		t.Errorf("defaults not filled: %+v", p.cfg)
	}
	if err := p.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestAttemptTimeout(t *testing.T) {
	t.Parallel()
	p := &Push{cfg: Config{DefaultAttemptTimeout: 30 * time.Second, MaxAttemptTimeout: time.Minute}}
	for ms, want := range map[int64]time.Duration{
		0: 30 * time.Second, -5: 30 * time.Second, 1500: 1500 * time.Millisecond,
		60_000: time.Minute, 1 << 62: time.Minute,
	} {
		var task engine.Task
		task.AttemptTimeoutMS = ms
		if got := p.attemptTimeout(&task); got != want {
			t.Errorf("attempt timeout for %d ms: %s, want %s", ms, got, want)
		}
	}
}

func TestStopDoesNotWaitForPolls(t *testing.T) {
	t.Parallel()
	polled := make(chan struct{}, 1)
	s, hits := server(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "30")
		w.WriteHeader(http.StatusAccepted)
		polled <- struct{}{}
	})
	b := setup(t, func(c *Config) { c.MaxRetryAfter = time.Minute })
	task := newTask("p1", s.URL)
	task.AttemptTimeoutMS = 120_000
	b.push.Dispatch(task)
	<-polled
	// Between two polls nothing is in flight: Stop returns at once rather
	// than after Retry-After, well inside this deadline.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.push.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if b.done.count() != 0 || hits.Load() != 1 {
		t.Errorf("results %d, hits %d", b.done.count(), hits.Load())
	}
	if st := b.push.Stats(); st.Abandoned != 1 {
		t.Errorf("stats %+v", st)
	}
}

func TestTLS(t *testing.T) {
	t.Parallel()
	s := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		writeJSON(w, 200, `{"proto":"`+r.Proto+`"}`)
	}))
	t.Cleanup(s.Close)
	t.Run("untrusted certificate", func(t *testing.T) {
		b := setup(t, nil)
		task := newTask("u1", s.URL)
		task.AttemptTimeoutMS = 0 // the default 30s: a busy machine is slow
		b.push.Dispatch(task)
		if r := b.done.wait(t, "u1"); r.Outcome != OutcomeRetryable || r.ErrorCode != CodeTLSError {
			t.Fatalf("got %q %q %s", r.Outcome, r.ErrorCode, r.ErrorMessage)
		}
	})
	t.Run("trusted", func(t *testing.T) {
		roots := x509.NewCertPool()
		roots.AddCert(s.Certificate())
		b := setup(t, func(c *Config) { c.TLS = &tls.Config{RootCAs: roots} })
		b.push.Dispatch(newTask("t1", s.URL))
		if r := b.done.wait(t, "t1"); r.Outcome != OutcomeSuccess {
			t.Fatalf("got %q %q %s", r.Outcome, r.ErrorCode, r.ErrorMessage)
		}
	})
}

func TestTaskExpiredInQueueIsNotCalled(t *testing.T) {
	t.Parallel()
	s, hits := server(t, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) })
	observed := make(chan string, 2)
	done := newCompleter()
	p, err := New(Config{
		Complete: done.Complete, Allow: []string{"127.0.0.1"}, Workers: 1, Logger: slog.New(slog.DiscardHandler),
		Observe: func(_, outcome string, _ time.Duration) { observed <- outcome },
	})
	if err != nil {
		t.Fatal(err)
	}
	old := newTask("old", s.URL)
	old.AttemptTimeoutMS = 1000
	// Dispatched a minute ago: its attempt timed out while it waited.
	p.queue <- queued{task: old, at: time.Now().Add(-time.Minute)}
	p.Dispatch(newTask("fresh", s.URL))
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := p.Stop(context.Background()); err != nil {
			t.Error(err)
		}
	}()
	if o := <-observed; o != OutcomeAbandoned {
		t.Fatalf("old task observed %q", o)
	}
	if r := done.wait(t, "fresh"); r.Outcome != OutcomeSuccess {
		t.Fatalf("fresh: %+v", r)
	}
	if _, ok := done.get("old"); ok || hits.Load() != 1 {
		t.Errorf("expired task was called or reported (hits %d)", hits.Load())
	}
	if st := p.Stats(); st.Expired != 1 || st.Abandoned != 1 {
		t.Errorf("stats %+v", st)
	}
}

// TestUnknownOutcomeLeftToTimeout: a 2xx whose body is not JSON, over the
// cap or cut off leaves the participant's effect unknown. With an attempt
// timeout no result is reported (the engine records the timeout, outcome
// unknown, and compensates the step on a rollback); a failure would leave
// a step that may have acted uncompensated.
func TestUnknownOutcomeLeftToTimeout(t *testing.T) {
	t.Parallel()
	replies := map[string]string{
		"/notjson": "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n<html>ok<",
		"/big":     "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + strings.Repeat("x", 100),
		"/cut":     "HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{\"a\":",
		"/ok":      "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}",
	}
	base := rawServer(t, replies)
	observed := make(chan string, len(replies))
	b := setup(t, func(c *Config) {
		c.MaxResponseBytes = 64
		c.Observe = func(_, outcome string, _ time.Duration) { observed <- outcome }
	})
	for path := range replies {
		b.push.Dispatch(newTask(path, base+path)) // with an attempt timeout
	}
	if r := b.done.wait(t, "/ok"); r.Outcome != OutcomeSuccess {
		t.Fatalf("/ok: %+v", r)
	}
	for range replies {
		<-observed
	}
	for _, path := range []string{"/notjson", "/big", "/cut"} {
		if r, ok := b.done.get(path); ok {
			t.Errorf("%s: reported %q %q: an unknown outcome must be left to the attempt timeout", path, r.Outcome, r.ErrorCode)
		}
	}
	if st := b.push.Stats(); st.Unknown != 3 {
		t.Errorf("stats %+v, want 3 unknown", st)
	}
}
