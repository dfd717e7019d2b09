package engine_test

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	_ "modernc.org/sqlite"

	"github.com/accord-saga/accord/internal/engine"
	"github.com/accord-saga/accord/internal/storage"
	"github.com/accord-saga/accord/internal/storage/sqlite"
	"github.com/accord-saga/accord/sdk/guard"
)

// The crash recovery test: a child process runs an engine, starts N sagas
// and serves their steps with a slow participant that records every effect
// in its own database behind an idempotency guard. The parent kills the
// child with SIGKILL several times, then lets a last child run until every
// saga has ended, and checks the outcome against the participant's records.

// The attempt timeouts are far beyond the run: this test is about kills,
// and on a starved machine a backlog of a thousand sagas' tasks can wait in
// its queue longer than the default 30 s, which would time attempts out and
// compensate sagas the test expects to complete (a killed child's claims
// come back by their one-second visibility, not by a timeout).
const crashDef = `
name: crash
version: 1
steps:
  - name: a
    action: {queue: qa, name: do_a}
    compensation: {queue: qa, name: undo_a}
    retry: {initial_interval: 10ms, max_interval: 50ms}
    compensation_retry: {initial_interval: 10ms, max_interval: 50ms}
    attempt_timeout: 1h
  - name: b
    action: {queue: qb, name: do_b}
    compensation: {queue: qb, name: undo_b}
    retry: {initial_interval: 10ms, max_interval: 50ms}
    compensation_retry: {initial_interval: 10ms, max_interval: 50ms}
    attempt_timeout: 1h
  - name: c
    action: {queue: qc, name: do_c}
    compensation: {queue: qc, name: undo_c}
    retry: {initial_interval: 10ms, max_interval: 50ms}
    compensation_retry: {initial_interval: 10ms, max_interval: 50ms}
    attempt_timeout: 1h
`

var crashSteps = []string{"a", "b", "c"}

// failingStep is the step saga i fails at ("" for none).
func failingStep(i int) string {
	if k := i % 4; k > 0 {
		return crashSteps[k-1]
	}
	return ""
}

func TestCrashRecovery(t *testing.T) {
	sagas := envInt("ACCORD_CRASH_SAGAS", 1000)
	minKills := envInt("ACCORD_CRASH_KILLS", 5)
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("ACCORD_CRASH_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	rng := rand.New(rand.NewPCG(seed, 0))
	dir := t.TempDir()
	t.Logf("seed %d (ACCORD_CRASH_SEED to replay), dir %s", seed, dir)

	acked := map[int]string{}
	kills := 0
	for run := 0; ; run++ {
		final := kills >= minKills
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(),
			"ACCORD_CRASH_CHILD=1",
			"ACCORD_CRASH_DIR="+dir,
			"ACCORD_CRASH_SAGAS="+strconv.Itoa(sagas),
			"ACCORD_CRASH_FINAL="+strconv.FormatBool(final),
		)
		cmd.Stderr = os.Stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan string, 1024)
		go func() {
			defer close(lines)
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				lines <- sc.Text()
			}
		}()
		var killAt <-chan time.Time
		if !final {
			killAt = time.After(time.Duration(200+rng.IntN(1300)) * time.Millisecond)
		}
		deadline := time.After(8 * time.Minute) // a last guard: a busy machine may take minutes
		finished := false
	read:
		for {
			select {
			case line, ok := <-lines:
				if !ok {
					break read
				}
				if i, id, ok := parseAck(line); ok {
					if prev, seen := acked[i]; seen && prev != id {
						t.Fatalf("saga %d acknowledged as %s, then as %s: the idempotency key did not hold", i, prev, id)
					}
					acked[i] = id
				}
				if line == "all-terminal" {
					finished = true
				}
			case <-killAt:
				_ = cmd.Process.Signal(syscall.SIGKILL)
				kills++
				killAt = nil
			case <-deadline:
				_ = cmd.Process.Kill()
				t.Fatalf("run %d: child did not finish in time", run)
			}
		}
		err = cmd.Wait()
		if final {
			if err != nil || !finished {
				t.Fatalf("final run: %v (all-terminal seen: %v)", err, finished)
			}
			break
		}
		if err == nil && finished {
			// Everything ended before the kill came: go on killing only
			// if the minimum was reached; otherwise the remaining runs kill
			// an idle child, which still tests recovery of ended sagas.
			continue
		}
	}
	verifyCrash(t, dir, sagas, acked, kills)
}

func parseAck(line string) (int, string, bool) {
	f := strings.Fields(line)
	if len(f) != 3 || f[0] != "ack" {
		return 0, "", false
	}
	i, err := strconv.Atoi(f[1])
	return i, f[2], err == nil
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// verifyCrash checks every acknowledged saga against the store and the
// participant's records.
func verifyCrash(t *testing.T, dir string, sagas int, acked map[int]string, kills int) {
	ctx := context.Background()
	store, err := sqlite.Open(ctx, sqlite.Config{Path: filepath.Join(dir, "accord.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	if err := store.IntegrityCheck(ctx); err != nil {
		t.Fatalf("integrity: %v", err)
	}
	ledger, err := openLedger(filepath.Join(dir, "ledger.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer ledger.Close()
	effects, deliveries, err := ledgerEffects(ledger)
	if err != nil {
		t.Fatal(err)
	}
	lost, duplicated, wrong := 0, 0, 0
	if len(acked) != sagas {
		t.Errorf("only %d of %d starts acknowledged", len(acked), sagas)
	}
	for i := range sagas {
		id, ok := acked[i]
		if !ok {
			continue
		}
		rec, err := store.SagaGet(ctx, id)
		if err != nil || !rec.Terminal {
			lost++
			t.Errorf("saga %d (%s): %v, terminal=%v", i, id, err, rec.Terminal)
			continue
		}
		events, err := store.StreamRead(ctx, &storage.StreamReadParams{Stream: "saga/" + id})
		if err != nil {
			t.Fatal(err)
		}
		duplicated += duplicateResults(events)
		fail := failingStep(i)
		want, wantStatus := expectedEffects(fail), "completed"
		if fail != "" {
			wantStatus = "compensated"
		}
		got := effects[id]
		if rec.Status != wantStatus || strings.Join(got, ",") != strings.Join(want, ",") {
			wrong++
			t.Errorf("saga %d (%s, fails at %q): status %s, effects %v; want %s, %v; log: %s", i, id, fail, rec.Status, got, wantStatus, want, failures(events))
		}
	}
	redeliveries := deliveries - countEffects(effects)
	fmt.Printf("recovery: sagas=%d kills=%d lost=%d duplicated=%d wrong=%d deliveries=%d redeliveries=%d\n",
		len(acked), kills, lost, duplicated, wrong, deliveries, redeliveries)
	if lost > 0 || duplicated > 0 || wrong > 0 {
		t.Fatalf("lost=%d duplicated=%d wrong=%d", lost, duplicated, wrong)
	}
}

// expectedEffects is what the participant must have done for a saga that
// fails at step fail: the actions before it, then their compensations in
// reverse order.
func expectedEffects(fail string) []string {
	var out []string
	var done []string
	for _, s := range crashSteps {
		if s == fail {
			for i := len(done) - 1; i >= 0; i-- {
				out = append(out, "compensation:"+done[i])
			}
			return out
		}
		out = append(out, "action:"+s)
		done = append(done, s)
	}
	return out
}

// duplicateResults counts step results recorded more than once in a
// saga's log.
func duplicateResults(events []storage.Event) int {
	seen := map[string]bool{}
	dups := 0
	for _, ev := range events {
		if ev.Type != "step.succeeded" && ev.Type != "step.failed" && ev.Type != "compensation.succeeded" {
			continue
		}
		var body struct {
			Step    string `json:"step"`
			Attempt int    `json:"attempt"`
		}
		_ = json.Unmarshal(ev.Data, &body)
		k := ev.Type + "/" + body.Step + "/" + strconv.Itoa(body.Attempt)
		if ev.Type == "step.succeeded" || ev.Type == "compensation.succeeded" {
			k = ev.Type + "/" + body.Step
		}
		if seen[k] {
			dups++
		}
		seen[k] = true
	}
	return dups
}

// failures summarizes the failed attempts in a saga's log.
func failures(events []storage.Event) string {
	var out []string
	for _, ev := range events {
		if strings.Contains(ev.Type, "failed") || strings.Contains(ev.Type, "timed_out") {
			out = append(out, ev.Type+" "+string(ev.Data))
		}
	}
	return strings.Join(out, "; ")
}

func countEffects(m map[string][]string) int {
	n := 0
	for _, v := range m {
		n += len(v)
	}
	return n
}

// crashChild is the child process of TestCrashRecovery; TestMain runs it
// when ACCORD_CRASH_CHILD is set.
func crashChild() error {
	dir := os.Getenv("ACCORD_CRASH_DIR")
	sagas := envInt("ACCORD_CRASH_SAGAS", 1000)
	final := os.Getenv("ACCORD_CRASH_FINAL") == "true"
	ctx := context.Background()
	store, err := sqlite.Open(ctx, sqlite.Config{Path: filepath.Join(dir, "accord.db"), Partitions: 8})
	if err != nil {
		return err
	}
	ledger, err := openLedger(filepath.Join(dir, "ledger.db"))
	if err != nil {
		return err
	}
	// The workers die with this process at every kill, so a task in
	// flight across several kills is delivered that many times. That is
	// the poison rule's business (TestPoisonTask); here it would turn a
	// saga that must complete into a compensated one, so it is set out of
	// reach.
	e, err := engine.New(engine.Config{Store: store, Logger: quietLogger(), TaskPollInterval: 20 * time.Millisecond, MaxDeliveries: 1000})
	if err != nil {
		return err
	}
	if err := e.Start(ctx); err != nil {
		return err
	}
	if _, _, err := e.RegisterDefinition(ctx, []byte(crashDef)); err != nil {
		return err
	}
	var outMu sync.Mutex
	say := func(format string, args ...any) {
		outMu.Lock()
		defer outMu.Unlock()
		fmt.Printf(format+"\n", args...)
	}
	wctx, stopWorkers := context.WithCancel(ctx)
	defer stopWorkers()
	var wg sync.WaitGroup
	for _, q := range []string{"qa", "qb", "qc"} {
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				crashWorker(wctx, e, ledger, q)
			}()
		}
	}
	// Start every saga (again): the idempotency key makes a repeat return
	// the saga the first start created.
	jobs := make(chan int)
	errs := make(chan error, 32)
	var swg sync.WaitGroup
	for range 32 {
		swg.Add(1)
		go func() {
			defer swg.Done()
			for i := range jobs {
				for {
					res, err := e.StartSaga(ctx, engine.StartParams{
						Definition: "crash", Input: json.RawMessage(fmt.Sprintf(`{"i":%d}`, i)), IdempotencyKey: "saga-" + strconv.Itoa(i),
					})
					if errors.Is(err, engine.ErrOverloaded) {
						time.Sleep(time.Millisecond)
						continue
					}
					if err != nil {
						select {
						case errs <- fmt.Errorf("start %d: %w", i, err):
						default:
						}
						break
					}
					say("ack %d %s", i, res.SagaID)
					break
				}
			}
		}()
	}
	for i := range sagas {
		jobs <- i
	}
	close(jobs)
	swg.Wait()
	select {
	case err := <-errs:
		return err
	default:
	}
	if !final {
		select {} // wait for the kill
	}
	for {
		open, err := store.SagaList(ctx, &storage.SagaListParams{NonTerminal: true, Limit: 1})
		if err != nil {
			return err
		}
		if len(open) == 0 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	stopWorkers()
	wg.Wait()
	if err := e.Stop(ctx); err != nil {
		return err
	}
	_ = ledger.Close()
	_ = store.Close()
	say("all-terminal")
	return nil
}

// crashWorker serves one queue with a slow participant whose effects go
// through the SDK's idempotency guard, in the same transaction as the
// effect: a duplicate delivery is a no-op, a compensation of an action that
// never ran is a recorded no-op, and an action after its compensation is
// refused.
func crashWorker(ctx context.Context, e *engine.Engine, ledger *sql.DB, queue string) {
	for ctx.Err() == nil {
		tasks, err := e.PollTasks(ctx, engine.PollParams{Queue: queue, Max: 4, Visibility: time.Second, Wait: 200 * time.Millisecond})
		if err != nil {
			return
		}
		for _, task := range tasks {
			time.Sleep(time.Duration(2+rand.IntN(15)) * time.Millisecond) // a slow participant
			var in struct{ I int }
			_ = json.Unmarshal(task.Input, &in)
			res := engine.Result{TaskID: task.ID, ClaimToken: task.ClaimToken, Outcome: "success"}
			if _, err := ledger.ExecContext(ctx, `INSERT INTO deliveries(saga, step, phase, attempt) VALUES (?,?,?,?)`, task.SagaID, task.Step, task.Phase, task.Attempt); err != nil {
				return
			}
			if task.Phase == "action" && failingStep(in.I) == task.Step {
				res = engine.Result{TaskID: task.ID, ClaimToken: task.ClaimToken, Outcome: "failure", ErrorCode: "declined"}
			} else {
				refused, err := guardedEffect(ctx, ledger, task)
				if err != nil {
					return // the process is going down, or the ledger is busy: redelivery will redo it
				}
				if refused {
					res = engine.Result{TaskID: task.ID, ClaimToken: task.ClaimToken, Outcome: "failure", ErrorCode: "compensated"}
				}
			}
			if err := e.CompleteTask(ctx, res); err != nil && ctx.Err() == nil {
				// A lost claim or an ended saga: the effect is guarded, so
				// the redelivery that follows is harmless.
				continue
			}
		}
	}
}

var ledgerGuard = func() *guard.Guard {
	g, err := guard.New(guard.Options{Dialect: guard.SQLite})
	if err != nil {
		panic(err)
	}
	return g
}()

// guardedEffect records a step's effect through the guard, in one ledger
// transaction. refused means an action arrived after its compensation.
func guardedEffect(ctx context.Context, ledger *sql.DB, task engine.Task) (refused bool, err error) {
	tx, err := ledger.BeginTx(ctx, nil)
	if err != nil {
		return false, err
	}
	defer tx.Rollback()
	key, phase, err := guard.KeyFromTask(task.SagaID, task.Step, task.Phase)
	if err != nil {
		return false, err
	}
	effect := func() error {
		_, err := tx.ExecContext(ctx, `INSERT INTO effects(saga, step, phase) VALUES (?,?,?)`, task.SagaID, task.Step, task.Phase)
		return err
	}
	if phase == guard.PhaseAction {
		_, _, err = ledgerGuard.Action(ctx, tx, key, func() ([]byte, error) { return nil, effect() })
	} else {
		_, err = ledgerGuard.Compensate(ctx, tx, key, effect)
	}
	if errors.Is(err, guard.ErrCompensated) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	return false, tx.Commit()
}

func openLedger(path string) (*sql.DB, error) {
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_pragma=busy_timeout(10000)&_txlock=immediate")
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(1)
	_, err = db.Exec(`CREATE TABLE IF NOT EXISTS effects(seq INTEGER PRIMARY KEY AUTOINCREMENT, saga TEXT, step TEXT, phase TEXT);
CREATE TABLE IF NOT EXISTS deliveries(saga TEXT, step TEXT, phase TEXT, attempt INTEGER);`)
	if err == nil {
		err = ledgerGuard.Migrate(context.Background(), db)
	}
	if err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// ledgerEffects returns each saga's effects in the order they happened, and
// the number of deliveries.
func ledgerEffects(db *sql.DB) (map[string][]string, int, error) {
	rows, err := db.Query(`SELECT saga, step, phase FROM effects ORDER BY seq`)
	if err != nil {
		return nil, 0, err
	}
	defer rows.Close()
	out := map[string][]string{}
	for rows.Next() {
		var saga, step, phase string
		if err := rows.Scan(&saga, &step, &phase); err != nil {
			return nil, 0, err
		}
		out[saga] = append(out[saga], phase+":"+step)
	}
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM deliveries`).Scan(&n); err != nil {
		return nil, 0, err
	}
	return out, n, rows.Err()
}
