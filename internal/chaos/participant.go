package chaos

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	_ "modernc.org/sqlite" // the ledger's driver

	"github.com/accord-saga/accord/sdk/guard"
)

// Call outcomes, as the ledger records them.
const (
	// OutcomeApplied: the step's action or compensation ran; its effect
	// committed with the guard's record and this ledger row.
	OutcomeApplied = "applied"
	// OutcomeReplayed: a repeated action, answered from the guard's record
	// without running again.
	OutcomeReplayed = "replayed"
	// OutcomeNoop: a compensation that had nothing to do (the action never
	// ran, or the compensation already ran).
	OutcomeNoop = "noop"
	// OutcomeDeclined: the action is the saga's planned business failure
	// (422); nothing done.
	OutcomeDeclined = "declined"
	// OutcomeRefused: an action that arrived after its compensation,
	// refused (409).
	OutcomeRefused = "refused"
	// OutcomeInjected: an injected transient error (503) before anything
	// was done.
	OutcomeInjected = "injected_error"
	// OutcomeDown: the participant was down (503).
	OutcomeDown = "down"
	// OutcomeFailed: the participant's own database failed; nothing
	// committed (503).
	OutcomeFailed = "failed"
	// OutcomeBad: a request that broke the push contract (400).
	OutcomeBad = "bad_request"
)

// ParticipantConfig sets a participant simulator's faults.
type ParticipantConfig struct {
	// ErrorRate is the share of calls answered 503 at random, before
	// anything is done.
	ErrorRate float64
	// Latency and LatencyJitter: every call waits Latency plus a random
	// part of LatencyJitter before it is served.
	Latency, LatencyJitter time.Duration
	// Seed seeds the random errors and latencies.
	Seed uint64
}

// Participant is an HTTP push participant on loopback that serves every
// step of every saga sent to it. An action whose step is named by the
// input's fail_at is declined (422); every other action and every
// compensation applies its effect through the idempotency guard, in the
// same SQLite transaction as its ledger row, so effects are exactly once
// whatever Accord redelivers. Every call received is in the ledger, with
// its outcome.
type Participant struct {
	cfg   ParticipantConfig
	db    *sql.DB
	guard *guard.Guard
	ln    net.Listener
	srv   *http.Server

	rngMu sync.Mutex
	rng   *rand.Rand

	downUntil   atomic.Int64 // unix nanoseconds; 0: up
	downForever atomic.Bool

	mu     sync.Mutex
	calls  int64
	notify chan struct{} // closed and replaced on every call
}

// NewParticipant opens (or creates) the ledger at path and starts serving
// on a free loopback port.
func NewParticipant(path string, cfg ParticipantConfig) (*Participant, error) {
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_pragma=busy_timeout(10000)&_txlock=immediate")
	if err != nil {
		return nil, fmt.Errorf("chaos: open ledger: %w", err)
	}
	db.SetMaxOpenConns(1)
	p := &Participant{cfg: cfg, db: db, rng: rand.New(rand.NewPCG(cfg.Seed, 0x6c6564676572)), notify: make(chan struct{})}
	if err := p.migrate(); err != nil {
		db.Close()
		return nil, err
	}
	p.ln, err = net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("chaos: participant listen: %w", err)
	}
	p.srv = &http.Server{Handler: p, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = p.srv.Serve(p.ln) }()
	return p, nil
}

func (p *Participant) migrate() error {
	ctx := context.Background()
	if _, err := p.db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS calls(
		seq INTEGER PRIMARY KEY AUTOINCREMENT,
		at_ns INTEGER NOT NULL,
		saga TEXT NOT NULL,
		step TEXT NOT NULL,
		phase TEXT NOT NULL,
		attempt INTEGER NOT NULL,
		idempotency_key TEXT NOT NULL,
		epoch INTEGER NOT NULL,
		task_id TEXT NOT NULL,
		outcome TEXT NOT NULL,
		applied INTEGER NOT NULL)`); err != nil {
		return fmt.Errorf("chaos: create ledger: %w", err)
	}
	g, err := guard.New(guard.Options{Dialect: guard.SQLite})
	if err != nil {
		return fmt.Errorf("chaos: guard: %w", err)
	}
	if err := g.Migrate(ctx, p.db); err != nil {
		return fmt.Errorf("chaos: migrate guard: %w", err)
	}
	p.guard = g
	return nil
}

// URL is the participant's base URL; every path serves the same steps.
func (p *Participant) URL() string { return "http://" + p.ln.Addr().String() }

// Close stops serving and closes the ledger.
func (p *Participant) Close() error {
	err := p.srv.Close()
	return errors.Join(err, p.db.Close())
}

// DownUntil makes the participant answer 503 to every call until t.
func (p *Participant) DownUntil(t time.Time) { p.downUntil.Store(t.UnixNano()) }

// SetDown makes the participant answer 503 to every call until SetDown
// (false).
func (p *Participant) SetDown(down bool) { p.downForever.Store(down) }

func (p *Participant) down(now time.Time) bool {
	return p.downForever.Load() || now.UnixNano() < p.downUntil.Load()
}

// Calls is the number of calls received so far.
func (p *Participant) Calls() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.calls
}

// WaitCalls waits until more than n calls have been received, or ctx
// ends.
func (p *Participant) WaitCalls(ctx context.Context, n int64) error {
	for {
		p.mu.Lock()
		calls, ch := p.calls, p.notify
		p.mu.Unlock()
		if calls > n {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("chaos: waiting for call %d: %w", n+1, ctx.Err())
		}
	}
}

func (p *Participant) received() {
	p.mu.Lock()
	p.calls++
	close(p.notify)
	p.notify = make(chan struct{})
	p.mu.Unlock()
}

// pushBody is the part of a push request the participant reads.
type pushBody struct {
	SagaID string          `json:"saga_id"`
	Step   string          `json:"step"`
	Phase  string          `json:"phase"`
	Input  json.RawMessage `json:"input"`
}

// call is one received call, as the ledger records it.
type call struct {
	saga, step, phase, key, taskID string
	attempt, epoch                 int64
}

func (p *Participant) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.received()
	now := time.Now()
	// The call is recorded and served even if Accord goes away meanwhile:
	// an effect that commits after its caller died is the case redelivery
	// must handle.
	ctx := context.WithoutCancel(r.Context())
	c := call{
		saga: r.Header.Get(guard.HeaderSagaID), step: r.Header.Get(guard.HeaderStep),
		phase: r.Header.Get(guard.HeaderPhase), key: r.Header.Get(guard.HeaderIdempotencyKey),
		taskID: r.Header.Get("Accord-Task-Id"),
	}
	c.attempt, _ = strconv.ParseInt(r.Header.Get("Accord-Attempt"), 10, 64)
	c.epoch, _ = strconv.ParseInt(r.Header.Get("Accord-Epoch"), 10, 64)
	if p.down(now) {
		p.answer(ctx, w, c, OutcomeDown, http.StatusServiceUnavailable)
		return
	}
	injected, wait := p.draw()
	if wait > 0 {
		time.Sleep(wait) // the injected latency
	}
	if injected {
		p.answer(ctx, w, c, OutcomeInjected, http.StatusServiceUnavailable)
		return
	}
	var body pushBody
	key, phase, err := guard.KeyFromRequest(r)
	if err == nil {
		err = json.NewDecoder(r.Body).Decode(&body)
	}
	if err == nil && (body.SagaID != key.SagaID || body.Step != key.Step || body.Phase != string(phase)) {
		err = fmt.Errorf("body names %s/%s/%s, headers %s/%s", body.SagaID, body.Step, body.Phase, key, phase)
	}
	if err != nil {
		p.answer(ctx, w, c, OutcomeBad, http.StatusBadRequest)
		return
	}
	if phase == guard.PhaseAction && body.Step == failAt(body.Input) {
		p.answer(ctx, w, c, OutcomeDeclined, http.StatusUnprocessableEntity)
		return
	}
	switch err := p.apply(ctx, c, key, phase); {
	case err == nil:
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"step":%q,"phase":%q}`, c.step, c.phase)
	case errors.Is(err, guard.ErrCompensated):
		p.answer(ctx, w, c, OutcomeRefused, http.StatusConflict)
	default:
		// Nothing committed; Accord retries.
		p.answer(ctx, w, c, OutcomeFailed, http.StatusServiceUnavailable)
	}
}

// draw decides a call's injected error and latency.
func (p *Participant) draw() (bool, time.Duration) {
	p.rngMu.Lock()
	defer p.rngMu.Unlock()
	wait := p.cfg.Latency
	if p.cfg.LatencyJitter > 0 {
		wait += time.Duration(p.rng.Int64N(int64(p.cfg.LatencyJitter)))
	}
	return p.cfg.ErrorRate > 0 && p.rng.Float64() < p.cfg.ErrorRate, wait
}

// apply runs an action or a compensation through the guard, with its
// ledger row in the same transaction.
func (p *Participant) apply(ctx context.Context, c call, key guard.Key, phase guard.Phase) error {
	tx, err := p.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("chaos: begin: %w", err)
	}
	defer tx.Rollback()
	var outcome string
	if phase == guard.PhaseAction {
		_, ran, err := p.guard.Action(ctx, tx, key, func() ([]byte, error) {
			return []byte(`{"done":true}`), nil
		})
		if err != nil {
			return fmt.Errorf("chaos: action %s: %w", key, err)
		}
		outcome = OutcomeReplayed
		if ran {
			outcome = OutcomeApplied
		}
	} else {
		ran, err := p.guard.Compensate(ctx, tx, key, func() error { return nil })
		if err != nil {
			return fmt.Errorf("chaos: compensate %s: %w", key, err)
		}
		outcome = OutcomeNoop
		if ran {
			outcome = OutcomeApplied
		}
	}
	if err := insertCall(ctx, tx, c, outcome); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("chaos: commit %s: %w", key, err)
	}
	return nil
}

// answer records a call that applied nothing and answers it with status.
func (p *Participant) answer(ctx context.Context, w http.ResponseWriter, c call, outcome string, status int) {
	if err := insertCall(ctx, p.db, c, outcome); err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	if status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "0")
		http.Error(w, outcome, status)
		return
	}
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"type":"about:blank","title":%q,"code":%q}`, outcome, outcome)
}

type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

func insertCall(ctx context.Context, db execer, c call, outcome string) error {
	applied := 0
	if outcome == OutcomeApplied {
		applied = 1
	}
	_, err := db.ExecContext(ctx, `INSERT INTO calls(at_ns, saga, step, phase, attempt, idempotency_key, epoch, task_id, outcome, applied)
		VALUES (?,?,?,?,?,?,?,?,?,?)`, time.Now().UnixNano(), c.saga, c.step, c.phase, c.attempt, c.key, c.epoch, c.taskID, outcome, applied)
	if err != nil {
		return fmt.Errorf("chaos: record call: %w", err)
	}
	return nil
}

// failAt reads the planned failure from a step's input: an action gets
// {"fail_at": ...}; a compensation {"input": {"fail_at": ...}, ...}.
func failAt(input json.RawMessage) string {
	var in struct {
		FailAt string `json:"fail_at"`
		Input  *struct {
			FailAt string `json:"fail_at"`
		} `json:"input"`
	}
	_ = json.Unmarshal(input, &in)
	if in.Input != nil {
		return in.Input.FailAt
	}
	return in.FailAt
}

// Call is one ledger row.
type Call struct {
	Seq            int64
	At             time.Time
	SagaID         string
	Step           string
	Phase          string
	Attempt        int
	IdempotencyKey string
	Epoch          int64
	TaskID         string
	Outcome        string
	Applied        bool
}

// Ledger reads every call received, in order.
func (p *Participant) Ledger(ctx context.Context) ([]Call, error) {
	rows, err := p.db.QueryContext(ctx, `SELECT seq, at_ns, saga, step, phase, attempt, idempotency_key, epoch, task_id, outcome, applied FROM calls ORDER BY seq`)
	if err != nil {
		return nil, fmt.Errorf("chaos: read ledger: %w", err)
	}
	defer rows.Close()
	var out []Call
	for rows.Next() {
		var c Call
		var at int64
		if err := rows.Scan(&c.Seq, &at, &c.SagaID, &c.Step, &c.Phase, &c.Attempt, &c.IdempotencyKey, &c.Epoch, &c.TaskID, &c.Outcome, &c.Applied); err != nil {
			return nil, fmt.Errorf("chaos: read ledger: %w", err)
		}
		c.At = time.Unix(0, at)
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("chaos: read ledger: %w", err)
	}
	return out, nil
}

// CountOutcome is the number of calls recorded with outcome since t
// (zero: all).
func (p *Participant) CountOutcome(ctx context.Context, outcome string, since time.Time) (int, error) {
	var n int
	if err := p.db.QueryRowContext(ctx, `SELECT count(*) FROM calls WHERE outcome = ? AND at_ns >= ?`, outcome, since.UnixNano()).Scan(&n); err != nil {
		return 0, fmt.Errorf("chaos: count %s: %w", outcome, err)
	}
	return n, nil
}
