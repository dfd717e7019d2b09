package postgres

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/accord-saga/accord/internal/storage"
)

// Group commit. A durable commit costs two round trips and a flush of the
// write-ahead log, and the engine's loop for a partition waits for each of
// its commits, so with one transaction per commit throughput falls as the
// partition count grows. Instead, Commit hands its params to a coalescer
// worker, and the worker runs every commit queued for it (up to
// maxGroup) in one transaction, with one COMMIT and one flush. Each caller
// gets its own result, and a commit refused by the contract (fenced,
// conflicting, invalid) leaves the others of its group unaffected.
//
// The workers share one queue and run in parallel, each on a connection of
// its own: a worker that is free takes every commit queued, so that under
// light load a commit never waits for a group it is not part of, and
// under heavy load the groups grow. A worker never waits for more commits
// to arrive: a group of one commit has one transaction's latency. Two
// groups may hold commits of one partition; the partition's row lock
// serializes them, and as every group locks its partitions in ascending
// order, groups never wait on each other's partitions in a cycle. (The
// engine waits for each commit of a partition before the next, so in
// practice they rarely meet.)
const (
	// maxGroup bounds the commits of one transaction. Each commit after the
	// first of a group writes inside a savepoint, a subtransaction, and a
	// transaction of more than 64 subtransactions makes every snapshot on
	// the server costlier.
	maxGroup = 64
	// queueSize bounds the commits waiting for a worker; callers block
	// beyond it.
	queueSize = 4 * maxGroup
)

// errClosed fails the commits made after Close, and those still queued
// when it was called.
var errClosed = errors.New("store is closed")

// workerCount is the number of coalescer workers for a pool of maxConns
// connections: half of them, so that reads are not starved.
func workerCount(maxConns int32) int {
	return max(1, int(maxConns)/2)
}

// request is one commit waiting for a worker, or, with fn set, a function
// the worker runs alone between groups.
type request struct {
	ctx  context.Context
	p    *storage.CommitParams
	fn   func()
	res  *storage.CommitResult
	err  error
	done chan struct{} // capacity 1: the worker never blocks on it
}

type worker struct {
	d      *Driver
	queue  chan *request // the Driver's, shared by every worker
	exited chan struct{} // closed once every worker has exited
	done   chan struct{} // this worker's exit
	next   *request      // taken from the queue while filling a group, run after it
	group  []*request
}

// startWorkers starts n coalescer workers; Close stops them.
func (d *Driver) startWorkers(n int) {
	d.quit = make(chan struct{})
	d.exited = make(chan struct{})
	queue := make(chan *request, queueSize)
	d.workers = make([]*worker, n)
	for i := range d.workers {
		w := &worker{
			d:      d,
			queue:  queue,
			exited: d.exited,
			done:   make(chan struct{}),
			group:  make([]*request, 0, maxGroup),
		}
		d.workers[i] = w
		go w.run()
	}
}

// stopWorkers makes the workers fail what is queued and exit, and waits
// for them: a group in flight finishes first.
func (d *Driver) stopWorkers() {
	close(d.quit)
	for _, w := range d.workers {
		<-w.done
	}
	close(d.exited)
}

// submit runs p in a group and waits for its outcome.
func (d *Driver) submit(ctx context.Context, p *storage.CommitParams) (*storage.CommitResult, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	r := &request{ctx: ctx, p: p, done: make(chan struct{}, 1)}
	// Any worker's do: the queue is every worker's.
	if err := d.workers[0].do(ctx, r); err != nil {
		return nil, err
	}
	return r.res, nil
}

// do queues r and waits for its outcome. ctx bounds the wait for room in
// the queue; once r is queued its outcome is always waited for: the worker
// drops a commit whose context has ended before its group starts, so the
// wait is one group at most, and in exchange the caller always learns
// whether its commit was applied.
func (w *worker) do(ctx context.Context, r *request) error {
	select {
	case w.queue <- r:
	case <-w.d.quit:
		return errClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-r.done:
		return r.err
	case <-w.exited:
		// Queued after the workers drained the queue on their way out.
		select {
		case <-r.done:
			return r.err
		default:
			return errClosed
		}
	}
}

func (w *worker) run() {
	defer close(w.done)
	for {
		r := w.next
		w.next = nil
		if r == nil {
			select {
			case r = <-w.queue:
			case <-w.d.quit:
				w.drain()
				return
			}
		}
		if r.fn != nil {
			r.fn()
			r.done <- struct{}{}
			continue
		}
		group := append(w.group[:0], r)
	fill:
		for len(group) < maxGroup {
			select {
			case r := <-w.queue:
				if r.fn != nil {
					w.next = r
					break fill
				}
				group = append(group, r)
			default:
				break fill
			}
		}
		w.runGroup(group)
		for i, r := range group {
			r.done <- struct{}{}
			group[i] = nil
		}
		w.group = group[:0]
	}
}

// drain fails every request still queued.
func (w *worker) drain() {
	if w.next != nil {
		w.next.err = errClosed
		w.next.done <- struct{}{}
		w.next = nil
	}
	for {
		select {
		case r := <-w.queue:
			r.err = errClosed
			r.done <- struct{}{}
		default:
			return
		}
	}
}

// runGroup sets the outcome of every request of group. A group that fails
// on a deadlock or a serialization failure, which say nothing about any
// one of its commits, was rolled back whole; its commits run again one by
// one.
func (w *worker) runGroup(group []*request) {
	calls := make([]*request, 0, len(group))
	for _, r := range group {
		if err := r.ctx.Err(); err != nil {
			r.err = err
			continue
		}
		calls = append(calls, r)
	}
	if len(calls) == 0 {
		return
	}
	if err := w.d.commitGroup(calls); err == nil || len(calls) == 1 {
		if err != nil {
			calls[0].err, calls[0].res = err, nil
		}
		return
	}
	for _, r := range calls {
		r.err, r.res = nil, nil
		if err := r.ctx.Err(); err != nil {
			r.err = err
			continue
		}
		if err := w.d.commitGroup([]*request{r}); err != nil {
			r.err, r.res = err, nil
		}
	}
}

// commitGroup runs calls in one transaction and sets each one's outcome.
// It returns an error, and sets no outcome, only when the transaction
// failed on a deadlock or a serialization failure and was rolled back.
func (d *Driver) commitGroup(calls []*request) error {
	// Not any caller's context: one caller's cancellation must not abort
	// the others' transaction.
	ctx := context.Background()
	conn, err := d.pool.Acquire(ctx)
	if err != nil {
		for _, r := range calls {
			r.err, r.res = err, nil
		}
		return nil
	}
	defer conn.Release()
	g := &group{conn: conn, calls: calls}
	err = g.run(ctx)
	if errors.Is(err, errNeedSavepoints) {
		g.rollback(ctx)
		for _, r := range calls {
			r.err, r.res = nil, nil
		}
		g = &group{conn: conn, calls: calls, savepoints: true}
		err = g.run(ctx)
	}
	if err == nil {
		return nil
	}
	g.rollback(ctx)
	if retryable(err) {
		return err
	}
	// Nothing of the group was committed: a commit that had failed on its
	// own keeps its error, the others get the group's.
	for i, r := range calls {
		if g.plans == nil || !g.refused(i) {
			r.err = err
		}
		r.res = nil
	}
	return nil
}

// errNeedSavepoints fails a group run without savepoints in which one
// commit's statement failed.
var errNeedSavepoints = errors.New("a commit of the group failed in the database")

// retryable reports whether err is a deadlock or a serialization failure:
// the server rolled the transaction back to break a cycle of waits, and
// the same work may well succeed on its own.
func retryable(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == "40P01" || pgErr.Code == "40001")
}

// group is one transaction's commits.
type group struct {
	conn  *pgxpool.Conn
	calls []*request
	// savepoints: each commit writes inside a savepoint of its own. A
	// group first runs without: every check of the contract is made before
	// anything is written, so a statement fails only on a row that another
	// transaction wrote since the checks, or on a task or timer id that
	// exists, which is rare. If one does, the group is rolled back and run
	// again with savepoints, where that commit fails alone.
	savepoints bool

	// Read under the group's locks.
	now     int64 // the group's database time, Unix microseconds
	parts   map[int]partRow
	streams map[string]storage.StreamInfo
	keys    map[[2]string]storage.IdempotencyKey
	topics  map[string]bool
	defs    map[storage.DefinitionRef]bool // live, of those the group starts sagas on

	plans  []*plan // nil for a commit that failed
	failed []bool  // the commits that failed in the database
	v      *view   // after the last plan
}

// refused reports whether call i failed on its own: refused by its checks
// or by the database.
func (g *group) refused(i int) bool {
	return g.failed[i] || g.plans[i] == nil
}

func (g *group) run(ctx context.Context) error {
	if err := g.lock(ctx); err != nil {
		return err
	}
	g.failed = make([]bool, len(g.calls))
	g.planAll()
	from := 0
	for {
		at, err := g.write(ctx, from)
		if err != nil {
			return err
		}
		if at < 0 {
			break
		}
		// Commit at was rolled back to its savepoint; the commits after it
		// are checked again without it.
		from = at + 1
		g.planAll()
	}
	if g.conn.Conn().PgConn().TxStatus() != 'I' {
		return errors.New("transaction still open after commit")
	}
	now := fromMicros(g.now)
	for i, r := range g.calls {
		if pl := g.plans[i]; pl != nil {
			r.res, r.err = &storage.CommitResult{Events: pl.events, Messages: pl.msgs, Now: now}, nil
		}
	}
	return nil
}

// lock sends the first pipeline: it opens the transaction, locks the
// group's partition rows and reads the clock, locks and reads the streams
// and idempotency keys the group's commits name, locks the topics they
// publish to against deletion, and takes the key locks of the messages
// they publish (see bus.go).
func (g *group) lock(ctx context.Context) error {
	var parts []int32
	var names []string
	var scopes, keys []string
	var topics []string
	var defs []storage.DefinitionRef
	var keyLocks keyLockSet
	seenKey := make(map[[2]string]bool)
	for _, r := range g.calls {
		parts = append(parts, int32(r.p.Partition))
		for _, a := range r.p.Appends {
			names = append(names, a.Stream)
		}
		defs = append(defs, r.p.Definitions...)
		for _, m := range r.p.Publishes {
			topics = append(topics, m.Topic)
			keyLocks.add(m.Topic, r.p.Partition, m.Key)
		}
		for _, k := range r.p.IdempotencyKeys {
			if id := [2]string{k.Scope, k.Key}; !seenKey[id] {
				seenKey[id] = true
				scopes, keys = append(scopes, k.Scope), append(keys, k.Key)
			}
		}
	}
	slices.Sort(parts)
	parts = slices.Compact(parts)
	slices.Sort(names)
	names = slices.Compact(names)
	slices.Sort(topics)
	topics = slices.Compact(topics)
	slices.SortFunc(defs, func(a, b storage.DefinitionRef) int {
		return cmp.Or(strings.Compare(a.Name, b.Name), cmp.Compare(a.Version, b.Version))
	})
	defs = slices.Compact(defs)

	b := &pgx.Batch{}
	b.Queue("BEGIN ISOLATION LEVEL READ COMMITTED")
	b.Queue(sqlLockPartitions, parts)
	if len(names) > 0 {
		b.Queue(sqlLockStreams, names)
	}
	if len(keys) > 0 {
		b.Queue(sqlLockIdempotencyKeys, scopes, keys)
	}
	if len(topics) > 0 {
		b.Queue(sqlLockTopics, topics)
	}
	if len(defs) > 0 {
		defNames, defVersions := make([]string, len(defs)), make([]int32, len(defs))
		for i, d := range defs {
			defNames[i], defVersions[i] = d.Name, int32(d.Version)
		}
		b.Queue(sqlLockDefinitions, defNames, defVersions)
	}
	keyLocks.queue(b)
	br := g.conn.SendBatch(ctx, b)
	err := g.readLocks(br, len(names) > 0, len(keys) > 0, len(topics) > 0, len(defs) > 0, keyLocks.len() > 0)
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	return err
}

func (g *group) readLocks(br pgx.BatchResults, streams, keys, topics, defs, keyLocks bool) error {
	if _, err := br.Exec(); err != nil { // BEGIN
		return err
	}
	var parts []int32
	var epochs, expires, heads, msgHeads []int64
	if err := br.QueryRow().Scan(&parts, &epochs, &expires, &heads, &msgHeads, &g.now); err != nil {
		return err
	}
	g.parts = make(map[int]partRow, len(parts))
	for i, p := range parts {
		g.parts[int(p)] = partRow{epoch: epochs[i], expires: expires[i], head: heads[i], msgHead: msgHeads[i]}
	}
	g.streams = make(map[string]storage.StreamInfo)
	if streams {
		rows, err := br.Query()
		if err != nil {
			return err
		}
		infos, err := collect(rows, scanStreamInfo)
		if err != nil {
			return err
		}
		for _, s := range infos {
			g.streams[s.Stream] = s
		}
	}
	g.keys = make(map[[2]string]storage.IdempotencyKey)
	if keys {
		rows, err := br.Query()
		if err != nil {
			return err
		}
		stored, err := collect(rows, scanIdempotencyKey)
		if err != nil {
			return err
		}
		for _, k := range stored {
			g.keys[[2]string{k.Scope, k.Key}] = k
		}
	}
	g.topics = make(map[string]bool)
	if topics {
		rows, err := br.Query()
		if err != nil {
			return err
		}
		names, err := collect(rows, func(r pgx.Rows) (string, error) {
			var name string
			err := r.Scan(&name)
			return name, err
		})
		if err != nil {
			return err
		}
		for _, name := range names {
			g.topics[name] = true
		}
	}
	g.defs = make(map[storage.DefinitionRef]bool)
	if defs {
		rows, err := br.Query()
		if err != nil {
			return err
		}
		live, err := collect(rows, func(r pgx.Rows) (storage.DefinitionRef, error) {
			var d storage.DefinitionRef
			err := r.Scan(&d.Name, &d.Version)
			return d, err
		})
		if err != nil {
			return err
		}
		for _, d := range live {
			g.defs[d] = true
		}
	}
	if keyLocks {
		if _, err := br.Exec(); err != nil {
			return err
		}
	}
	return nil
}

// planAll checks the group's commits in order, each against what the
// database held and what the commits before it that passed write, and
// sets the outcome of each that is refused.
func (g *group) planAll() {
	v := &view{
		heads:    make(map[int]int64, len(g.parts)),
		msgHeads: make(map[int]int64, len(g.parts)),
		streams:  make(map[string]storage.StreamInfo, len(g.streams)),
		keys:     make(map[[2]string]storage.IdempotencyKey, len(g.keys)),
		topics:   g.topics,
		defs:     g.defs,
	}
	for p, row := range g.parts {
		v.heads[p], v.msgHeads[p] = row.head, row.msgHead
	}
	for k, s := range g.streams {
		v.streams[k] = s
	}
	for k, s := range g.keys {
		v.keys[k] = s
	}
	g.plans = make([]*plan, len(g.calls))
	for i, r := range g.calls {
		if g.failed[i] {
			continue
		}
		part, locked := g.parts[r.p.Partition]
		pl, err := newPlan(r.p, part, locked, g.now, v)
		r.err = err
		if err != nil {
			continue
		}
		pl.apply(v)
		g.plans[i] = pl
	}
	g.v = v
}

// Savepoint statements. One name serves every commit: each savepoint is
// released (or rolled back to) before the next commit's is set.
const (
	sqlSavepoint         = "SAVEPOINT c"
	sqlReleaseSavepoint  = "RELEASE SAVEPOINT c"
	sqlRollbackSavepoint = "ROLLBACK TO SAVEPOINT c"
)

// write sends the second pipeline: the writes of the commits from index
// from on that passed their checks, each inside its savepoint if the group
// uses them, the new partition heads, and COMMIT. If a statement of one
// commit fails, the server skips the rest of the pipeline, COMMIT
// included. With savepoints, write then rolls back to that commit's
// savepoint, gives the commit the error, and returns its index, so that
// the commits after it are planned and written again; without, it fails
// with errNeedSavepoints (or, for a group of one commit, with the commit's
// error). It returns -1 once the transaction has ended.
func (g *group) write(ctx context.Context, from int) (int, error) {
	b := &pgx.Batch{}
	var owners []int // the commit each queued statement belongs to; -1: the group
	queue := func(owner int, sql string, args ...any) {
		b.Queue(sql, args...)
		owners = append(owners, owner)
	}
	for i := from; i < len(g.calls); i++ {
		pl := g.plans[i]
		if pl == nil {
			continue
		}
		if g.savepoints {
			queue(i, sqlSavepoint)
		}
		n := b.Len()
		pl.queueWrites(b, g.now)
		for range b.Len() - n {
			owners = append(owners, i)
		}
		if g.savepoints {
			queue(i, sqlReleaseSavepoint)
		}
	}
	var parts []int32
	var heads, msgHeads []int64
	for p, row := range g.parts {
		if h, mh := g.v.heads[p], g.v.msgHeads[p]; h != row.head || mh != row.msgHead {
			parts, heads, msgHeads = append(parts, int32(p)), append(heads, h), append(msgHeads, mh)
		}
	}
	if len(parts) > 0 {
		queue(-1, sqlHeadsSet, parts, heads, msgHeads)
	}
	if slices.ContainsFunc(g.plans, func(pl *plan) bool { return pl != nil }) {
		queue(-1, "COMMIT")
	} else {
		queue(-1, "ROLLBACK")
	}

	br := g.conn.SendBatch(ctx, b)
	var err error
	at := -1
	for i := range b.Len() {
		if _, err = br.Exec(); err != nil {
			at = owners[i]
			break
		}
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		return -1, nil
	}
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		// The connection failed. If the pipeline left, its COMMIT may
		// have been applied.
		if !pgconn.SafeToRetry(err) {
			return -1, fmt.Errorf("outcome unknown: the connection failed after COMMIT was sent: %w", err)
		}
		return -1, err
	}
	if at < 0 || retryable(err) {
		return -1, err
	}
	// One commit's statement failed (a unique violation: a row another
	// transaction wrote since the checks, or a task or timer id that
	// exists). That commit alone fails.
	if !g.savepoints && len(g.calls) > 1 {
		return -1, fmt.Errorf("%w: %w", errNeedSavepoints, err)
	}
	g.failed[at] = true
	g.calls[at].err = err
	g.plans[at] = nil
	if !g.savepoints {
		// The group's one commit: the transaction is rolled back.
		return -1, err
	}
	if _, rerr := g.conn.Exec(ctx, sqlRollbackSavepoint); rerr != nil {
		return -1, fmt.Errorf("rollback to savepoint: %w", rerr)
	}
	return at, nil
}

// rollback ends a failed group's transaction, if one is open. If that
// fails too the connection is closed, so the pool discards it and the
// server aborts the transaction.
func (g *group) rollback(ctx context.Context) {
	pc := g.conn.Conn().PgConn()
	if pc.IsClosed() || pc.TxStatus() == 'I' {
		return
	}
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := g.conn.Exec(rctx, "ROLLBACK"); err != nil {
		_ = g.conn.Conn().Close(rctx)
	}
}
