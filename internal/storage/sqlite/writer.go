package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/accord-saga/accord/internal/storage"
)

// Group commit. SQLite has one writer at a time, and a durable commit costs
// one fsync of the write-ahead log, so the throughput of one-commit-per-
// transaction is the disk's fsync rate. The writer goroutine instead takes
// every write that is queued (up to maxBatch), runs each inside a SAVEPOINT
// of one transaction — a write that fails is rolled back to its savepoint
// alone — and commits them all with one COMMIT, one fsync. Each caller gets
// its own result once the COMMIT is durable. The writer never waits for more
// writes to arrive: under light load a batch is one write and the latency is
// one transaction's.
const (
	// maxBatch bounds the work one transaction holds (and the memory of
	// results waiting on its fsync).
	maxBatch = 256
	// queueSize bounds the writes waiting for the writer; callers block
	// beyond it (back-pressure, not unbounded memory).
	queueSize = 4 * maxBatch
)

// request is one write waiting for the writer. Exactly one of commit and
// fn is set.
type request struct {
	ctx    context.Context
	commit *storage.CommitParams
	result *storage.CommitResult
	fn     func(tx *wtx) error
	err    error
	done   chan struct{} // capacity 1: the writer never blocks on it
}

var requestPool = sync.Pool{New: func() any { return &request{done: make(chan struct{}, 1)} }}

// wtx is what a write sees: the writer's statements, the transaction's
// time and the batch's view of the partitions it touched.
type wtx struct {
	s       *writeStmts
	conn    *sql.Conn // for the statements too rare to prepare
	now     int64     // Unix microseconds, one reading per transaction
	parts   []partState
	touched []int
}

type writer struct {
	conn  *sql.Conn
	stmts writeStmts
	clock *clock
	tx    wtx

	queue  chan *request
	quit   chan struct{}
	exited chan struct{}
	once   sync.Once
	err    error // of closing the connection, read after exited

	batch []*request
	retry []*request // scratch for runBatch

	// walFull is set by the checkpointer when the write-ahead log has
	// outgrown its limit; the writer then truncates it between batches.
	walFull atomic.Bool
}

func startWriter(ctx context.Context, conn *sql.Conn, c *clock, partitions int) (*writer, error) {
	w := &writer{
		conn:   conn,
		clock:  c,
		queue:  make(chan *request, queueSize),
		quit:   make(chan struct{}),
		exited: make(chan struct{}),
		batch:  make([]*request, 0, maxBatch),
		retry:  make([]*request, 0, maxBatch),
	}
	w.tx = wtx{s: &w.stmts, conn: conn, parts: make([]partState, partitions)}
	if err := w.stmts.prepare(ctx, conn); err != nil {
		return nil, err
	}
	go w.run()
	return w, nil
}

// stop makes the writer fail what is queued and exit, waits for it, and
// closes the writer connection. Safe to call twice.
func (w *writer) stop() error {
	w.once.Do(func() { close(w.quit) })
	<-w.exited
	return w.err
}

// do hands r to the writer and waits for its outcome. finished reports
// whether the writer is done with r (false only when the writer stopped
// with r still queued). ctx bounds the wait for room in the queue; once r
// is queued its outcome is always waited for (see below).
func (w *writer) do(ctx context.Context, r *request) (finished bool, err error) {
	r.ctx = ctx
	select {
	case w.queue <- r:
	case <-w.quit:
		return true, ErrClosed
	case <-ctx.Done():
		return true, fmt.Errorf("sqlite: %w", ctx.Err())
	}
	// Once queued, the write is waited for even if ctx ends: the writer
	// skips writes whose context has ended before it reaches them, so the
	// wait is one transaction at most, and in exchange the caller always
	// learns whether the write was committed, and no closure of its runs
	// after it has returned.
	select {
	case <-r.done:
		return true, r.err
	case <-w.exited:
		select {
		case <-r.done:
			return true, r.err
		default:
			return false, ErrClosed
		}
	}
}

// exec runs fn as one write. fn may run more than once: when another write
// of its batch hits a database error, the batch is rolled back and run
// again without it, so fn must set, not accumulate, what it hands back.
func (w *writer) exec(ctx context.Context, fn func(tx *wtx) error) error {
	r := requestPool.Get().(*request)
	r.fn = fn
	finished, err := w.do(ctx, r)
	if finished {
		putRequest(r)
	}
	return err
}

// commit runs a commit as one write.
func (w *writer) commit(ctx context.Context, p *storage.CommitParams) (*storage.CommitResult, error) {
	r := requestPool.Get().(*request)
	r.commit = p
	finished, err := w.do(ctx, r)
	res := r.result
	if finished {
		putRequest(r)
	}
	if err != nil {
		return nil, err
	}
	return res, nil
}

func putRequest(r *request) {
	*r = request{done: r.done}
	requestPool.Put(r)
}

func (w *writer) run() {
	defer close(w.exited)
	defer func() {
		w.stmts.close()
		w.err = w.conn.Close()
	}()
	for {
		select {
		case r := <-w.queue:
			w.batch = append(w.batch[:0], r)
		case <-w.quit:
			w.drain()
			return
		}
	fill:
		for len(w.batch) < maxBatch {
			select {
			case r := <-w.queue:
				w.batch = append(w.batch, r)
			default:
				break fill
			}
		}
		w.runBatch(w.batch)
		for i, r := range w.batch {
			r.done <- struct{}{}
			w.batch[i] = nil
		}
		if w.walFull.Swap(false) {
			w.truncateWAL()
		}
	}
}

// truncateWAL runs a TRUNCATE checkpoint on the writer's connection (see
// walLimitFrames). A checkpoint that cannot finish now (a reader outlived
// the busy timeout) is asked for again by the checkpointer.
func (w *writer) truncateWAL() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var busy, logFrames, checkpointed int
	_ = w.conn.QueryRowContext(ctx, "PRAGMA wal_checkpoint(TRUNCATE)").Scan(&busy, &logFrames, &checkpointed)
}

func (w *writer) drain() {
	for {
		select {
		case r := <-w.queue:
			r.err = ErrClosed
			r.done <- struct{}{}
		default:
			return
		}
	}
}

// runBatch applies batch and sets each request's outcome. When a write hits
// a database error (not an outcome such as a conflict) the transaction is
// rolled back; that write fails with the error and the others run again
// without it, so one bad write cannot fail its neighbours.
func (w *writer) runBatch(batch []*request) {
	for {
		bad := w.tryBatch(batch)
		if bad < 0 {
			return
		}
		failed := batch[bad]
		rest := w.retry[:0]
		for _, r := range batch {
			if r != failed {
				r.err, r.result = nil, nil
				rest = append(rest, r)
			}
		}
		w.retry, batch = rest[:0], rest
		if len(batch) == 0 {
			return
		}
	}
}

// tryBatch applies batch in one transaction. It returns the index of a
// write that hit a database error, after rolling everything back, or -1
// when every write has its outcome.
func (w *writer) tryBatch(batch []*request) int {
	bg := context.Background() // one caller's cancellation must not abort the others' transaction
	if _, err := w.stmts.begin.ExecContext(bg); err != nil {
		failAll(batch, fmt.Errorf("sqlite: begin: %w", err))
		return -1
	}
	tx := &w.tx
	tx.reset(w.clock.now())
	// A lone write needs no savepoint: on its error the whole transaction
	// is rolled back.
	savepoints := len(batch) > 1
	applied := 0
	for i, r := range batch {
		if err := r.ctx.Err(); err != nil {
			r.err = fmt.Errorf("sqlite: %w", err)
			continue
		}
		if savepoints {
			if _, err := w.stmts.savepoint.ExecContext(bg); err != nil {
				w.abort(batch, fmt.Errorf("sqlite: savepoint: %w", err))
				return -1
			}
		}
		err := r.apply(tx)
		if err != nil && !isOutcome(err) {
			// A database error may have rolled the whole transaction back
			// already (SQLite does on I/O errors and a full disk).
			_, _ = w.stmts.rollback.ExecContext(bg)
			r.err, r.result = err, nil
			return i
		}
		if err != nil {
			r.err = err
			if savepoints {
				if _, err := w.stmts.rollbackTo.ExecContext(bg); err != nil {
					w.abort(batch, fmt.Errorf("sqlite: rollback to savepoint: %w", err))
					return -1
				}
			}
		} else {
			applied++
		}
		if savepoints {
			if _, err := w.stmts.release.ExecContext(bg); err != nil {
				w.abort(batch, fmt.Errorf("sqlite: release savepoint: %w", err))
				return -1
			}
		}
	}
	if applied == 0 {
		_, _ = w.stmts.rollback.ExecContext(bg)
		return -1
	}
	if err := tx.flushHeads(); err != nil {
		w.abort(batch, err)
		return -1
	}
	if _, err := w.stmts.commit.ExecContext(bg); err != nil {
		w.abort(batch, fmt.Errorf("sqlite: commit: %w", err))
	}
	return -1
}

// abort rolls the transaction back and fails every write of the batch that
// had not failed on its own: none of them was committed.
func (w *writer) abort(batch []*request, err error) {
	_, _ = w.stmts.rollback.ExecContext(context.Background())
	for _, r := range batch {
		if r.err == nil {
			r.err = err
			r.result = nil
		}
	}
}

func failAll(batch []*request, err error) {
	for _, r := range batch {
		r.err = err
	}
}

func (r *request) apply(tx *wtx) error {
	if r.commit != nil {
		res, err := tx.commit(r.commit)
		r.result = res
		return err
	}
	return r.fn(tx)
}

// isOutcome reports whether err is an answer of the contract (a conflict,
// a fenced epoch, bad params) rather than a failure of the database. An
// outcome is rolled back to its savepoint; a failure aborts the batch.
func isOutcome(err error) bool {
	for _, target := range outcomes {
		if errors.Is(err, target) {
			return true
		}
	}
	return false
}

var outcomes = []error{
	storage.ErrVersionConflict, storage.ErrFenced, storage.ErrLeaseHeld, storage.ErrIdempotencyKeyExists,
	storage.ErrNotFound, storage.ErrWrongPartition, storage.ErrInvalid, storage.ErrTaskClaimLost,
	storage.ErrDefinitionConflict, storage.ErrGroupExists, storage.ErrDefinitionInUse, storage.ErrDefinitionDeleted,
}
