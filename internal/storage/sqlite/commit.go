package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/accord-saga/accord/internal/storage"
)

const (
	sqlPartitionGet = `SELECT epoch, expires_at, head, message_head FROM partitions WHERE partition = ?`
	sqlHeadSet      = `UPDATE partitions SET head = ?, message_head = ? WHERE partition = ?`
	sqlStreamGet    = `SELECT partition, version FROM streams WHERE name = ?`
	sqlStreamSet    = `INSERT INTO streams (name, partition, version) VALUES (?, ?, ?)
		ON CONFLICT (name) DO UPDATE SET version = excluded.version`
	sqlEventInsert = `INSERT INTO events (partition, position, stream, version, type, data, metadata, recorded_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)`
	sqlTaskInsert = `INSERT INTO tasks (id, partition, queue, payload, deliveries, claim_token, visible_at, created_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`
	sqlTaskDelete  = `DELETE FROM tasks WHERE id = ?`
	sqlTimerInsert = `INSERT INTO timers (id, partition, fire_at, payload) VALUES (?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`
	sqlTimerDelete = `DELETE FROM timers WHERE id = ?`
	sqlConsumerSet = `INSERT INTO consumer_positions (consumer, partition, position) VALUES (?, ?, ?)
		ON CONFLICT (consumer, partition) DO UPDATE SET position = excluded.position`
	// ?7 is terminal, ?10 the commit's time.
	sqlSagaUpsert = `INSERT INTO sagas (id, partition, stream, definition, definition_version, status, terminal,
			idempotency_key, state, created_at, updated_at, ended_at)
		VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10, CASE WHEN ?7 THEN ?10 END)
		ON CONFLICT (id) DO UPDATE SET
			partition = excluded.partition, stream = excluded.stream, definition = excluded.definition,
			definition_version = excluded.definition_version, status = excluded.status,
			terminal = excluded.terminal, idempotency_key = excluded.idempotency_key, state = excluded.state,
			updated_at = excluded.updated_at,
			ended_at = CASE WHEN excluded.terminal THEN coalesce(sagas.ended_at, excluded.updated_at) END`
)

// Commit writes params in one transaction, batched with concurrent writes
// (see writer.go). Checks run in the order the storage contract gives.
func (d *Driver) Commit(ctx context.Context, params *storage.CommitParams) (*storage.CommitResult, error) {
	if params == nil {
		return nil, fmt.Errorf("sqlite: commit: %w: nil params", storage.ErrInvalid)
	}
	if err := params.Validate(d.info.Partitions); err != nil {
		return nil, fmt.Errorf("sqlite: commit: %w", err)
	}
	return d.w.commit(ctx, params)
}

// commit applies p inside the current transaction (or savepoint).
func (tx *wtx) commit(p *storage.CommitParams) (*storage.CommitResult, error) {
	s := tx.s
	part, err := tx.partition(p.Partition)
	if err != nil {
		return nil, err
	}
	if part.epoch != p.Epoch || tx.now >= part.expires {
		return nil, fmt.Errorf("sqlite: commit to partition %d at epoch %d: %w (lease epoch %d, expired: %t)",
			p.Partition, p.Epoch, storage.ErrFenced, part.epoch, tx.now >= part.expires)
	}
	for i := range p.IdempotencyKeys {
		if err := tx.keyInsert(p.Partition, &p.IdempotencyKeys[i]); err != nil {
			return nil, err
		}
	}

	res := &storage.CommitResult{Now: fromMicros(tx.now)}
	n := 0
	for i := range p.Appends {
		n += len(p.Appends[i].Events)
	}
	if n > 0 {
		res.Events = make([]storage.Event, 0, n)
	}
	pos := part.head
	for i := range p.Appends {
		a := &p.Appends[i]
		var partition, version int64
		err := s.streamGet.QueryRow(a.Stream).Scan(&partition, &version)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			partition, version = int64(p.Partition), 0
		case err != nil:
			return nil, fmt.Errorf("sqlite: commit: read stream %q: %w", a.Stream, err)
		}
		if partition != int64(p.Partition) {
			return nil, fmt.Errorf("sqlite: commit: stream %q is in partition %d, not %d: %w", a.Stream, partition, p.Partition, storage.ErrWrongPartition)
		}
		if a.ExpectedVersion != storage.AnyVersion && a.ExpectedVersion != version {
			return nil, &storage.VersionConflictError{Stream: a.Stream, Expected: a.ExpectedVersion, Actual: version}
		}
		for j := range a.Events {
			e := &a.Events[j]
			pos++
			version++
			if _, err := s.eventInsert.Exec(p.Partition, pos, a.Stream, version, e.Type, e.Data, e.Metadata, tx.now); err != nil {
				return nil, fmt.Errorf("sqlite: commit: insert event %d of stream %q: %w", version, a.Stream, err)
			}
			res.Events = append(res.Events, storage.Event{
				Partition: p.Partition, Position: pos, Stream: a.Stream, Version: version,
				Type: e.Type, Data: e.Data, Metadata: e.Metadata, RecordedAt: res.Now,
			})
		}
		if _, err := s.streamSet.Exec(a.Stream, p.Partition, version); err != nil {
			return nil, fmt.Errorf("sqlite: commit: update stream %q: %w", a.Stream, err)
		}
	}
	// Deletes before inserts: a commit may replace a task or timer by
	// deleting and inserting its id.
	for _, id := range p.TaskDeletes {
		if _, err := s.taskDelete.Exec(id); err != nil {
			return nil, fmt.Errorf("sqlite: commit: delete task %q: %w", id, err)
		}
	}
	for _, id := range p.TimerDeletes {
		if _, err := s.timerDelete.Exec(id); err != nil {
			return nil, fmt.Errorf("sqlite: commit: delete timer %q: %w", id, err)
		}
	}
	for i := range p.TaskInserts {
		t := &p.TaskInserts[i]
		visible, deliveries := tx.now+durMicros(t.Delay), 0
		if t.ClaimToken != "" {
			visible, deliveries = tx.now+durMicros(t.ClaimFor), 1
		}
		r, err := s.taskInsert.Exec(t.ID, p.Partition, t.Queue, t.Payload, deliveries, t.ClaimToken, visible, tx.now)
		if err != nil {
			return nil, fmt.Errorf("sqlite: commit: insert task %q: %w", t.ID, err)
		}
		if n, err := r.RowsAffected(); err != nil || n != 1 {
			return nil, fmt.Errorf("sqlite: commit: %w: task %q exists", storage.ErrInvalid, t.ID)
		}
	}
	for i := range p.TimerInserts {
		t := &p.TimerInserts[i]
		r, err := s.timerInsert.Exec(t.ID, p.Partition, tx.now+durMicros(t.Delay), t.Payload)
		if err != nil {
			return nil, fmt.Errorf("sqlite: commit: insert timer %q: %w", t.ID, err)
		}
		if n, err := r.RowsAffected(); err != nil || n != 1 {
			return nil, fmt.Errorf("sqlite: commit: %w: timer %q exists", storage.ErrInvalid, t.ID)
		}
	}
	for _, c := range p.ConsumerPositions {
		if _, err := s.consumerSet.Exec(c.Consumer, c.Partition, c.Position); err != nil {
			return nil, fmt.Errorf("sqlite: commit: set position of consumer %q: %w", c.Consumer, err)
		}
	}
	if err := tx.checkDefinitions(p); err != nil {
		return nil, err
	}
	for i := range p.SagaUpserts {
		g := &p.SagaUpserts[i]
		if _, err := s.sagaUpsert.Exec(g.ID, g.Partition, g.Stream, g.Definition, g.DefinitionVersion, g.Status,
			boolInt(g.Terminal), g.IdempotencyKey, g.State, tx.now); err != nil {
			return nil, fmt.Errorf("sqlite: commit: upsert saga %q: %w", g.ID, err)
		}
	}
	msgPos, err := tx.publish(p, part.msgHead, res)
	if err != nil {
		return nil, err
	}
	// Only now, with every statement of the commit done, do the batch's
	// heads move: a commit that failed above leaves them where they were,
	// as its savepoint rollback leaves the rows.
	if pos != part.head || msgPos != part.msgHead {
		part.head, part.msgHead, part.dirty = pos, msgPos, true
	}
	return res, nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
