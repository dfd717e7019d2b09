package chaos

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/accord-saga/accord/internal/testbin"
	"github.com/accord-saga/accord/sdk/client"
)

// Environment variables of the scenarios.
const (
	// envFull runs the full versions of the scenarios.
	envFull = "ACCORD_CHAOS_FULL"
	// envSeed replays a run: the seed its figure line printed.
	envSeed = "ACCORD_CHAOS_SEED"
)

// accordBin is the binary under test, built once by TestMain.
var accordBin string

func TestMain(m *testing.M) { testbin.Main(m, &accordBin) }

func full() bool { return os.Getenv(envFull) == "1" }

// seed is the run's seed: ACCORD_CHAOS_SEED, or a fresh one.
func seed(t *testing.T) uint64 {
	t.Helper()
	if v := os.Getenv(envSeed); v != "" {
		s, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("%s=%q: %v", envSeed, v, err)
		}
		return s
	}
	return rand.Uint64()
}

// server is an accord server process that can be killed and restarted on
// the same data directory.
type server struct {
	t     *testing.T
	args  []string
	wrap  []string // a command the server runs under, like prlimit (nil: none)
	mu    sync.Mutex
	cmd   *exec.Cmd
	url   string
	gen   int
	moved chan struct{} // closed when the server stops or starts
	log   *tailBuffer
	exit  chan error
	dead  chan struct{} // closed when the process has exited
}

var listening = regexp.MustCompile(`url=(http://\S+)`)

// startServer runs accord server with flags, on an embedded store in
// dataDir unless the flags name a database.
func startServer(t *testing.T, dataDir string, flags ...string) *server {
	t.Helper()
	return startServerUnder(t, nil, dataDir, flags...)
}

// startServerUnder is startServer with the server run under the command
// wrap (its arguments, then accord's).
func startServerUnder(t *testing.T, wrap []string, dataDir string, flags ...string) *server {
	t.Helper()
	s := &server{t: t, wrap: wrap, moved: make(chan struct{}), log: &tailBuffer{max: 1 << 20},
		args: append([]string{"server", "--data", dataDir, "--addr", "127.0.0.1:0", "--partitions", "8",
			"--push-allow", "http://127.0.0.1:*"}, flags...)}
	if err := s.start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.stop)
	return s
}

func (s *server) start() error {
	s.mu.Lock()
	argv := append(slices.Clone(s.wrap), accordBin)
	s.mu.Unlock()
	cmd := exec.Command(argv[0], append(argv[1:], s.args...)...)
	pipe, err := cmd.StderrPipe()
	if err != nil {
		return fmt.Errorf("stderr pipe: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start accord: %w", err)
	}
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pipe)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			s.log.add(line)
			if m := listening.FindStringSubmatch(line); m != nil {
				select {
				case found <- m[1]:
				default:
				}
			}
		}
		_, _ = io.Copy(io.Discard, pipe)
	}()
	exit := make(chan error, 1)
	dead := make(chan struct{})
	go func() { exit <- cmd.Wait(); close(dead) }()
	select {
	case url := <-found:
		s.mu.Lock()
		s.cmd, s.url, s.exit, s.dead = cmd, url, exit, dead
		s.gen++
		close(s.moved)
		s.moved = make(chan struct{})
		s.mu.Unlock()
		return nil
	case err := <-exit:
		return fmt.Errorf("accord exited at start: %v\n%s", err, s.log.String())
	case <-time.After(2 * time.Minute): // a last guard: a busy machine slows a start
		_ = cmd.Process.Kill()
		<-exit
		return fmt.Errorf("accord did not start:\n%s", s.log.String())
	}
}

// current returns the server's URL (empty while down), its generation,
// and a channel closed at its next stop or start.
func (s *server) current() (string, int, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.url, s.gen, s.moved
}

// pid is the running server's process id (0 while down).
func (s *server) pid() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// exited reports whether the running server process has exited on its
// own (a crash).
func (s *server) exited() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cmd != nil && closed(s.dead)
}

// kill ends the server with SIGKILL and waits for it to be gone.
func (s *server) kill() {
	s.mu.Lock()
	cmd, exit := s.cmd, s.exit
	s.cmd, s.url = nil, ""
	close(s.moved)
	s.moved = make(chan struct{})
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-exit
}

// stop ends the server with SIGTERM (nothing if it is down).
func (s *server) stop() {
	s.mu.Lock()
	cmd, exit := s.cmd, s.exit
	s.cmd, s.url = nil, ""
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exit:
		if err != nil {
			s.t.Errorf("server exit: %v\n%s", err, s.log.String())
		}
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		<-exit
		s.t.Errorf("server did not stop after SIGTERM")
	}
}

func (s *server) client(t *testing.T, opts ...client.Option) *client.Client {
	t.Helper()
	url, _, _ := s.current()
	c, err := client.New(url, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// tailBuffer keeps the last max bytes of a log.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (b *tailBuffer) add(line string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.b = append(b.b, line...)
	b.b = append(b.b, '\n')
	if over := len(b.b) - b.max; over > 0 {
		b.b = slices.Clone(b.b[over:])
	}
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.b)
}

// definition is a saga of n steps s1…sn, one after the other, all pushed
// to url.
func definition(name, url string, n int, retry string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "name: %s\nversion: 1\nsteps:\n", name)
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, `  - name: s%[1]d
    action: {http: "%[2]s/s%[1]d", name: do_s%[1]d}
    compensation: {http: "%[2]s/s%[1]d", name: undo_s%[1]d}
    input: {fail_at: "${input.fail_at}"}
    attempt_timeout: 3s
    retry: %[3]s
    compensation_retry: {initial_interval: 20ms, max_interval: 500ms, max_attempts: 1000}
`, i, url, retry)
	}
	return b.String()
}

func stepNames(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = "s" + strconv.Itoa(i+1)
	}
	return out
}

// fiveXX counts the 5xx answers of Accord's API to the test's requests.
type fiveXX struct {
	n    atomic.Int64
	next http.RoundTripper
}

func (f *fiveXX) RoundTrip(r *http.Request) (*http.Response, error) {
	res, err := f.next.RoundTrip(r)
	if err == nil && res.StatusCode >= 500 {
		f.n.Add(1)
	}
	return res, err
}

// p99 is the 99th percentile of ds (0 for none).
func p99(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[(len(s)*99+99)/100-1]
}

// waitTerminal waits for every saga to end, until ctx is done; it returns
// the ids still running then.
func waitTerminal(ctx context.Context, c *client.Client, ids []string) []string {
	var mu sync.Mutex
	var stuck []string
	work := make(chan string)
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for id := range work {
				if s, err := c.WaitSaga(ctx, id); err != nil || !s.Terminal {
					mu.Lock()
					stuck = append(stuck, id)
					mu.Unlock()
				}
			}
		}()
	}
	for _, id := range ids {
		work <- id
	}
	close(work)
	wg.Wait()
	return stuck
}

func report(t *testing.T, line string, res Result) {
	t.Helper()
	t.Log(line)
	fmt.Println(line)
	if res.Failed() && res.Stuck > 0 {
		t.Logf("the first stuck saga:\n%s", res.StuckDetail)
	}
	for i, v := range res.Violations {
		if i == 50 {
			t.Errorf("… and %d more violations", len(res.Violations)-50)
			break
		}
		t.Error(v)
	}
}
