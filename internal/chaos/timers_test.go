package chaos

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/accord-saga/accord/internal/storage/postgres/pgtest"
	"github.com/accord-saga/accord/sdk/client"
)

// t7Queue is the pull queue of the timer scenario's steps. No worker
// polls it, so every attempt ends by its timeout.
const t7Queue = "t7"

// t7Shape is one kind of saga of the timer scenario: its step's attempt
// timeout, and, with a retry, the delay before the second attempt.
type t7Shape struct {
	timeout time.Duration
	retry   time.Duration // 0: one attempt only
}

func (s t7Shape) name() string {
	if s.retry == 0 {
		return fmt.Sprintf("t7_a_%d", s.timeout.Milliseconds())
	}
	return fmt.Sprintf("t7_b_%d_%d", s.timeout.Milliseconds(), s.retry.Milliseconds())
}

// timers is how many timers a saga of this shape fires: the attempt
// timeout, and with a retry the retry delay and the second timeout.
func (s t7Shape) timers() int {
	if s.retry == 0 {
		return 1
	}
	return 3
}

// span is how long a saga of this shape waits at most (retry jitter
// included).
func (s t7Shape) span() time.Duration {
	if s.retry == 0 {
		return s.timeout
	}
	return 2*s.timeout + s.retry*12/10
}

// definition: one step whose action waits in t7Queue, with the shape's
// attempt timeout and retry; its compensation is pushed to the
// participant, which answers it (a no-op), so the saga ends compensated.
func (s t7Shape) definition(participant string) string {
	attempts, retry := 1, ""
	if s.retry > 0 {
		attempts, retry = 2, fmt.Sprintf(", initial_interval: %dms", s.retry.Milliseconds())
	}
	return fmt.Sprintf(`name: %s
version: 1
steps:
  - name: wait
    action: {queue: %s, name: wait}
    compensation: {http: "%s/wait", name: undo_wait}
    input: {fail_at: ""}
    attempt_timeout: %dms
    retry: {max_attempts: %d%s}
    compensation_retry: {initial_interval: 20ms, max_interval: 500ms, max_attempts: 1000}
`, s.name(), t7Queue, participant, s.timeout.Milliseconds(), attempts, retry)
}

// t7Grid is n durations from lo to hi, evenly spaced on a log scale and
// rounded to 100 ms.
func t7Grid(lo, hi time.Duration, n int) []time.Duration {
	out := make([]time.Duration, 0, n)
	for i := range n {
		f := float64(lo) * math.Pow(float64(hi)/float64(lo), float64(i)/float64(n-1))
		d := time.Duration(f).Round(100 * time.Millisecond)
		if len(out) == 0 || d != out[len(out)-1] {
			out = append(out, d)
		}
	}
	return out
}

// TestT7Timers is scenario T7: timers from 1 s to 10 min (full; 1–5 s
// short) driven through sagas, while the server is killed with SIGKILL and
// restarted on the same data as they wait. Accord's timers have no rows
// of their own: they are recorded in each saga's snapshot in the commit
// that arms them and re-armed from it when a partition is taken over. A
// saga here has one step whose action waits in a pull queue that no
// worker polls, so its attempt timeout fires; a quarter of the sagas have
// a second attempt, after a retry delay, which times out too. Each timer
// is checked in the saga's log against the database's clock: the
// recorded time (the commit's database time) of the event it caused is
// compared with the deadline armed (attempt_deadline of step.scheduled,
// retry_at of step.retry_scheduled). At the end: no timer lost (every
// saga ends compensated, with every expected timer fired once), none
// fired early, and the lateness p99 is reported.
func TestT7Timers(t *testing.T) {
	t.Parallel()
	runT7(t, "T7")
}

// TestT7TimersPostgres is TestT7Timers on PostgreSQL (the one pgtest
// names, in a fresh schema), where the database's clock is read through
// the commits. The restarted server keeps its node id, so it takes its
// partitions back at once. Without PostgreSQL the test fails with CI=true
// and is skipped otherwise.
func TestT7TimersPostgres(t *testing.T) {
	t.Parallel()
	dbURL := pgtest.URL(t)
	schema := "accord_chaos_" + randomHex(t)
	t.Cleanup(func() { dropSchema(t, dbURL, schema) })
	runT7(t, "T7-pg", "--database-url", dbURL, "--database-schema", schema, "--node-id", "t7")
}

// runT7 runs the timer scenario on a server started with flags and
// prints its figure line under name.
func runT7(t *testing.T, name string, flags ...string) {
	target, lo, hi, restarts := 300, time.Second, 5*time.Second, 2
	if full() {
		target, lo, hi, restarts = 10000, time.Second, 10*time.Minute, 10
	}
	seed := seed(t)
	rng := rand.New(rand.NewPCG(seed, 7))
	dir := t.TempDir()
	p, err := NewParticipant(filepath.Join(dir, "ledger.db"), ParticipantConfig{Seed: seed})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	srv := startServer(t, filepath.Join(dir, "accord"), flags...)
	ctx := context.Background()

	// The plan: each saga's shape, from the seed. A retrying saga keeps
	// its three timers within a third of the range each, so that it ends
	// by the range's end too.
	grid := t7Grid(lo, hi, 16)
	third := slices.DeleteFunc(slices.Clone(grid), func(d time.Duration) bool { return d > hi/3 })
	var shapes []t7Shape
	planned := 0
	for planned < target {
		s := t7Shape{timeout: grid[rng.IntN(len(grid))]}
		if rng.IntN(4) == 0 {
			s = t7Shape{timeout: third[rng.IntN(len(third))], retry: third[rng.IntN(len(third))]}
		}
		shapes = append(shapes, s)
		planned += s.timers()
	}
	registered := map[string]bool{}
	for _, s := range shapes {
		if registered[s.name()] {
			continue
		}
		registered[s.name()] = true
		if _, _, err := srv.client(t).RegisterDefinition(ctx, []byte(s.definition(p.URL())), "application/yaml"); err != nil {
			t.Fatal(err)
		}
	}

	// Starts, each re-sent until acknowledged (no kill runs meanwhile).
	begin := time.Now()
	ids := make([]string, len(shapes))
	work := make(chan int)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := srv.client(t, client.WithTimeout(10*time.Second))
			for i := range work {
				res, err := c.StartSaga(ctx, client.StartRequest{Definition: shapes[i].name(),
					IdempotencyKey: fmt.Sprintf("t7-%d-%d", seed, i)})
				if err != nil {
					t.Errorf("start %d: %v", i, err)
					continue
				}
				ids[i] = res.ID
			}
		}()
	}
	for i := range shapes {
		work <- i
	}
	close(work)
	wg.Wait()
	if t.Failed() {
		return
	}
	started := time.Now()
	var longest time.Duration
	for _, s := range shapes {
		longest = max(longest, s.span())
	}

	// The killer: SIGKILL at random moments while the timers wait, restart
	// at once.
	moments := make([]time.Duration, restarts)
	for i := range moments {
		moments[i] = time.Duration(rng.Int64N(int64(longest)))
	}
	slices.Sort(moments)
	var down time.Duration // the longest time the server was down
	for i, m := range moments {
		<-time.After(time.Until(started.Add(m))) // the random moment of the next kill
		killed := time.Now()
		srv.kill()
		if err := srv.start(); err != nil {
			t.Fatalf("restart %d: %v", i+1, err)
		}
		down = max(down, time.Since(killed))
	}

	// Every saga ends, with a last guard of five minutes past its longest
	// timer.
	c := srv.client(t)
	const guard = 5 * time.Minute
	wctx, cancel := context.WithDeadline(ctx, started.Add(longest+guard))
	defer cancel()
	stuck := waitTerminal(wctx, c, ids)

	// Every timer in every log: fired once, not before its deadline.
	var mu sync.Mutex
	var late []time.Duration
	var problems []string
	lost, early, timers, wrong := 0, 0, 0, 0
	idx := make(chan int)
	var rg sync.WaitGroup
	for range 8 {
		rg.Add(1)
		go func() {
			defer rg.Done()
			for i := range idx {
				got, err := t7Timers(ctx, c, ids[i])
				mu.Lock()
				if err != nil {
					problems = append(problems, fmt.Sprintf("saga %s: %v", ids[i], err))
					lost += shapes[i].timers()
					mu.Unlock()
					continue
				}
				if got.status != client.StatusCompensated {
					wrong++
					problems = append(problems, fmt.Sprintf("saga %s (%s): status %s, want compensated", ids[i], shapes[i].name(), got.status))
				}
				if n := len(got.fired); n < shapes[i].timers() {
					lost += shapes[i].timers() - n
					problems = append(problems, fmt.Sprintf("saga %s (%s): %d timers fired, want %d", ids[i], shapes[i].name(), n, shapes[i].timers()))
				} else if n > shapes[i].timers() {
					problems = append(problems, fmt.Sprintf("saga %s (%s): %d timers fired, want %d", ids[i], shapes[i].name(), n, shapes[i].timers()))
				}
				for _, f := range got.fired {
					timers++
					if f.at.Before(f.deadline.Truncate(time.Microsecond)) {
						early++
						problems = append(problems, fmt.Sprintf("saga %s: %s fired at %s, %s before its deadline %s",
							ids[i], f.what, f.at.Format(time.RFC3339Nano), f.deadline.Sub(f.at), f.deadline.Format(time.RFC3339Nano)))
						continue
					}
					late = append(late, f.at.Sub(f.deadline))
				}
				mu.Unlock()
			}
		}()
	}
	for i := range ids {
		idx <- i
	}
	close(idx)
	rg.Wait()
	slices.Sort(late)
	pct := func(q float64) time.Duration {
		if len(late) == 0 {
			return 0
		}
		return late[min(len(late)-1, int(math.Ceil(q*float64(len(late))))-1)]
	}
	line := fmt.Sprintf("%s seed=%d sagas=%d timers=%d range=%s-%s restarts=%d longest_down_ms=%d fired=%d lost=%d early=%d wrong_status=%d stuck=%d lateness_p50_ms=%d lateness_p99_ms=%d lateness_max_ms=%d elapsed_s=%.0f",
		name, seed, len(ids), planned, lo, hi, restarts, down.Milliseconds(), timers, lost, early, wrong, len(stuck),
		pct(0.50).Milliseconds(), pct(0.99).Milliseconds(), pct(1).Milliseconds(), time.Since(begin).Seconds())
	t.Log(line)
	fmt.Println(line)
	for i, pr := range problems {
		if i == 50 {
			t.Errorf("… and %d more", len(problems)-50)
			break
		}
		t.Error(pr)
	}
	if len(stuck) > 0 {
		t.Errorf("%d sagas still running %s past their longest timer, the first %s", len(stuck), guard, stuck[0])
	}
	// Generous: the machine is shared and the server restarts under the
	// timers. A timer due while the server was down fires when it is back,
	// so the bound counts the longest restart (which a busy machine
	// stretches); a timer later than that by more than 10 s is as good as
	// lost.
	if p, bound := pct(0.99), down+10*time.Second; p > bound {
		t.Errorf("lateness p99 %s, over %s (10s past the longest restart, %s)", p, bound, down)
	}
	if t.Failed() {
		t.Logf("server log (tail):\n%s", srv.log.String())
	}
}

// t7Fired is one timer found in a saga's log: the deadline armed, and
// the database time of the event its firing recorded.
type t7Fired struct {
	what     string
	deadline time.Time
	at       time.Time
}

type t7Saga struct {
	status string
	fired  []t7Fired
}

// t7Timers reads a saga and its log and pairs every timer armed with the
// event that its firing recorded.
func t7Timers(ctx context.Context, c *client.Client, id string) (t7Saga, error) {
	sg, err := c.GetSaga(ctx, id)
	if err != nil {
		return t7Saga{}, err
	}
	out := t7Saga{status: sg.Status}
	var events []client.SagaEvent
	for cursor := ""; ; {
		page, err := c.SagaEvents(ctx, id, client.EventOptions{Cursor: cursor})
		if err != nil {
			return out, err
		}
		events = append(events, page.Items...)
		if cursor = page.NextCursor; cursor == "" {
			break
		}
	}
	type data struct {
		Step            string    `json:"step"`
		Attempt         int       `json:"attempt"`
		AttemptDeadline time.Time `json:"attempt_deadline"`
		RetryAt         time.Time `json:"retry_at"`
		Timeout         string    `json:"timeout"`
	}
	attemptDeadline := map[int]time.Time{}
	var retryAt time.Time
	for _, ev := range events {
		var d data
		if err := json.Unmarshal(ev.Data, &d); err != nil {
			return out, fmt.Errorf("event %d: %w", ev.Position, err)
		}
		if d.Step != "wait" {
			continue
		}
		switch ev.Type {
		case "step.scheduled":
			attemptDeadline[d.Attempt] = d.AttemptDeadline
			if !retryAt.IsZero() {
				out.fired = append(out.fired, t7Fired{what: "retry delay", deadline: retryAt, at: ev.Time})
				retryAt = time.Time{}
			}
		case "step.retry_scheduled":
			retryAt = d.RetryAt
		case "step.timed_out":
			dl, ok := attemptDeadline[d.Attempt]
			if d.Timeout != "attempt" || !ok || dl.IsZero() {
				return out, fmt.Errorf("event %d: %s timeout of attempt %d, armed deadline %v", ev.Position, d.Timeout, d.Attempt, dl)
			}
			out.fired = append(out.fired, t7Fired{what: "attempt " + strconv.Itoa(d.Attempt) + " timeout", deadline: dl, at: ev.Time})
		}
	}
	return out, nil
}

// TestT7ReconcilerRepairsTask is the second half of T7. Timers have no
// rows to delete (see TestT7Timers); the rows a saga waits on are its pull
// tasks. A task row deleted by hand from the store while the server runs
// is re-created by the reconciler (every minute, the server's fixed
// interval), and the saga then completes through it.
//
// The reconciler's minute runs from the server's start, so the test
// starts the server and deletes the row before it calls t.Parallel: the
// minute then passes while the other scenarios run.
func TestT7ReconcilerRepairsTask(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "accord")
	srv := startServer(t, data)
	c := srv.client(t)
	ctx := context.Background()
	def := `name: t7_repair
version: 1
steps:
  - name: wait
    action: {queue: t7r, name: wait}
    compensation: {queue: t7r, name: undo_wait}
    attempt_timeout: 10m
`
	if _, _, err := c.RegisterDefinition(ctx, []byte(def), "application/yaml"); err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	res, err := c.StartSaga(ctx, client.StartRequest{Definition: "t7_repair"})
	if err != nil {
		t.Fatal(err)
	}
	page, err := c.SagaEvents(ctx, res.ID, client.EventOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var taskID string
	for _, ev := range page.Items {
		var d struct {
			TaskID string `json:"task_id"`
		}
		if ev.Type == "step.scheduled" && json.Unmarshal(ev.Data, &d) == nil {
			taskID = d.TaskID
		}
	}
	if taskID == "" {
		t.Fatalf("no step.scheduled with a task id in the log of %s", res.ID)
	}

	// Delete the row in the store's file, beside the running server.
	db, err := sql.Open("sqlite", "file:"+filepath.Join(data, "accord.db")+"?_pragma=busy_timeout(10000)&_txlock=immediate")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows := func() int {
		var n int
		if err := db.QueryRowContext(ctx, "SELECT count(*) FROM tasks WHERE id = ?", taskID).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := rows(); n != 1 {
		t.Fatalf("task %s: %d rows before the delete, want 1", taskID, n)
	}
	if _, err := db.ExecContext(ctx, "DELETE FROM tasks WHERE id = ?", taskID); err != nil {
		t.Fatal(err)
	}
	deleted := time.Now()
	if tasks, err := c.Poll(ctx, "t7r", client.PollOptions{Max: 10}); err != nil || len(tasks) != 0 {
		t.Fatalf("poll after the delete: %d tasks, %v; want none", len(tasks), err)
	}
	t.Parallel()

	// The reconciler runs every minute from the partition's start.
	var tasks []client.Task
	for until := time.Now().Add(90 * time.Second); time.Now().Before(until); {
		tasks, err = c.Poll(ctx, "t7r", client.PollOptions{Max: 10, Wait: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if len(tasks) > 0 {
			break
		}
	}
	repaired := time.Since(deleted)
	if len(tasks) != 1 || tasks[0].ID != taskID || tasks[0].SagaID != res.ID {
		t.Fatalf("90 s after the delete, the poll gave %+v; want task %s of saga %s", tasks, taskID, res.ID)
	}
	if err := c.Complete(ctx, client.TaskResult{TaskID: taskID, ClaimToken: tasks[0].ClaimToken, Outcome: client.OutcomeSuccess}); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	sg, err := c.WaitSaga(wctx, res.ID)
	if err != nil || sg.Status != client.StatusCompleted {
		t.Fatalf("saga %s after the repaired task completed: %+v, %v", res.ID, sg, err)
	}
	reconciled := metric(t, srv, "accord_reconciled_total")
	line := fmt.Sprintf("T7-repair task_deleted=1 repaired_after_s=%.1f reconciled_total=%s saga=%s elapsed_s=%.0f",
		repaired.Seconds(), reconciled, sg.Status, time.Since(begin).Seconds())
	t.Log(line)
	fmt.Println(line)
	if reconciled != "1" {
		t.Errorf("accord_reconciled_total = %s, want 1", reconciled)
	}
}

// metric reads one unlabelled value from the server's /metrics.
func metric(t *testing.T, srv *server, name string) string {
	t.Helper()
	url, _, _ := srv.current()
	res, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`).FindSubmatch(b)
	if m == nil {
		return "absent"
	}
	return string(m[1])
}
