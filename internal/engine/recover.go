package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

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
		return nil, fmt.Errorf("engine: saga %s: snapshot unreadable: %v", rec.ID, err)
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
	entry, err := p.e.entryFromRecord(ctx, rec)
	if err != nil {
		return nil, err
	}
	p.sagas[id] = entry
	p.active.Store(int64(len(p.sagas)))
	return entry, nil
}

// recoverPageSize is how many saga records or timers one recovery read
// takes.
const recoverPageSize = 1000

// recover loads the partition's unfinished sagas and its timers. The tasks
// those sagas wait on are durable already and need nothing.
func (p *partition) recover(ctx context.Context) error {
	params := &storage.SagaListParams{Partition: p.id, ByPartition: true, NonTerminal: true, Limit: recoverPageSize}
	for {
		recs, err := p.e.store.SagaList(ctx, params)
		if err != nil {
			return fmt.Errorf("engine: recover partition %d: %w", p.id, err)
		}
		for _, rec := range recs {
			entry, err := p.e.entryFromRecord(ctx, rec)
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
	tp := &storage.TimerListParams{Partition: p.id, Limit: recoverPageSize}
	for {
		timers, err := p.e.store.TimerList(ctx, tp)
		if err != nil {
			return fmt.Errorf("engine: recover timers of partition %d: %w", p.id, err)
		}
		for _, t := range timers {
			p.timers.push(timerEntry{id: t.ID, sagaID: string(t.Payload), dbFireAt: t.FireAt})
		}
		if len(timers) < tp.Limit {
			break
		}
		last := timers[len(timers)-1]
		tp.AfterFireAt, tp.AfterID = last.FireAt, last.ID
	}
	return nil
}
