package crashtest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/accord-saga/accord/internal/storage"
	"github.com/accord-saga/accord/internal/storage/sqlite"
)

func TestMain(m *testing.M) {
	if path := os.Getenv(childEnv); path != "" {
		os.Exit(runChild(path))
	}
	goleak.VerifyTestMain(m)
}

const (
	killsDefault = 50
	// Kill between these times after the child is ready: short enough that
	// fifty rounds stay well under a minute, long enough for hundreds of
	// commits per round.
	minRun, maxRun = 20 * time.Millisecond, 300 * time.Millisecond
	readyTimeout   = 30 * time.Second
)

type eventKey struct {
	stream  string
	version int64
}

type ackedEvent struct {
	partition int
	position  int64
	hash      string
}

// crashRun is the parent's record of what the child acknowledged.
type crashRun struct {
	t        *testing.T
	path     string
	events   map[eventKey]ackedEvent
	tasks    []string
	newTasks []string // acknowledged since the last verification
	verified int
	lost     int

	// What verification has read of the log so far: the rounds in between
	// read only what is new; the last one reads everything again.
	heads    []int64
	versions map[string]int64
	found    map[eventKey]ackedEvent
}

func TestCrashSafety(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("ACCORD_CRASHTEST_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("ACCORD_CRASHTEST_SEED=%q: %v", s, err)
		}
		seed = v
	}
	kills := killsDefault
	if s := os.Getenv("ACCORD_CRASHTEST_KILLS"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 {
			t.Fatalf("ACCORD_CRASHTEST_KILLS=%q: want a positive count", s)
		}
		kills = v
	}
	rng := rand.New(rand.NewPCG(seed, 0))
	run := &crashRun{t: t, path: filepath.Join(t.TempDir(), "accord.db"), events: make(map[eventKey]ackedEvent)}
	done := 0
	defer func() {
		// One summary line, also when the test fails part way.
		fmt.Printf("crashtest: seed=%d kills=%d acknowledged=%d verified=%d lost=%d\n",
			seed, done, len(run.events), run.verified, run.lost)
	}()
	for i := range kills {
		after := minRun + time.Duration(rng.Int64N(int64(maxRun-minRun)))
		run.runChild(seed+uint64(i)+1, after)
		done++
		run.verify(false)
		if t.Failed() {
			t.Fatalf("replay with ACCORD_CRASHTEST_SEED=%d", seed)
		}
	}
	run.verify(true)
	if run.lost > 0 || t.Failed() {
		t.Fatalf("lost %d acknowledged events; replay with ACCORD_CRASHTEST_SEED=%d", run.lost, seed)
	}
	if len(run.events) == 0 {
		t.Fatal("the child acknowledged nothing: the test proved nothing")
	}
}

// runChild starts the child, kills it with SIGKILL after it has been ready
// for the given time, and records every line it acknowledged.
func (r *crashRun) runChild(seed uint64, after time.Duration) {
	t := r.t
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+r.path, childSeedEnv+"="+strconv.FormatUint(seed, 10))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start child: %v", err)
	}
	lines := make(chan string, 1024)
	readErr := make(chan error, 1)
	go func() {
		defer close(lines)
		br := bufio.NewReader(stdout)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				// A line without its newline was cut by the kill: it is not
				// an acknowledgement (the child writes each commit's lines
				// in one write, so this does not happen on Linux pipes).
				if errors.Is(err, io.EOF) {
					err = nil
				}
				readErr <- err
				return
			}
			lines <- line
		}
	}()

	ready, killed := false, false
	deadline := time.NewTimer(readyTimeout)
	defer deadline.Stop()
	var kill <-chan time.Time
	for lines != nil {
		select {
		case line, ok := <-lines:
			switch {
			case !ok:
				lines = nil
			case !ready:
				if line != "ready\n" {
					t.Errorf("child's first line %q, want ready", line)
				}
				ready = true
				kill = time.After(after)
			default:
				r.record(line)
			}
		case <-kill:
			kill, killed = nil, true
			_ = cmd.Process.Kill()
		case <-deadline.C:
			if !ready {
				_ = cmd.Process.Kill()
			}
		}
	}
	_ = killed
	if err := <-readErr; err != nil {
		t.Errorf("read child output: %v", err)
	}
	err = cmd.Wait()
	if !ready {
		t.Fatalf("child never became ready (%v): %s", err, stderr.String())
	}
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != -1 {
		t.Fatalf("child ended by itself, not by the kill (%v): %s", err, stderr.String())
	}
}

// record notes one acknowledged line.
func (r *crashRun) record(line string) {
	f := strings.Fields(line)
	switch {
	case len(f) == 6 && f[0] == "ack":
		version, err1 := strconv.ParseInt(f[2], 10, 64)
		partition, err2 := strconv.Atoi(f[3])
		position, err3 := strconv.ParseInt(f[4], 10, 64)
		if err := errors.Join(err1, err2, err3); err != nil {
			r.t.Errorf("bad line %q: %v", line, err)
			return
		}
		k := eventKey{f[1], version}
		if _, dup := r.events[k]; dup {
			r.t.Errorf("event %s version %d acknowledged twice", k.stream, k.version)
		}
		r.events[k] = ackedEvent{partition: partition, position: position, hash: f[5]}
	case len(f) == 2 && f[0] == "task":
		r.tasks = append(r.tasks, f[1])
		r.newTasks = append(r.newTasks, f[1])
	default:
		r.t.Errorf("bad line from the child: %q", line)
	}
}

// verify opens the store the killed child left and checks it: SQLite's
// integrity check passes, the log is well formed, every acknowledged event
// is in it, unchanged, and the acknowledged tasks exist. Without all it
// reads only the part of the log written since the last verification, and
// checks only the new tasks; with all it reads and checks everything.
func (r *crashRun) verify(all bool) {
	t := r.t
	t.Helper()
	ctx := context.Background()
	d, err := sqlite.Open(ctx, sqlite.Config{Path: r.path})
	if err != nil {
		t.Fatalf("reopen after kill: %v", err)
	}
	defer func() {
		if err := d.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	}()
	if err := d.IntegrityCheck(ctx); err != nil {
		t.Errorf("after kill: %v", err)
	}
	n := d.Info().Partitions
	if all || r.heads == nil {
		r.heads, r.versions, r.found = make([]int64, n), make(map[string]int64), make(map[eventKey]ackedEvent)
	}
	found, versions := r.found, r.versions
	for p := range n {
		head, err := d.PartitionHead(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		if head < r.heads[p] {
			t.Errorf("partition %d: head went back from %d to %d", p, r.heads[p], head)
		}
		next := r.heads[p] + 1
		for {
			page, err := d.PartitionRead(ctx, &storage.PartitionReadParams{Partition: p, FromPosition: next, Limit: 1000})
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range page {
				if e.Position != next {
					t.Errorf("partition %d: position %d follows %d", p, e.Position, next-1)
				}
				if e.Version != versions[e.Stream]+1 {
					t.Errorf("stream %s: version %d at position %d follows version %d", e.Stream, e.Version, e.Position, versions[e.Stream])
				}
				versions[e.Stream] = e.Version
				found[eventKey{e.Stream, e.Version}] = ackedEvent{partition: p, position: e.Position, hash: payloadHash(e.Data)}
				next = e.Position + 1
			}
			if len(page) < 1000 {
				break
			}
		}
		if head != next-1 {
			t.Errorf("partition %d: head %d, last position %d", p, head, next-1)
		}
		r.heads[p] = head
	}
	for stream, v := range versions {
		info, err := d.StreamInfo(ctx, stream)
		if err != nil || info.Version != v || info.Partition != found[eventKey{stream, v}].partition {
			t.Errorf("stream %s: info %+v, %v; the log says version %d", stream, info, err, v)
		}
	}
	r.verified, r.lost = 0, 0
	for k, want := range r.events {
		got, ok := found[k]
		switch {
		case !ok:
			r.lost++
			t.Errorf("acknowledged event %s version %d is missing", k.stream, k.version)
		case got != want:
			t.Errorf("acknowledged event %s version %d is %+v, want %+v", k.stream, k.version, got, want)
		default:
			r.verified++
		}
	}
	tasks := r.newTasks
	if all {
		tasks = r.tasks
	}
	for _, id := range tasks {
		task, err := d.TaskGet(ctx, id)
		if err != nil || string(task.Payload) != id {
			t.Errorf("acknowledged task %s: %+v, %v", id, task, err)
		}
	}
	r.newTasks = r.newTasks[:0]
}
