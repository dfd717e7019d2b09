package chaos

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/accord-saga/accord/sdk/client"
)

// problemCounter records what Accord's API answered the test: every 5xx by
// status and problem type, and the requests that got no answer at all.
type problemCounter struct {
	next     http.RoundTripper
	mu       sync.Mutex
	problems map[string]int // "503 urn:accord:problem:unavailable"
	noAnswer map[string]int // by error
}

func newProblemCounter() *problemCounter {
	return &problemCounter{next: http.DefaultTransport, problems: map[string]int{}, noAnswer: map[string]int{}}
}

func (p *problemCounter) RoundTrip(r *http.Request) (*http.Response, error) {
	res, err := p.next.RoundTrip(r)
	if err != nil {
		p.mu.Lock()
		p.noAnswer[err.Error()]++
		p.mu.Unlock()
		return nil, err
	}
	if res.StatusCode < 500 {
		return res, nil
	}
	body, rerr := io.ReadAll(res.Body)
	res.Body.Close()
	res.Body = io.NopCloser(bytes.NewReader(body))
	var pd struct {
		Type string `json:"type"`
	}
	kind := "(no problem type)"
	if rerr == nil && json.Unmarshal(body, &pd) == nil && pd.Type != "" &&
		strings.HasPrefix(res.Header.Get("Content-Type"), "application/problem+json") {
		kind = pd.Type
	}
	p.mu.Lock()
	p.problems[fmt.Sprintf("%d %s", res.StatusCode, kind)]++
	p.mu.Unlock()
	return res, nil
}

// snapshot returns the counts so far.
func (p *problemCounter) snapshot() (problems, noAnswer map[string]int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return maps.Clone(p.problems), maps.Clone(p.noAnswer)
}

// unclean lists the answers that are not a 503 with an Accord problem
// type.
func unclean(problems map[string]int) []string {
	var out []string
	for k, n := range problems {
		if !strings.HasPrefix(k, "503 urn:accord:problem:") {
			out = append(out, fmt.Sprintf("%s ×%d", k, n))
		}
	}
	slices.Sort(out)
	return out
}

// load starts sagas of definition def with idempotency keys, from a few
// workers, until stop is closed. A start that fails is sent again after
// a pause until it is acknowledged, or, with giveUp, until stop is closed.
// 30 % of sagas plan a business failure; pad bytes of input make each
// saga's log larger.
type load struct {
	c      *client.Client
	def    string
	steps  []string
	seed   uint64
	pad    string
	giveUp bool

	next     atomic.Int64
	mu       sync.Mutex
	plans    []Expect
	acked    []time.Time
	failures atomic.Int64
	wg       sync.WaitGroup
}

func (l *load) run(ctx context.Context, workers int, pace time.Duration, stop <-chan struct{}) {
	for range workers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for !closed(stop) {
				i := l.next.Add(1) - 1
				rng := rand.New(rand.NewPCG(l.seed, uint64(i)))
				plan := Expect{Steps: l.steps}
				if rng.IntN(10) < 3 {
					plan.FailAt = l.steps[rng.IntN(len(l.steps))]
				}
				input := map[string]string{"fail_at": plan.FailAt}
				if l.pad != "" {
					input["pad"] = l.pad
				}
				for {
					res, err := l.c.StartSaga(ctx, client.StartRequest{Definition: l.def,
						IdempotencyKey: fmt.Sprintf("%s-%d-%d", l.def, l.seed, i), Input: input})
					if err == nil {
						plan.ID = res.ID
						l.mu.Lock()
						l.plans = append(l.plans, plan)
						l.acked = append(l.acked, time.Now())
						l.mu.Unlock()
						break
					}
					l.failures.Add(1)
					if l.giveUp && closed(stop) {
						break
					}
					<-time.After(100 * time.Millisecond) // back off before sending the start again
				}
				<-time.After(pace) // pacing the load
			}
		}()
	}
}

// result waits for the workers and returns the acknowledged sagas.
func (l *load) result() []Expect {
	l.wg.Wait()
	return l.plans
}

// ackedSince counts the starts acknowledged at or after t.
func (l *load) ackedSince(t time.Time) (int, time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n, first := 0, time.Time{}
	for _, at := range l.acked {
		if !at.Before(t) {
			n++
			if first.IsZero() || at.Before(first) {
				first = at
			}
		}
	}
	return n, first
}

// needs skips the test with why, or fails it when CI=true.
func needs(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s (CI=true: not skipped)", why)
	}
	t.Skip(why)
}

// pgCluster is a throwaway PostgreSQL cluster of the test's own, run as
// the postgres user, that the test can stop and start.
type pgCluster struct {
	t    *testing.T
	bin  string
	dir  string
	port int
}

// newPGCluster runs initdb into a fresh directory and starts the cluster
// on a free port. It never touches another cluster of the machine.
func newPGCluster(t *testing.T) *pgCluster {
	t.Helper()
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(bins) == 0 {
		needs(t, "no PostgreSQL initdb under /usr/lib/postgresql/*/bin")
	}
	slices.Sort(bins)
	pc := &pgCluster{t: t, bin: filepath.Dir(bins[len(bins)-1])}
	if _, err := exec.LookPath("runuser"); err != nil {
		needs(t, "runuser not found: initdb must run as a non-root user")
	}
	if out, err := exec.Command("runuser", "-u", "postgres", "--", "true").CombinedOutput(); err != nil {
		needs(t, fmt.Sprintf("cannot run as the postgres user: %v %s", err, out))
	}
	dir, err := os.MkdirTemp("", "accord-t8-pg-")
	if err != nil {
		t.Fatal(err)
	}
	pc.dir = dir
	t.Cleanup(func() {
		_ = pc.ctl("-m", "immediate", "stop")
		os.RemoveAll(dir)
	})
	if out, err := exec.Command("chown", "postgres:", dir).CombinedOutput(); err != nil {
		t.Fatalf("chown %s: %v %s", dir, err, out)
	}
	if out, err := exec.Command("runuser", "-u", "postgres", "--", filepath.Join(pc.bin, "initdb"),
		"-D", filepath.Join(dir, "data"), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync").CombinedOutput(); err != nil {
		needs(t, fmt.Sprintf("initdb: %v\n%s", err, out))
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pc.port = ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	if err := pc.start(); err != nil {
		t.Fatal(err)
	}
	return pc
}

func (pc *pgCluster) ctl(args ...string) error {
	cmd := exec.Command("runuser", append([]string{"-u", "postgres", "--", filepath.Join(pc.bin, "pg_ctl"),
		"-D", filepath.Join(pc.dir, "data")}, args...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("pg_ctl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

func (pc *pgCluster) start() error {
	return pc.ctl("-w", "-t", "60", "-l", filepath.Join(pc.dir, "log"), "-o",
		fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1", pc.port, pc.dir), "start")
}

// stopImmediate stops the cluster with -m immediate: no checkpoint, the
// next start recovers from the WAL, as after a crash.
func (pc *pgCluster) stopImmediate() error { return pc.ctl("-m", "immediate", "stop") }

func (pc *pgCluster) url() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", pc.port)
}

// TestT8PostgresOutage is the first half of scenario T8: the server runs
// on a PostgreSQL cluster of the test's own, which is stopped with
// -m immediate under load and started again after 5 s (full: 30 s).
// Checks: the server process stays up; during the outage the API answers
// 503 with an Accord problem type and no other 5xx, and answers every
// request; /readyz is not ready; after the restart work resumes by itself:
// every acknowledged saga ends as planned (the invariant check) and new
// starts are acknowledged.
func TestT8PostgresOutage(t *testing.T) {
	t.Parallel()
	outage := 5 * time.Second
	if full() {
		outage = 30 * time.Second
	}
	pc := newPGCluster(t)
	seed := seed(t)
	dir := t.TempDir()
	p, srv, counter, c := t8Setup(t, seed, "t8pg", filepath.Join(dir, "ledger.db"), filepath.Join(dir, "accord"), nil,
		"--database-url", pc.url())
	ctx := context.Background()

	begin := time.Now()
	stop := make(chan struct{})
	l := &load{c: c, def: "t8pg", steps: stepNames(3), seed: seed}
	l.run(ctx, 4, 50*time.Millisecond, stop)
	<-time.After(2 * time.Second) // load before the outage
	before, _ := counter.snapshot()
	if err := pc.stopImmediate(); err != nil {
		t.Fatal(err)
	}
	down := time.Now()

	// During the outage: reads through the API and /readyz, paced.
	url, _, _ := srv.current()
	reads, readsOK, readyOK, readyN := 0, 0, 0, 0
	for time.Since(down) < outage {
		if srv.exited() {
			t.Fatalf("the server exited during the outage:\n%s", srv.log.String())
		}
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if _, err := c.ListSagas(rctx, client.ListOptions{Limit: 1}); err == nil {
			readsOK++
		}
		cancel()
		reads++
		// The first second is the server's to notice.
		if time.Since(down) > time.Second {
			if res, err := http.Get(url + "/readyz"); err == nil {
				res.Body.Close()
				readyN++
				if res.StatusCode == http.StatusOK {
					readyOK++
				}
			}
		}
		<-time.After(200 * time.Millisecond) // pace the reads during the outage
	}
	during, noAnswerDuring := counter.snapshot()
	if err := pc.start(); err != nil {
		t.Fatal(err)
	}
	up := time.Now()
	// Work resumes by itself: new starts are acknowledged.
	for {
		if n, _ := l.ackedSince(up); n >= 10 || time.Since(up) > 60*time.Second {
			break
		}
		<-time.After(100 * time.Millisecond) // waiting for the load to get through
	}
	close(stop)
	plans := l.result()
	ackedAfter, firstAck := l.ackedSince(up)

	ids := planIDs(plans)
	wctx, cancel := context.WithDeadline(ctx, up.Add(5*time.Minute)) // a last guard: a busy machine slows the drain
	defer cancel()
	_ = waitTerminal(wctx, c, ids)
	drain := time.Since(up)
	if srv.exited() {
		t.Fatalf("the server exited:\n%s", srv.log.String())
	}
	ledger, err := p.Ledger(ctx)
	if err != nil {
		t.Fatal(err)
	}
	res := Check(ctx, c, ledger, plans)
	problems, noAnswer := counter.snapshot()
	outage503 := 0
	for k, n := range during {
		if strings.HasPrefix(k, "503 ") {
			outage503 += n - before[k]
		}
	}
	resumed := time.Duration(-1)
	if !firstAck.IsZero() {
		resumed = firstAck.Sub(up)
	}
	report(t, fmt.Sprintf("T8-pg seed=%d sagas=%d completed=%d compensated=%d outage_s=%.0f lost=%d duplicated=%d stuck=%d redeliveries=%d start_failures=%d api_503_during_outage=%d answers_5xx=%v no_answer=%d reads_while_down=%d ok_while_down=%d readyz_ok_while_down=%d/%d first_ack_after_restart_ms=%d acked_after_restart=%d drain_ms=%d elapsed_s=%.0f",
		seed, res.Sagas, res.Completed, res.Compensated, outage.Seconds(), res.Lost, res.Duplicated, res.Stuck, res.Redeliveries,
		l.failures.Load(), outage503, problems, len(noAnswer), reads, readsOK, readyOK, readyN, resumed.Milliseconds(), ackedAfter,
		drain.Milliseconds(), time.Since(begin).Seconds()), res)
	if bad := unclean(problems); len(bad) > 0 {
		t.Errorf("the API answered other than 503 with an Accord problem type: %v", bad)
	}
	if len(noAnswerDuring) > 0 {
		t.Errorf("requests got no answer during the outage: %v", noAnswerDuring)
	}
	if outage503 == 0 {
		t.Errorf("the API answered no 503 during the outage")
	}
	if readyOK > 0 {
		t.Errorf("/readyz answered 200 %d of %d times while the database was down", readyOK, readyN)
	}
	if ackedAfter < 10 {
		t.Errorf("%d starts acknowledged in the 60 s after PostgreSQL came back", ackedAfter)
	}
	if t.Failed() {
		t.Logf("server log (tail):\n%s", srv.log.String())
	}
}

// TestT8SQLiteDiskFull is the second half of scenario T8: the embedded
// store's directory is a 16 MiB tmpfs, filled by sagas with large inputs
// (see runT8Disk), then grown to 256 MiB.
//
// It needs to mount a tmpfs (root, and a sandbox that allows mount); when
// it cannot, it fails with CI=true and is skipped otherwise.
func TestT8SQLiteDiskFull(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", mnt).CombinedOutput(); err != nil {
		needs(t, fmt.Sprintf("mount a tmpfs: %v %s", err, out))
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v %s", mnt, err, out)
		}
	})
	runT8Disk(t, dir, diskFault{name: "tmpfs-16MiB", data: filepath.Join(mnt, "accord"),
		grow: func(t *testing.T, _ *server) {
			if out, err := exec.Command("mount", "-o", "remount,size=256m", mnt).CombinedOutput(); err != nil {
				t.Fatalf("grow the tmpfs: %v %s", err, out)
			}
		}})
}

// TestT8SQLiteFileSizeLimit is TestT8SQLiteDiskFull without root: the
// server runs under prlimit with a file size limit (RLIMIT_FSIZE) of
// 8 MiB, so its writes past 8 MiB in a file fail (EFBIG: SQLite's "disk
// I/O error" rather than "disk is full"); the limit is then lifted on the
// running process. It is skipped without prlimit (and fails with CI=true).
func TestT8SQLiteFileSizeLimit(t *testing.T) {
	t.Parallel()
	prlimit, err := exec.LookPath("prlimit")
	if err != nil {
		needs(t, "prlimit not found")
	}
	dir := t.TempDir()
	runT8Disk(t, dir, diskFault{name: "fsize-8MiB", data: filepath.Join(dir, "accord"),
		wrap: []string{prlimit, fmt.Sprintf("--fsize=%d:", 8<<20), "--"},
		grow: func(t *testing.T, srv *server) {
			srv.mu.Lock()
			srv.wrap = nil // a restart runs without the limit
			srv.mu.Unlock()
			if pid := srv.pid(); pid != 0 && !srv.exited() {
				if out, err := exec.Command(prlimit, "--pid", strconv.Itoa(pid), "--fsize=unlimited:").CombinedOutput(); err != nil {
					t.Fatalf("lift the file size limit: %v %s", err, out)
				}
			}
		}})
}

// diskFault is how a T8 disk test runs out of room and gets it back.
type diskFault struct {
	name string   // in the figure line
	data string   // the store's directory
	wrap []string // the command the server runs under (nil: none)
	grow func(t *testing.T, srv *server)
}

// runT8Disk fills the store under load: sagas whose input carries 4 KiB
// of padding, started without pause until the first start fails, and for
// 3 s after (full: 30 s, past the 10 s lease). Checks: the server answers
// the writes it cannot make with a 503 problem (or exits with one clean
// "accord: …" line — no panic); the database passes PRAGMA
// integrity_check while it is still out of room; once f.grow has given the
// room back, work resumes (the server restarted if it had exited) and
// every acknowledged saga ends as planned; integrity_check is ok at the
// end too.
func runT8Disk(t *testing.T, dir string, f diskFault) {
	fullFor := 3 * time.Second
	if full() {
		fullFor = 30 * time.Second
	}
	seed := seed(t)
	data := f.data
	p, srv, counter, c := t8Setup(t, seed, "t8disk", filepath.Join(dir, "ledger.db"), data, f.wrap)
	ctx := context.Background()

	begin := time.Now()
	stop := make(chan struct{})
	l := &load{c: c, def: "t8disk", steps: stepNames(3), seed: seed, pad: strings.Repeat("x", 4<<10), giveUp: true}
	l.run(ctx, 4, 0, stop)
	// Until the writes fail (or the server goes), then a little longer.
	var filled time.Time
	for filled.IsZero() && time.Since(begin) < 90*time.Second {
		if l.failures.Load() > 0 || srv.exited() {
			filled = time.Now()
		}
		<-time.After(50 * time.Millisecond) // watching for the first failure
	}
	if filled.IsZero() {
		n, _ := l.ackedSince(time.Time{})
		t.Fatalf("90 s of starts and the store (%s) is not full: %d sagas", f.name, n)
	}
	<-time.After(fullFor) // the load goes on against the full disk
	close(stop)
	plans := l.result()
	problems, noAnswer := counter.snapshot()
	exitedOnFull := srv.exited()
	size := func(name string) int64 {
		fi, err := os.Stat(filepath.Join(data, name))
		if err != nil {
			return 0
		}
		return fi.Size()
	}
	dbBytes, walBytes := size("accord.db"), size("accord.db-wal")

	// The database is sound while the disk is still full.
	integrityFull := integrityCheck(t, filepath.Join(data, "accord.db"))

	// Room again: the server goes on (or is started again) and finishes
	// every acknowledged saga.
	f.grow(t, srv)
	grown := time.Now()
	exitLine := ""
	if exitedOnFull {
		lines := strings.Split(strings.TrimSpace(srv.log.String()), "\n")
		exitLine = lines[len(lines)-1]
		if err := srv.start(); err != nil {
			t.Fatalf("restart after the disk was grown: %v", err)
		}
		c = srv.client(t)
	}
	ids := planIDs(plans)
	wctx, cancel := context.WithDeadline(ctx, grown.Add(5*time.Minute)) // a last guard: a busy machine slows the drain
	defer cancel()
	_ = waitTerminal(wctx, c, ids)
	drain := time.Since(grown)
	// New work is accepted.
	if _, err := c.StartSaga(ctx, client.StartRequest{Definition: "t8disk", Input: map[string]string{"fail_at": ""}}); err != nil {
		t.Errorf("a start after the disk was grown: %v", err)
	}
	ledger, err := p.Ledger(ctx)
	if err != nil {
		t.Fatal(err)
	}
	res := Check(ctx, c, ledger, plans)
	srv.stop()
	integrityEnd := integrityCheck(t, filepath.Join(data, "accord.db"))
	report(t, fmt.Sprintf("T8-disk seed=%d disk=%s full_for_s=%.0f sagas=%d completed=%d compensated=%d lost=%d duplicated=%d stuck=%d start_failures=%d answers_5xx=%v no_answer=%d server_exited=%t db_bytes=%d wal_bytes=%d integrity_when_full=%s integrity_at_end=%s full_after_ms=%d drain_ms=%d elapsed_s=%.0f",
		seed, f.name, fullFor.Seconds(), res.Sagas, res.Completed, res.Compensated, res.Lost, res.Duplicated, res.Stuck, l.failures.Load(), problems, len(noAnswer),
		exitedOnFull, dbBytes, walBytes, integrityFull, integrityEnd, filled.Sub(begin).Milliseconds(), drain.Milliseconds(), time.Since(begin).Seconds()), res)
	if exitedOnFull {
		t.Logf("the server exited on the full disk; its last line: %s", exitLine)
		if !strings.HasPrefix(exitLine, "accord: ") || strings.Contains(srv.log.String(), "panic") {
			t.Errorf("the server did not exit cleanly on the full disk; log tail:\n%s", srv.log.String())
		}
	}
	if bad := unclean(problems); len(bad) > 0 {
		t.Errorf("the API answered other than 503 with an Accord problem type: %v", bad)
	}
	if !exitedOnFull && len(noAnswer) > 0 {
		t.Errorf("requests got no answer while the disk was full: %v", noAnswer)
	}
	if integrityFull != "ok" || integrityEnd != "ok" {
		t.Errorf("integrity_check: %q with the disk full, %q at the end", integrityFull, integrityEnd)
	}
	if strings.Contains(srv.log.String(), "panic") {
		t.Errorf("the server's log holds a panic")
	}
	if t.Failed() {
		t.Logf("server log (tail):\n%s", srv.log.String())
	}
}

// t8Setup starts a participant with its ledger at ledger and a server on
// data with flags (under wrap), and registers the definition def of 3 steps pushed to
// the participant. The client counts the API's 5xx answers and does not
// retry.
func t8Setup(t *testing.T, seed uint64, def, ledger, data string, wrap []string, flags ...string) (*Participant, *server, *problemCounter, *client.Client) {
	t.Helper()
	p, err := NewParticipant(ledger, ParticipantConfig{Latency: time.Millisecond, LatencyJitter: 2 * time.Millisecond, Seed: seed})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	srv := startServerUnder(t, wrap, data, flags...)
	counter := newProblemCounter()
	c := srv.client(t, client.WithHTTPClient(&http.Client{Transport: counter}), client.WithRetries(0),
		client.WithTimeout(15*time.Second))
	retry := "{initial_interval: 20ms, max_interval: 1s, max_attempts: 1000}"
	if _, _, err := c.RegisterDefinition(context.Background(), []byte(definition(def, p.URL(), 3, retry)), "application/yaml"); err != nil {
		t.Fatal(err)
	}
	return p, srv, counter, c
}

func planIDs(plans []Expect) []string {
	ids := make([]string, len(plans))
	for i := range plans {
		ids[i] = plans[i].ID
	}
	return ids
}

// integrityCheck runs PRAGMA integrity_check on the SQLite file at path
// and returns its answer ("ok" when sound).
func integrityCheck(t *testing.T, path string) string {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query("PRAGMA integrity_check")
	if err != nil {
		return "error: " + err.Error()
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return "error: " + err.Error()
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		return "error: " + err.Error()
	}
	return strings.Join(out, "; ")
}
