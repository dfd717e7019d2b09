package engine

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/accord-saga/accord/internal/saga"
	"github.com/accord-saga/accord/internal/storage"
)

// partition is one owned partition: its loop, its active sagas and timers.
// Everything but the inbox and the stop channel is touched only by the
// loop goroutine.
type partition struct {
	e     *Engine
	id    int
	epoch int64

	inbox    chan *request
	stopCh   chan struct{}
	stopOnce sync.Once
	// stopErr says why the loop stopped (ErrStopped, or ErrNotOwner when
	// the partition was fenced or its lease lost); set before stopCh is
	// closed, read only after.
	stopErr error
	done    chan struct{}

	sagas  map[string]*sagaEntry
	timers *timerHeap
	// recentKeys caches idempotency keys this loop stored, so a burst of
	// retried starts does not read the store for each.
	recentKeys map[string]cachedKey
	// reload holds sagas whose last commit failed: it may have been
	// written all the same (an ambiguous commit: the link broke at COMMIT),
	// so their durable state is unknown here until they are read back.
	reload map[string]bool
	// redispatch holds the push attempts found in flight at recovery,
	// dispatched once the loop runs.
	redispatch []Task
	// self holds inputs the loop gives itself (topic steps' results), run
	// as its next batch.
	self []*request
	// active mirrors len(sagas) for the metrics gauge, which runs on
	// another goroutine.
	active atomic.Int64
	// quarantined holds the sagas of this partition set aside because
	// their stored state cannot be decoded (see quarantine.go);
	// quarantinedN mirrors its size for the metrics gauge.
	quarantined  map[string]bool
	quarantinedN atomic.Int64
	// dbOffset is the database clock minus the local clock, as last seen.
	dbOffset time.Duration
}

// sagaEntry is an active saga held in memory.
type sagaEntry struct {
	id      string
	def     *saga.Definition
	state   *saga.State
	version int64 // stream version: events appended so far
	key     string
}

type requestKind int

const (
	reqStart requestKind = iota
	reqResult
	reqTimer
	reqCancel
	reqOperatorRetry
	reqPublish
	// reqSync changes nothing: its reply comes once every input queued
	// before it, and every timer due when it is taken, is durable. Tests
	// use it to wait for a quiet engine after moving its clock.
	reqSync
	reqDiscard
)

// request is one input for a partition loop. reply, if set, receives the
// outcome once the input's effects are durable (or have failed).
type request struct {
	kind   requestKind
	sagaID string

	start   *StartParams
	result  *saga.Input // for reqResult: the core input; Now is set by the loop
	taskID  string      // for reqResult: the task whose result this is
	timerID string      // for reqTimer
	reason  string      // for reqCancel

	publish   []PublishMessage // for reqPublish
	published []PublishResult  // for reqPublish: set by the loop before its reply

	reply chan reply
}

type reply struct {
	sagaID  string
	created bool
	err     error
}

// startPartition loads a partition's unfinished sagas and timers and starts
// its loop.
func (e *Engine) startPartition(ctx context.Context, lease storage.Lease) (*partition, error) {
	p := &partition{
		e:           e,
		id:          lease.Partition,
		epoch:       lease.Epoch,
		inbox:       make(chan *request, e.cfg.InboxSize),
		stopCh:      make(chan struct{}),
		done:        make(chan struct{}),
		sagas:       map[string]*sagaEntry{},
		timers:      newTimerHeap(),
		recentKeys:  map[string]cachedKey{},
		reload:      map[string]bool{},
		quarantined: map[string]bool{},
	}
	if err := p.recover(ctx); err != nil {
		return nil, err
	}
	e.mu.Lock()
	if e.stopping {
		e.mu.Unlock()
		return nil, ErrStopped
	}
	e.owned[p.id] = p
	e.mu.Unlock()
	// Attempts that were in flight when the partition's last owner stopped
	// may or may not have reached their participants: call them again
	// (delivery is at least once; participants deduplicate).
	for _, t := range p.redispatch {
		e.metrics.pushRedispatched.Inc()
		e.pushes.dispatch(t)
	}
	p.redispatch = nil
	// Logged before the loop starts: from then on p.sagas is the loop's.
	e.log.Debug("partition taken", "partition", p.id, "epoch", p.epoch, "sagas", len(p.sagas))
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		defer close(p.done)
		p.run()
	}()
	return p, nil
}

// stop asks the loop to finish its current batch and exit, and waits for
// it; callers still waiting get ErrStopped.
func (p *partition) stop() {
	p.halt(ErrStopped)
	<-p.done
}

// halt closes the stop channel, the first time with err as the reason every
// caller still waiting on the loop is given.
func (p *partition) halt(err error) {
	p.stopOnce.Do(func() {
		p.stopErr = err
		close(p.stopCh)
	})
}

// send queues a request. Starts and publishes fail fast when the inbox is
// full; other inputs wait for room (their senders can wait, and dropping
// them would only delay a saga).
func (p *partition) send(ctx context.Context, r *request) error {
	// A stopped loop answers with its reason, not a coin toss between
	// the reason and a queue nobody reads.
	select {
	case <-p.stopCh:
		return p.stopErr
	default:
	}
	if r.kind == reqStart || r.kind == reqPublish {
		select {
		case p.inbox <- r:
			return nil
		case <-p.stopCh:
			return p.stopErr
		default:
			return ErrOverloaded
		}
	}
	select {
	case p.inbox <- r:
		return nil
	case <-p.stopCh:
		return p.stopErr
	case <-ctx.Done():
		return ctx.Err()
	}
}

// call sends a request and waits for its reply.
func (p *partition) call(ctx context.Context, r *request) (reply, error) {
	r.reply = make(chan reply, 1)
	if err := p.send(ctx, r); err != nil {
		return reply{}, err
	}
	select {
	case rep := <-r.reply:
		return rep, rep.err
	case <-p.done:
		// The loop may have answered just before it stopped.
		select {
		case rep := <-r.reply:
			return rep, rep.err
		default:
			return reply{}, p.stopErr
		}
	case <-ctx.Done():
		return reply{}, ctx.Err()
	}
}

func (p *partition) run() {
	clk := p.e.clock
	timer := clk.NewTimer(time.Hour)
	defer timer.Stop()
	reconcile := clk.NewTicker(p.e.cfg.ReconcileInterval)
	defer reconcile.Stop()
	reload := clk.NewTicker(reloadInterval)
	defer reload.Stop()
	batch := make([]*request, 0, p.e.cfg.MaxBatch)
	for {
		if len(p.self) > 0 {
			n := min(len(p.self), p.e.cfg.MaxBatch)
			batch = append(batch[:0], p.self[:n]...)
			p.self = p.self[n:]
			if p.process(batch) {
				p.fenced()
				return
			}
			continue
		}
		p.armTimer(timer)
		select {
		case <-p.stopCh:
			p.failQueued(p.stopErr)
			return
		case r := <-p.inbox:
			batch = append(batch[:0], r)
		drain:
			for len(batch) < p.e.cfg.MaxBatch {
				select {
				case r := <-p.inbox:
					batch = append(batch, r)
				default:
					break drain
				}
			}
			// Timers due now join the batch: they are owed an answer
			// as much as the inputs queued (and a reqSync promises it).
			batch = p.dueTimers(batch)
		case <-timer.C():
			batch = p.dueTimers(batch[:0])
		case <-reload.C():
			p.reloadFailed()
			continue
		case <-reconcile.C():
			if w := p.reconcileWork(); w != nil && p.commit(w, 0) {
				p.fenced()
				return
			}
			continue
		}
		if len(batch) == 0 {
			continue
		}
		if p.process(batch) {
			p.fenced()
			return
		}
	}
}

// fenced retires a loop whose commit was fenced: another node holds the
// partition now.
func (p *partition) fenced() {
	p.e.log.Warn("partition fenced; stopping its loop", "partition", p.id, "epoch", p.epoch)
	p.e.mu.Lock()
	if p.e.owned[p.id] == p {
		delete(p.e.owned, p.id)
	}
	p.e.mu.Unlock()
	p.e.pushes.forgetPartition(p.id)
	p.halt(errNotOwner(p.id))
	p.failQueued(p.stopErr)
}

// failQueued answers every request still queued.
func (p *partition) failQueued(err error) {
	for {
		select {
		case r := <-p.inbox:
			if r.reply != nil {
				r.reply <- reply{err: err}
			}
		default:
			return
		}
	}
}

// process steps every request of a batch through the core and commits the
// lot at once. It reports whether the partition was fenced.
func (p *partition) process(batch []*request) (fenced bool) {
	w := newWork(p)
	for _, r := range batch {
		w.apply(r)
	}
	return p.commit(w, len(batch))
}

// commit writes a batch's work in one commit and, once it is durable, acts
// on it. It reports whether the partition was fenced.
func (p *partition) commit(w *work, inputs int) (fenced bool) {
	if w.empty() {
		w.published(nil)
		w.answer(nil)
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), commitTimeout)
	defer cancel()
	m := p.e.metrics
	began := time.Now()
	res, err := p.e.store.Commit(ctx, w.params())
	m.commitDuration.Observe(time.Since(began).Seconds())
	m.commitBatch.Observe(float64(inputs))
	if err != nil {
		// The states the core computed are dropped, so memory never runs
		// ahead of the log. Whether the commit was written is unknown (the
		// link may have broken at COMMIT), so the touched sagas are read
		// back from the store as soon as it answers: that re-arms their
		// timers from whatever state is durable, and an attempt that was
		// decided but never sent is retried when its timeout fires.
		for id := range w.touched {
			delete(p.sagas, id)
			p.reload[id] = true
		}
		p.active.Store(int64(len(p.sagas)))
		if errors.Is(err, storage.ErrFenced) {
			m.commitErrors.WithLabelValues("fenced").Inc()
			w.answer(errNotOwner(p.id))
			return true
		}
		m.commitErrors.WithLabelValues("other").Inc()
		p.e.log.Warn("commit failed", "partition", p.id, "inputs", inputs, "err", err)
		w.answer(fmt.Errorf("engine: commit: %w", err))
		return false
	}
	w.committed(res.Now)
	w.published(res.Messages)
	w.answer(nil)
	return false
}

// reloadInterval is how often a loop tries to read back the sagas whose
// commit failed.
const reloadInterval = 500 * time.Millisecond

// reloadFailed reads back the sagas whose last commit failed, now that the
// store may answer again; those it cannot read yet stay for the next try.
func (p *partition) reloadFailed() {
	for id := range p.reload {
		if _, ok := p.sagas[id]; ok {
			delete(p.reload, id) // an input loaded it meanwhile
			continue
		}
		if _, err := p.load(id); err != nil && !errors.Is(err, ErrQuarantined) {
			return // the store is still unreachable; try again later
		}
		delete(p.reload, id)
	}
}

// commitTimeout bounds one commit; a store that takes longer is treated as
// down for that batch, whose callers get an error and retry.
const commitTimeout = 30 * time.Second
