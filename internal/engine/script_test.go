package engine_test

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/datadriven"

	"github.com/accord-saga/accord/internal/clock"
	"github.com/accord-saga/accord/internal/engine"
	"github.com/accord-saga/accord/internal/storage/sqlite"
)

// TestScripts runs the engine scripts in testdata/*.txt: an engine on an
// SQLite store, both on one manual clock the script moves, so every time the
// output shows is an input. After a change, "go test ./internal/engine -run
// TestScripts -rewrite" writes the new output into the scripts; review the
// diff. Directives:
//
//	define                        register the definition in the body (YAML)
//	start def=D name=N            start a saga of definition D (input: the body,
//	                              JSON), known to the script as N
//	tasks queue=Q [wait]          claim Q's tasks (visibility 1m); with wait,
//	                              wait for one to be added if none is ready
//	result name=N step=S outcome=O [phase=compensation] [code=C]
//	                              report the result of N's last claimed task of S
//	advance D                     move the clock by D; what falls due fires,
//	                              and the engine settles (engine.Settle)
//	starve D                      move the clock by D without firing anything:
//	                              the engine does not get to run (a starved
//	                              CPU); what fell due fires at the next advance
//	wait name=N                   wait for N to end; its status and steps
//	saga name=N                   N's status and steps now
//	restart                       stop the engine and the store, open both again
//	leases                        each partition's lease: owner and epoch
//
// Times print as offsets from the start of the store's clock.
func TestScripts(t *testing.T) {
	datadriven.Walk(t, "testdata", func(t *testing.T, file string) {
		t.Parallel()
		s := newScript(t)
		datadriven.RunTest(t, file, func(t *testing.T, d *datadriven.TestData) string {
			out, err := s.run(t, d)
			if err != nil {
				return "error: " + err.Error() + "\n"
			}
			return out
		})
	})
}

// script is the world a script runs in.
type script struct {
	path    string
	clk     *clock.Manual // the store's and the engine's
	db      *sqlite.Driver
	e       *engine.Engine
	sagas   map[string]string      // script name → saga id
	names   map[string]string      // saga id → script name
	claimed map[string]engine.Task // name/step/phase → last claimed task
}

func newScript(t *testing.T) *script {
	s := &script{
		path:    filepath.Join(t.TempDir(), "accord.db"),
		clk:     clock.NewManual(t0),
		sagas:   map[string]string{},
		names:   map[string]string{},
		claimed: map[string]engine.Task{},
	}
	s.open(t)
	t.Cleanup(func() { s.close(t) })
	return s
}

func (s *script) open(t *testing.T) {
	t.Helper()
	db, err := sqlite.Open(context.Background(), sqlite.Config{Path: s.path, Partitions: 2, Clock: s.clk})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	e, err := engine.New(engine.Config{Store: db, Logger: quietLogger(), Clock: s.clk, LeaseTTL: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	s.db, s.e = db, e
}

func (s *script) close(t *testing.T) {
	t.Helper()
	if s.e == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := s.e.Stop(ctx); err != nil {
		t.Errorf("stop engine: %v", err)
	}
	if err := s.db.Close(); err != nil {
		t.Errorf("close store: %v", err)
	}
	s.e, s.db = nil, nil
}

// at prints a time as an offset from the start of the script.
func (s *script) at(tm time.Time) string { return "+" + tm.Sub(t0).String() }

func (s *script) run(t *testing.T, d *datadriven.TestData) (string, error) {
	// A last guard only: every wait below ends on an event.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	arg := func(key string) string {
		if a, ok := d.Arg(key); ok {
			return strings.Join(a.Vals, ",")
		}
		return ""
	}
	dur := func() time.Duration {
		if len(d.CmdArgs) != 1 {
			d.Fatalf(t, "%s wants one duration", d.Cmd)
		}
		v, err := time.ParseDuration(d.CmdArgs[0].Key)
		if err != nil {
			d.Fatalf(t, "%s: %v", d.Cmd, err)
		}
		return v
	}
	switch d.Cmd {
	case "define":
		_, _, err := s.e.RegisterDefinition(ctx, []byte(d.Input))
		return "ok\n", err
	case "start":
		in := json.RawMessage(cmpOr(strings.TrimSpace(d.Input), "{}"))
		res, err := s.e.StartSaga(ctx, engine.StartParams{Definition: arg("def"), Input: in})
		if err != nil {
			return "", err
		}
		s.sagas[arg("name")], s.names[res.SagaID] = res.SagaID, arg("name")
		return arg("name") + " started\n", nil
	case "tasks":
		wait := time.Duration(0)
		if d.HasArg("wait") {
			wait = engine.MaxPollWait // ends when a task is added: the clock stands still
		}
		tasks, err := s.e.PollTasks(ctx, engine.PollParams{Queue: arg("queue"), Max: 100, Visibility: time.Minute, Wait: wait})
		if err != nil {
			return "", err
		}
		if len(tasks) == 0 {
			return "none\n", nil
		}
		var b strings.Builder
		for _, task := range tasks {
			name := s.names[task.SagaID]
			s.claimed[name+"/"+task.Step+"/"+task.Phase] = task
			fmt.Fprintf(&b, "%s %s %s #%d op=%s deliveries=%d dispatched=%s\n", name, task.Step, task.Phase, task.Attempt,
				task.Operation, task.Deliveries, s.at(time.UnixMilli(task.DispatchedAtMS)))
		}
		return b.String(), nil
	case "result":
		key := arg("name") + "/" + arg("step") + "/" + cmpOr(arg("phase"), "action")
		task, ok := s.claimed[key]
		if !ok {
			d.Fatalf(t, "no claimed task %s", key)
		}
		res := engine.Result{TaskID: task.ID, ClaimToken: task.ClaimToken, Outcome: arg("outcome"), Output: json.RawMessage(`{}`)}
		if c := arg("code"); c != "" {
			res.ErrorCode, res.ErrorMessage = c, "script "+c
		}
		return "ok\n", s.e.CompleteTask(ctx, res)
	case "advance":
		s.clk.Advance(dur())
		if err := engine.Settle(ctx, s.e); err != nil {
			return "", err
		}
		return "now=" + s.at(s.clk.Now()) + "\n", nil
	case "starve":
		s.clk.Skip(dur())
		return "now=" + s.at(s.clk.Now()) + "\n", nil
	case "wait":
		sg, err := s.e.Wait(ctx, s.sagas[arg("name")])
		if err != nil {
			return "", err
		}
		return s.formatSaga(arg("name"), sg), nil
	case "saga":
		sg, err := s.e.GetSaga(ctx, s.sagas[arg("name")])
		if err != nil {
			return "", err
		}
		return s.formatSaga(arg("name"), sg), nil
	case "restart":
		s.close(t)
		s.open(t)
		return fmt.Sprintf("ok: owns %d of %d partitions\n", s.e.OwnedPartitions(), s.e.Partitions()), nil
	case "leases":
		leases, err := s.db.LeaseList(ctx)
		if err != nil {
			return "", err
		}
		var b strings.Builder
		for _, l := range leases {
			fmt.Fprintf(&b, "partition %d: %s epoch %d expires in %s\n", l.Partition, l.Owner, l.Epoch, roundLease(l.ExpiresAt.Sub(s.clk.Now())))
		}
		return b.String(), nil
	}
	d.Fatalf(t, "unknown directive %s", d.Cmd)
	return "", nil
}

// roundLease shows a lease's remaining time, or "(held until released)" for
// the leases of an exclusive store.
func roundLease(left time.Duration) string {
	if left > 24*time.Hour {
		return "(held until released)"
	}
	return left.String()
}

// formatSaga prints a saga's status and a line per step; times are
// offsets from the script's start.
func (s *script) formatSaga(name string, sg engine.Saga) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %s\n", name, sg.Status)
	for _, st := range sg.View.Steps {
		fmt.Fprintf(&b, "  %s %s attempts=%d", st.Name, st.Status, st.Attempts)
		if st.LastError != nil {
			fmt.Fprintf(&b, " error=%s", st.LastError.Code)
		}
		if !st.NextAttemptAt.IsZero() {
			fmt.Fprintf(&b, " next=%s", s.at(st.NextAttemptAt))
		}
		if c := st.Compensation; c != nil {
			fmt.Fprintf(&b, " compensation attempts=%d", c.Attempts)
		}
		b.WriteString("\n")
	}
	return b.String()
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
