package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/accord-saga/accord/internal/saga"
	"github.com/accord-saga/accord/internal/storage"
)

// snapshot is what a saga record's State holds: the core's state and the
// stream version it reflects, so a saga reloads with one read.
type snapshot struct {
	Version int64       `json:"v"`
	State   *saga.State `json:"s"`
}

func encodeSnapshot(version int64, s *saga.State) []byte {
	b, err := json.Marshal(snapshot{Version: version, State: s})
	if err != nil {
		panic(fmt.Sprintf("engine: encode saga state: %v", err)) // plain data; a bug if it fails
	}
	return b
}

// entryFromRecord rebuilds an active saga from its durable record.
func (e *Engine) entryFromRecord(ctx context.Context, rec storage.Saga) (*sagaEntry, error) {
	var snap snapshot
	if err := json.Unmarshal(rec.State, &snap); err != nil || snap.State == nil {
		if err == nil {
			err = errors.New("no saga state in it")
		}
		return nil, &UnreadableError{SagaID: rec.ID, Err: err}
	}
	def, err := e.defs.get(ctx, rec.Definition, rec.DefinitionVersion)
	if err != nil {
		return nil, fmt.Errorf("engine: saga %s: %w", rec.ID, err)
	}
	return &sagaEntry{id: rec.ID, def: def, state: snap.State, version: snap.Version, key: rec.IdempotencyKey}, nil
}

// load returns an active saga of this partition from memory or from the
// store; nil if it has ended or does not exist here.
func (p *partition) load(id string) (*sagaEntry, error) {
	if entry, ok := p.sagas[id]; ok {
		return entry, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), commitTimeout)
	defer cancel()
	rec, err := p.e.store.SagaGet(ctx, id)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("engine: load saga %s: %w", id, err)
	}
	if rec.Terminal || rec.Partition != p.id {
		return nil, nil
	}
	if p.quarantined[id] || setAside(rec) {
		return nil, fmt.Errorf("%w: %s", ErrQuarantined, id)
	}
	entry, err := p.e.entryFromRecord(ctx, rec)
	var ue *UnreadableError
	if errors.As(err, &ue) {
		p.quarantine(ctx, rec, err)
		return nil, err
	}
	if err != nil {
		return nil, err
	}
	p.sagas[id] = entry
	p.active.Store(int64(len(p.sagas)))
	for _, t := range entry.state.Timers() {
		p.timers.push(timerEntry{id: t.TimerID, sagaID: id, dbFireAt: t.FireAt})
	}
	p.resumeTopicSteps(entry)
	return entry, nil
}

// resumeTopicSteps queues the results of a loaded saga's topic steps in
// flight: their messages were stored with their attempts.
func (p *partition) resumeTopicSteps(entry *sagaEntry) {
	tasks, err := entry.state.Tasks(entry.def)
	if err != nil {
		return // rearm logs it
	}
	for i := range tasks {
		if d := &tasks[i]; d.Target.Topic != "" {
			p.self = append(p.self, topicSuccess(entry.id, d))
		}
	}
}

// recoverPageSize is how many saga records or timers one recovery read
// takes.
const recoverPageSize = 1000

// recover loads the partition's unfinished sagas from their snapshots,
// re-arms their timers and collects their push attempts in flight. The pull
// tasks those sagas wait on are rows already and need nothing.
func (p *partition) recover(ctx context.Context) error {
	params := &storage.SagaListParams{Partition: p.id, ByPartition: true, NonTerminal: true, Limit: recoverPageSize}
	for {
		recs, err := p.e.store.SagaList(ctx, params)
		if err != nil {
			return fmt.Errorf("engine: recover partition %d: %w", p.id, err)
		}
		for _, rec := range recs {
			if setAside(rec) {
				p.markQuarantined(rec.ID)
				continue
			}
			entry, err := p.e.entryFromRecord(ctx, rec)
			var ue *UnreadableError
			if errors.As(err, &ue) {
				p.quarantine(ctx, rec, err)
				continue
			}
			if err != nil {
				// One unreadable saga must not keep a partition down; it
				// is reported and left in the store for an operator.
				p.e.log.Error("cannot recover saga", "saga", rec.ID, "err", err)
				continue
			}
			p.sagas[rec.ID] = entry
		}
		if len(recs) < params.Limit {
			break
		}
		last := recs[len(recs)-1]
		params.AfterCreatedAt, params.AfterID = last.CreatedAt, last.ID
	}
	p.active.Store(int64(len(p.sagas)))
	dbNow, err := p.e.store.Now(ctx)
	if err != nil {
		return fmt.Errorf("engine: recover partition %d: %w", p.id, err)
	}
	p.observeClock(dbNow)
	// Timers and push attempts live in the sagas' states: re-arm the one,
	// re-dispatch the other.
	for _, entry := range p.sagas {
		p.rearm(entry, dbNow)
	}
	return nil
}

// rearm puts a recovered saga's timers into the loop's heap and queues its
// push attempts in flight for dispatch.
func (p *partition) rearm(entry *sagaEntry, dbNow time.Time) {
	for _, t := range entry.state.Timers() {
		p.timers.push(timerEntry{id: t.TimerID, sagaID: entry.id, dbFireAt: t.FireAt})
	}
	tasks, err := entry.state.Tasks(entry.def)
	if err != nil {
		p.e.log.Error("recover: attempts in flight", "saga", entry.id, "err", err)
		return
	}
	p.resumeTopicSteps(entry)
	for i := range tasks {
		d := &tasks[i]
		if d.Target.HTTP == "" || (!d.Deadline.IsZero() && !d.Deadline.After(dbNow)) {
			continue // pull tasks are rows already; a lapsed attempt is its timer's business
		}
		p.redispatch = append(p.redispatch, taskFor(p, entry, d, dbNow.UnixMilli()))
	}
}
