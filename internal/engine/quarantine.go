package engine

import (
	"context"
	"errors"
	"fmt"

	"github.com/accord-saga/accord/internal/storage"
)

// Quarantine. A saga whose stored snapshot cannot be decoded (a bug, a
// hand edit, a disk fault) cannot run: its state is unknown. Rather than
// fail every read and every input for it, and every recovery of its
// partition, the engine sets it aside: its record's status becomes
// quarantined (the snapshot is kept as it was, for inspection), its
// partition keeps running its other sagas, reads show it as quarantined,
// and an operator discards it once they have dealt with its participants.
// A discarded saga has ended, so retention removes it.

// Statuses of a saga record that the core does not produce.
const (
	// StatusQuarantined: the saga's stored state cannot be decoded; it
	// runs no more until an operator discards it.
	StatusQuarantined = "quarantined"
	// StatusDiscarded: an operator discarded a quarantined saga. It has
	// ended.
	StatusDiscarded = "discarded"
)

var (
	// ErrQuarantined: the saga is quarantined; it takes no input but a
	// discard.
	ErrQuarantined = errors.New("engine: saga is quarantined")
	// ErrNotQuarantined: a discard was asked for a saga that is not
	// quarantined.
	ErrNotQuarantined = errors.New("engine: saga is not quarantined")
)

// UnreadableError says that a saga's stored snapshot cannot be decoded.
// It is ErrQuarantined.
type UnreadableError struct {
	SagaID string
	Err    error
}

func (e *UnreadableError) Error() string {
	return fmt.Sprintf("saga %s: stored state cannot be decoded: %v", e.SagaID, e.Err)
}

func (e *UnreadableError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrQuarantined) true.
func (e *UnreadableError) Is(target error) bool { return target == ErrQuarantined }

// quarantinedView is a quarantined saga as reads show it: its record, and
// why it is set aside.
func quarantinedView(rec storage.Saga, why error) Saga {
	s := Saga{
		ID: rec.ID, Partition: rec.Partition, Definition: rec.Definition, DefinitionVersion: rec.DefinitionVersion,
		Status: rec.Status, Terminal: rec.Terminal, CreatedAt: rec.CreatedAt, UpdatedAt: rec.UpdatedAt, EndedAt: rec.EndedAt,
	}
	if s.Status != StatusDiscarded {
		s.Status = StatusQuarantined
	}
	if why != nil {
		s.Quarantine = why.Error()
	} else {
		s.Quarantine = "stored state cannot be decoded"
	}
	return s
}

// setAside reports whether a record is quarantined or discarded, so that
// it must not be decoded into a running saga.
func setAside(rec storage.Saga) bool {
	return rec.Status == StatusQuarantined || rec.Status == StatusDiscarded
}

// quarantine marks a saga of this partition quarantined, durably, and
// remembers it. It runs on the loop (or in recovery, before the loop).
func (p *partition) quarantine(ctx context.Context, rec storage.Saga, why error) {
	p.e.log.Error("saga quarantined: its stored state cannot be decoded; see docs/operations.md",
		"saga", rec.ID, "partition", p.id, "err", why)
	if rec.Status != StatusQuarantined {
		rec.Status, rec.Terminal = StatusQuarantined, false
		_, err := p.e.store.Commit(ctx, &storage.CommitParams{Partition: p.id, Epoch: p.epoch, SagaUpserts: []storage.Saga{rec}})
		if err != nil {
			// Still set aside in memory; the next recovery marks it again.
			p.e.log.Warn("cannot record a quarantine", "saga", rec.ID, "err", err)
		}
	}
	p.markQuarantined(rec.ID)
}

func (p *partition) markQuarantined(id string) {
	p.quarantined[id] = true
	p.quarantinedN.Store(int64(len(p.quarantined)))
}

// quarantinedSagas counts the quarantined sagas of the partitions this
// node owns.
func (e *Engine) quarantinedSagas() int {
	return e.sumOwned(func(p *partition) int64 { return p.quarantinedN.Load() })
}

// Discard ends a quarantined saga: its record becomes discarded and ended,
// so retention removes it with its log. Tasks already handed to workers
// are not withdrawn; their results are ignored. A saga that is not
// quarantined is ErrNotQuarantined.
func (e *Engine) Discard(ctx context.Context, id string) error {
	return e.sagaInput(ctx, id, &request{kind: reqDiscard, sagaID: id})
}

// applyDiscard discards a quarantined saga of this partition.
func (w *work) applyDiscard(r *request) {
	ctx, cancel := context.WithTimeout(context.Background(), commitTimeout)
	defer cancel()
	p := w.p
	rec, err := p.e.store.SagaGet(ctx, r.sagaID)
	if errors.Is(err, storage.ErrNotFound) {
		w.reply(r, reply{err: fmt.Errorf("%w: %s", ErrSagaNotFound, r.sagaID)})
		return
	}
	if err != nil {
		w.reply(r, reply{err: fmt.Errorf("engine: load saga %s: %w", r.sagaID, err)})
		return
	}
	if rec.Partition != p.id {
		w.reply(r, reply{err: fmt.Errorf("%w: partition %d", ErrNotOwner, rec.Partition)})
		return
	}
	quarantined := rec.Status == StatusQuarantined || p.quarantined[rec.ID]
	if _, running := p.sagas[rec.ID]; !quarantined && !running && !setAside(rec) && !rec.Terminal {
		// Not marked yet: it is quarantined if its snapshot is unreadable.
		// A saga running from memory is not, whatever its snapshot: its
		// next commit rewrites it.
		if _, err := p.e.entryFromRecord(ctx, rec); err != nil {
			var ue *UnreadableError
			quarantined = errors.As(err, &ue)
		}
	}
	if !quarantined {
		w.reply(r, reply{err: fmt.Errorf("%w: saga %s is %s", ErrNotQuarantined, rec.ID, rec.Status)})
		return
	}
	rec.Status, rec.Terminal = StatusDiscarded, true
	w.records = append(w.records, rec)
	w.discarded = append(w.discarded, rec.ID)
	w.reply(r, reply{sagaID: rec.ID})
}

// discardedCommitted forgets the sagas a commit discarded.
func (w *work) discardedCommitted() {
	p := w.p
	for _, id := range w.discarded {
		delete(p.quarantined, id)
		p.e.waiters.notify(id)
	}
	p.quarantinedN.Store(int64(len(p.quarantined)))
}
