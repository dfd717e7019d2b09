package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/accord-saga/accord/internal/saga"
	"github.com/accord-saga/accord/internal/storage"
)

// work collects what one batch of a partition loop will commit, and what
// the loop must do once that commit is durable.
type work struct {
	p   *partition
	now time.Time

	touched map[string]*pending
	order   []string // touched saga ids in first-touch order, for a stable commit

	taskInserts  map[string]storage.TaskInsert
	taskOrder    []string
	taskDeletes  map[string]bool
	timerSets    map[string]timerEntry
	timerCancels map[string]bool
	keys         []storage.IdempotencyKeyInsert
	batchKeys    map[string]cachedKey
	publishes    []storage.MessageInput
	pubReplies   []pubReply
	// stepPublishes are the topic steps' attempts whose messages this
	// batch publishes; self are results the loop feeds itself after the
	// commit (a topic step's attempt that could not publish).
	stepPublishes []stepPublish
	self          []*request

	// records are saga records written without events (a discard);
	// discarded are the ids of the sagas discarded.
	records   []storage.Saga
	discarded []string

	pushes   []Task
	queues   map[string]bool
	finished []*pending
	replies  []pendingReply
}

type pending struct {
	entry  *sagaEntry
	state  *saga.State
	events []saga.Event
	isNew  bool
}

type pendingReply struct {
	r   *request
	rep reply
}

func newWork(p *partition) *work {
	return &work{
		p:            p,
		now:          p.dbNow(),
		touched:      map[string]*pending{},
		taskInserts:  map[string]storage.TaskInsert{},
		taskDeletes:  map[string]bool{},
		timerSets:    map[string]timerEntry{},
		timerCancels: map[string]bool{},
		batchKeys:    map[string]cachedKey{},
		queues:       map[string]bool{},
	}
}

func (w *work) empty() bool {
	return len(w.order) == 0 && len(w.taskDeletes) == 0 && len(w.publishes) == 0 && len(w.records) == 0
}

// reply records the answer for a request, sent after the commit.
func (w *work) reply(r *request, rep reply) {
	if r.reply != nil {
		w.replies = append(w.replies, pendingReply{r: r, rep: rep})
	}
}

// answer sends every recorded reply; a commit error replaces the success
// of every request that depended on the commit.
func (w *work) answer(commitErr error) {
	if commitErr != nil {
		w.failPublishes(commitErr)
	}
	for _, pr := range w.replies {
		rep := pr.rep
		if commitErr != nil && rep.err == nil {
			rep = reply{err: w.startRefused(pr, commitErr)}
		}
		pr.r.reply <- rep
	}
}

// startRefused explains a failed commit to a start: when the commit was
// refused because a definition version was deleted after the start had
// read it, the start whose version is gone is answered as it would have
// been had the delete come first. Every other request gets the commit's
// error (retry later).
func (w *work) startRefused(pr pendingReply, commitErr error) error {
	if !errors.Is(commitErr, storage.ErrDefinitionDeleted) || pr.r.kind != reqStart || !pr.rep.created {
		return commitErr
	}
	pd := w.touched[pr.rep.sagaID]
	if pd == nil {
		return commitErr
	}
	def := pd.entry.def
	ctx, cancel := context.WithTimeout(context.Background(), commitTimeout)
	defer cancel()
	if _, err := w.p.e.store.DefinitionGet(ctx, def.Name, def.Version); errors.Is(err, storage.ErrNotFound) {
		return fmt.Errorf("%w: %s version %d", ErrDefinitionNotFound, def.Name, def.Version)
	}
	return commitErr
}

func (w *work) apply(r *request) {
	switch r.kind {
	case reqStart:
		w.applyStart(r)
	case reqResult:
		w.p.e.metrics.stepResults.WithLabelValues(string(r.result.Phase), string(r.result.Outcome)).Inc()
		w.deleteTask(r.taskID)
		w.applyStep(r, *r.result)
	case reqTimer:
		w.p.e.metrics.timersFired.Inc()
		w.applyStep(r, saga.Input{Kind: saga.InputTimerFired, TimerID: r.timerID})
	case reqCancel:
		w.applyStep(r, saga.Input{Kind: saga.InputCancel, Reason: r.reason})
	case reqOperatorRetry:
		w.applyStep(r, saga.Input{Kind: saga.InputOperatorRetry})
	case reqPublish:
		w.applyPublish(r)
	case reqSync:
		w.reply(r, reply{})
	case reqDiscard:
		w.applyDiscard(r)
	}
}

func (w *work) applyStart(r *request) {
	sp := r.start
	if sp.IdempotencyKey != "" {
		if cached, ok, err := w.lookupCached(startKeyScope, sp.IdempotencyKey, nil); err != nil {
			w.reply(r, reply{err: err})
			return
		} else if ok {
			prior, err := unmarshalIdemResult(cached.result)
			if err != nil {
				w.reply(r, reply{err: err})
				return
			}
			if !sp.sameStart(prior) {
				w.reply(r, reply{err: fmt.Errorf("%w: key %q", ErrIdempotencyMismatch, sp.IdempotencyKey)})
				return
			}
			w.reply(r, reply{sagaID: prior.SagaID})
			return
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), commitTimeout)
	defer cancel()
	def, err := w.p.e.defs.forStart(ctx, sp.Definition, sp.Version)
	if err != nil {
		w.reply(r, reply{err: err})
		return
	}
	id := newSagaID(w.now)
	state, events, cmds, err := saga.Start(def, saga.StartInput{SagaID: id, Input: sp.Input, Seed: newSeed(), Now: w.now})
	if err != nil {
		w.reply(r, reply{err: fmt.Errorf("%w: %w", ErrInvalidInput, err)})
		return
	}
	entry := &sagaEntry{id: id, def: def, key: sp.IdempotencyKey}
	pd := &pending{entry: entry, state: state, events: events, isNew: true}
	w.touched[id] = pd
	w.order = append(w.order, id)
	w.commands(pd, cmds)
	if sp.IdempotencyKey != "" {
		res := idemResult{SagaID: id, RequestHash: sp.hash(), Version: def.Version}.marshal()
		w.batchKeys[cacheKey(startKeyScope, sp.IdempotencyKey)] = cachedKey{result: res, idx: -1}
		w.keys = append(w.keys, storage.IdempotencyKeyInsert{
			Scope: startKeyScope, Key: sp.IdempotencyKey, Result: res, TTL: w.p.e.cfg.IdempotencyTTL,
		})
	}
	w.reply(r, reply{sagaID: id, created: true})
}

// cachedKey is a stored idempotency key's result, as the loop remembers
// it. idx is, for a publish key stored by the batch being built, the
// index of its message in the batch; -1 otherwise.
type cachedKey struct {
	result []byte
	idx    int
}

func cacheKey(scope, key string) string { return scope + "\x00" + key }

// lookupCached finds an idempotency key in local (a request's own keys, if
// any), in this batch, in the loop's cache, or in the store. Keys of a
// partition are written only by its loop, so this check cannot race with
// another writer.
func (w *work) lookupCached(scope, key string, local map[string]cachedKey) (cachedKey, bool, error) {
	ck := cacheKey(scope, key)
	if c, ok := local[ck]; ok {
		return c, true, nil
	}
	if c, ok := w.batchKeys[ck]; ok {
		return c, true, nil
	}
	if c, ok := w.p.recentKeys[ck]; ok {
		return c, true, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), commitTimeout)
	defer cancel()
	k, err := w.p.e.store.IdempotencyKeyGet(ctx, scope, key)
	if errors.Is(err, storage.ErrNotFound) {
		return cachedKey{}, false, nil
	}
	if err != nil {
		return cachedKey{}, false, fmt.Errorf("engine: idempotency key lookup: %w", err)
	}
	return cachedKey{result: k.Result, idx: -1}, true, nil
}

// applyStep steps one saga through the core.
func (w *work) applyStep(r *request, in saga.Input) {
	pd, err := w.pendingFor(r.sagaID)
	if err == nil && pd == nil && r.kind == reqOperatorRetry {
		// A saga that needs an operator has ended as far as memory goes;
		// an operator retry is what brings it back.
		pd, err = w.pendingEnded(r.sagaID)
	}
	if err != nil {
		w.reply(r, reply{err: err})
		return
	}
	if pd == nil {
		// The saga has ended (or never existed): a late result or timer
		// changes nothing; its task or timer row is deleted above.
		if r.kind == reqCancel || r.kind == reqOperatorRetry {
			w.reply(r, reply{err: w.endedError(r.sagaID)})
			return
		}
		w.reply(r, reply{sagaID: r.sagaID})
		return
	}
	in.Now = w.now
	state, events, cmds, err := saga.Step(pd.entry.def, pd.state, in)
	if err != nil {
		w.reply(r, reply{sagaID: r.sagaID, err: fmt.Errorf("%w: %w", ErrInvalidInput, err)})
		return
	}
	pd.state = state
	pd.events = append(pd.events, events...)
	w.commands(pd, cmds)
	w.reply(r, reply{sagaID: r.sagaID})
}

// endedError tells a cancel or operator retry of a saga that is not active
// whether it ended or never existed.
func (w *work) endedError(id string) error {
	ctx, cancel := context.WithTimeout(context.Background(), commitTimeout)
	defer cancel()
	rec, err := w.p.e.store.SagaGet(ctx, id)
	if errors.Is(err, storage.ErrNotFound) {
		return fmt.Errorf("%w: %s", ErrSagaNotFound, id)
	}
	if err != nil {
		return fmt.Errorf("engine: load saga %s: %w", id, err)
	}
	return fmt.Errorf("%w: saga %s is %s", saga.ErrTerminal, id, rec.Status)
}

// pendingFor returns the batch's working copy of a saga, loading it from
// memory or, failing that, from its durable snapshot. nil means the saga is
// not active.
func (w *work) pendingFor(id string) (*pending, error) {
	if pd, ok := w.touched[id]; ok {
		return pd, nil
	}
	entry, err := w.p.load(id)
	if err != nil || entry == nil {
		return nil, err
	}
	pd := &pending{entry: entry, state: entry.state}
	w.touched[id] = pd
	w.order = append(w.order, id)
	return pd, nil
}

// pendingEnded loads a saga of this partition that has ended, for an input
// that may resume it (an operator retry); nil if there is none.
func (w *work) pendingEnded(id string) (*pending, error) {
	ctx, cancel := context.WithTimeout(context.Background(), commitTimeout)
	defer cancel()
	rec, err := w.p.e.store.SagaGet(ctx, id)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("engine: load saga %s: %w", id, err)
	}
	if rec.Partition != w.p.id || rec.Status != string(saga.StatusNeedsOperator) {
		return nil, nil
	}
	entry, err := w.p.e.entryFromRecord(ctx, rec)
	if err != nil {
		return nil, err
	}
	pd := &pending{entry: entry, state: entry.state}
	w.touched[id] = pd
	w.order = append(w.order, id)
	return pd, nil
}

func (w *work) deleteTask(id string) {
	if _, ok := w.taskInserts[id]; ok {
		delete(w.taskInserts, id)
		return
	}
	w.taskDeletes[id] = true
}

// params assembles the batch's single commit.
func (w *work) params() *storage.CommitParams {
	p := &storage.CommitParams{Partition: w.p.id, Epoch: w.p.epoch, IdempotencyKeys: w.keys}
	for _, id := range w.order {
		pd := w.touched[id]
		if len(pd.events) == 0 {
			continue
		}
		in := make([]storage.EventInput, len(pd.events))
		for i, ev := range pd.events {
			data, err := ev.Marshal()
			if err != nil {
				// The core's events are plain data; failing to encode one
				// is a bug, not an input error.
				panic(fmt.Sprintf("engine: encode %s event: %v", ev.Type, err))
			}
			in[i] = storage.EventInput{Type: ev.Type, Data: data}
		}
		expected := pd.entry.version
		if pd.isNew {
			expected = storage.NoStream
		}
		p.Appends = append(p.Appends, storage.StreamAppend{Stream: streamName(id), ExpectedVersion: expected, Events: in})
		if pd.isNew {
			ref := storage.DefinitionRef{Name: pd.entry.def.Name, Version: pd.entry.def.Version}
			if !slices.Contains(p.Definitions, ref) {
				p.Definitions = append(p.Definitions, ref)
			}
		}
		p.SagaUpserts = append(p.SagaUpserts, storage.Saga{
			ID:                id,
			Partition:         w.p.id,
			Stream:            streamName(id),
			Definition:        pd.entry.def.Name,
			DefinitionVersion: pd.entry.def.Version,
			Status:            string(pd.state.Status()),
			Terminal:          pd.state.Terminal(),
			IdempotencyKey:    pd.entry.key,
			State:             encodeSnapshot(pd.entry.version+int64(len(pd.events)), pd.state),
		})
	}
	for _, id := range w.taskOrder {
		if t, ok := w.taskInserts[id]; ok {
			p.TaskInserts = append(p.TaskInserts, t)
		}
	}
	for id := range w.taskDeletes {
		p.TaskDeletes = append(p.TaskDeletes, id)
	}
	p.Publishes = w.publishes
	p.SagaUpserts = append(p.SagaUpserts, w.records...)
	return p
}

// committed moves the batch's results into memory and acts on the core's
// commands, now that they are durable. dbNow is the commit's database time.
func (w *work) committed(dbNow time.Time) {
	p := w.p
	m := p.e.metrics
	p.observeClock(dbNow)
	for _, id := range w.order {
		pd := w.touched[id]
		if pd.isNew {
			m.sagasStarted.WithLabelValues(pd.entry.def.Name).Inc()
		}
		pd.entry.state = pd.state
		pd.entry.version += int64(len(pd.events))
		if tr := p.e.cfg.Tracer; tr != nil && len(pd.events) > 0 {
			tr.Committed(pd.state, pd.events)
		}
		if pd.state.Terminal() {
			delete(p.sagas, id)
		} else {
			p.sagas[id] = pd.entry
		}
	}
	if len(p.recentKeys)+len(w.batchKeys) > maxRecentKeys {
		clear(p.recentKeys)
	}
	p.active.Store(int64(len(p.sagas)))
	for k, v := range w.batchKeys {
		p.recentKeys[k] = cachedKey{result: v.result, idx: -1}
	}
	for id := range w.timerCancels {
		p.timers.remove(id)
	}
	for _, t := range w.timerSets {
		p.timers.push(t)
	}
	for id := range w.taskDeletes {
		p.e.pushes.forget(id)
	}
	for q := range w.queues {
		p.e.queues.signal(q)
	}
	for _, t := range w.pushes {
		p.e.pushes.dispatch(t)
	}
	w.discardedCommitted()
	for _, pd := range w.finished {
		status := string(pd.state.Status())
		m.sagasFinished.WithLabelValues(pd.entry.def.Name, status).Inc()
		p.e.waiters.notify(pd.entry.id)
		if p.e.cfg.OnFinish != nil {
			p.e.cfg.OnFinish(pd.entry.id, status)
		}
	}
}

// maxRecentKeys bounds the per-partition idempotency key cache.
const maxRecentKeys = 10_000

// startKeyScope is the idempotency scope of saga starts.
const startKeyScope = "saga.start"

func streamName(id string) string { return "saga/" + id }

// idemResult is what a start's idempotency key stands for.
type idemResult struct {
	SagaID      string `json:"saga_id"`
	RequestHash string `json:"request_hash"`
	// Version is the definition version the start resolved to; absent
	// from keys stored before it was kept (their hash has the version
	// asked for in it).
	Version int `json:"version,omitempty"`
}

func (r idemResult) marshal() []byte {
	b, _ := json.Marshal(r) // strings and an int: cannot fail
	return b
}

func unmarshalIdemResult(b []byte) (idemResult, error) {
	var r idemResult
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("engine: stored idempotency result: %w", err)
	}
	return r, nil
}
