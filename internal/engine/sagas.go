package engine

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/accord-saga/accord/internal/saga"
	"github.com/accord-saga/accord/internal/storage"
)

// StartParams starts a saga.
type StartParams struct {
	Definition string
	Version    int // 0: the latest registered version
	Input      json.RawMessage
	// IdempotencyKey makes the start safe to retry: the same key returns the
	// same saga for IdempotencyTTL. Reusing a key for a different request
	// is ErrIdempotencyMismatch.
	IdempotencyKey string
}

// hash identifies the request a key was first used for, but for the
// version: that is compared once resolved (see sameStart), so that naming
// the version "latest" stood for is the same request.
func (sp *StartParams) hash() string {
	h := sha256.New()
	h.Write([]byte(sp.Definition))
	h.Write([]byte{0})
	h.Write(sp.Input)
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// legacyHash is hash as keys stored before the resolved version was kept
// have it: the version as asked for, 0 for the latest, included.
func (sp *StartParams) legacyHash() string {
	h := sha256.New()
	h.Write([]byte(sp.Definition))
	h.Write([]byte{0})
	h.Write([]byte(strconv.Itoa(sp.Version)))
	h.Write([]byte{0})
	h.Write(sp.Input)
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// sameStart reports whether sp repeats the start that stored prior. The
// version is compared as resolved: an explicit version matches the one
// the first start ran on, whether that start named it or asked for the
// latest; asking for the latest again matches any, since a retry must find
// its saga even after a newer version was registered.
func (sp *StartParams) sameStart(prior idemResult) bool {
	if prior.Version == 0 {
		return prior.RequestHash == sp.legacyHash()
	}
	return prior.RequestHash == sp.hash() && (sp.Version == 0 || sp.Version == prior.Version)
}

// MaxInputBytes bounds a saga's input.
const MaxInputBytes = 256 << 10

// StartResult reports a start.
type StartResult struct {
	SagaID string
	// Created is false when the idempotency key named an existing saga.
	Created bool
}

var roundRobin atomic.Uint64

// StartSaga starts a saga once its start is durable. Without an
// idempotency key it goes to any partition this node owns; with one, to the
// key's partition, whose loop alone checks and stores that key.
func (e *Engine) StartSaga(ctx context.Context, sp StartParams) (StartResult, error) {
	if sp.Definition == "" {
		return StartResult{}, fmt.Errorf("%w: definition is required", ErrInvalidInput)
	}
	if sp.Version < 0 {
		return StartResult{}, fmt.Errorf("%w: version must be >= 0", ErrInvalidInput)
	}
	if len(sp.Input) > MaxInputBytes {
		return StartResult{}, fmt.Errorf("%w: input larger than %d bytes", ErrInvalidInput, MaxInputBytes)
	}
	if len(sp.Input) == 0 {
		sp.Input = json.RawMessage("{}")
	} else if !json.Valid(sp.Input) {
		return StartResult{}, fmt.Errorf("%w: input is not valid JSON", ErrInvalidInput)
	} else if err := saga.CheckDepth(sp.Input, "input"); err != nil {
		return StartResult{}, fmt.Errorf("%w: %w", ErrInvalidInput, err)
	}
	if len(sp.IdempotencyKey) > storage.MaxKeyLength {
		return StartResult{}, fmt.Errorf("%w: idempotency key longer than %d bytes", ErrInvalidInput, storage.MaxKeyLength)
	}
	if err := checkText("definition", sp.Definition); err != nil {
		return StartResult{}, err
	}
	if err := checkText("idempotency key", sp.IdempotencyKey); err != nil {
		return StartResult{}, err
	}
	var p *partition
	var err error
	if sp.IdempotencyKey != "" {
		p, err = e.partitionFor(storage.PartitionFor(sp.IdempotencyKey, e.parts))
	} else {
		p, err = e.anyPartition()
	}
	if err != nil {
		return StartResult{}, err
	}
	rep, err := p.call(ctx, &request{kind: reqStart, start: &sp})
	if err != nil {
		return StartResult{}, err
	}
	return StartResult{SagaID: rep.sagaID, Created: rep.created}, nil
}

// anyPartition picks an owned partition, round robin.
func (e *Engine) anyPartition() (*partition, error) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	if e.stopping {
		return nil, ErrStopped
	}
	if len(e.owned) == 0 {
		return nil, fmt.Errorf("%w: this node owns no partition yet", ErrNotOwner)
	}
	n := int(roundRobin.Add(1) % uint64(e.parts))
	for i := range e.parts {
		if p, ok := e.owned[(n+i)%e.parts]; ok {
			return p, nil
		}
	}
	return nil, ErrNotOwner
}

// Saga is a saga as the API shows it.
type Saga struct {
	ID                string
	Partition         int
	Definition        string
	DefinitionVersion int
	Status            string
	Terminal          bool
	CreatedAt         time.Time
	UpdatedAt         time.Time
	EndedAt           time.Time
	View              saga.View
	// Quarantine says why a quarantined or discarded saga was set aside;
	// View is then empty.
	Quarantine string
}

// GetSaga returns a saga's durable state: what every acknowledged input
// has made of it.
func (e *Engine) GetSaga(ctx context.Context, id string) (Saga, error) {
	if id == "" || len(id) > storage.MaxKeyLength {
		return Saga{}, fmt.Errorf("%w: %q", ErrSagaNotFound, id)
	}
	rec, err := e.store.SagaGet(ctx, id)
	if errors.Is(err, storage.ErrNotFound) {
		return Saga{}, fmt.Errorf("%w: %s", ErrSagaNotFound, id)
	}
	if err != nil {
		return Saga{}, fmt.Errorf("engine: load saga %s: %w", id, err)
	}
	return e.sagaFromRecord(rec)
}

// sagaFromRecord shows a saga from its snapshot alone: an ended saga's
// definition version may have been deleted since. A saga whose snapshot
// cannot be decoded, or that is set aside, is shown quarantined.
func (e *Engine) sagaFromRecord(rec storage.Saga) (Saga, error) {
	var snap snapshot
	err := json.Unmarshal(rec.State, &snap)
	if err == nil && snap.State == nil {
		err = errors.New("no saga state in it")
	}
	if err != nil || setAside(rec) {
		var why error
		if err != nil {
			why = &UnreadableError{SagaID: rec.ID, Err: err}
		}
		// Shown as it is, whether or not its partition has marked it yet.
		return quarantinedView(rec, why), nil
	}
	return Saga{
		ID: rec.ID, Partition: rec.Partition, Definition: rec.Definition, DefinitionVersion: rec.DefinitionVersion,
		Status: rec.Status, Terminal: rec.Terminal, CreatedAt: rec.CreatedAt, UpdatedAt: rec.UpdatedAt, EndedAt: rec.EndedAt,
		View: snap.State.View(),
	}, nil
}

// ListSagas lists saga records, newest first.
func (e *Engine) ListSagas(ctx context.Context, params *storage.SagaListParams) ([]storage.Saga, error) {
	return e.store.SagaList(ctx, params)
}

// Cancel asks a running saga to stop: it compensates what it has done and
// ends cancelled. A saga past its pivot cannot be cancelled.
func (e *Engine) Cancel(ctx context.Context, id, reason string) error {
	return e.sagaInput(ctx, id, &request{kind: reqCancel, sagaID: id, reason: reason})
}

// OperatorRetry resumes a saga that needs an operator: its failed
// compensation is tried again with a fresh budget.
func (e *Engine) OperatorRetry(ctx context.Context, id string) error {
	return e.sagaInput(ctx, id, &request{kind: reqOperatorRetry, sagaID: id})
}

func (e *Engine) sagaInput(ctx context.Context, id string, r *request) error {
	rec, err := e.store.SagaGet(ctx, id)
	if errors.Is(err, storage.ErrNotFound) {
		return fmt.Errorf("%w: %s", ErrSagaNotFound, id)
	}
	if err != nil {
		return fmt.Errorf("engine: load saga %s: %w", id, err)
	}
	p, err := e.partitionFor(rec.Partition)
	if err != nil {
		return err
	}
	_, err = p.call(ctx, r)
	return err
}

// Wait blocks until the saga has ended or ctx is done, and returns it as it
// is then.
func (e *Engine) Wait(ctx context.Context, id string) (Saga, error) {
	ended, unregister := e.waiters.add(id)
	defer unregister()
	s, err := e.GetSaga(ctx, id)
	if err != nil || s.Terminal {
		return s, err
	}
	select {
	case <-ended:
		return e.GetSaga(ctx, id)
	case <-ctx.Done():
		return s, ctx.Err()
	}
}
