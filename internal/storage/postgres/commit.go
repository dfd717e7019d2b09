package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/accord-saga/accord/internal/storage"
)

// A commit joins a group (see group.go): the commits queued for one
// coalescer worker run in one transaction, in two round trips. The first
// pipeline opens the transaction, locks the rows of every partition the
// group writes, in ascending partition order, reads the clock once those
// locks are held, and locks the rows the checks read: the group's streams
// and its existing idempotency keys. Go then checks each commit in turn
// against what the database held and what the commits before it in the
// group wrote: fence, keys, versions; it numbers the events. A commit
// refused there has written nothing. The second pipeline writes the
// commits that passed, moves the partitions' heads, and commits; should one
// commit's statement fail in the database, the group runs again with a
// savepoint around each commit, so that the failing one is rolled back
// alone.

// sqlLockPartitions takes the row locks of the group's partitions, in
// ascending order so that two groups locking overlapping partitions never
// wait on each other in opposite orders, and then reads the clock: the
// aggregate has every row, so every lock, before its one clock reading.
// Commit times thus follow the order in which the locks are granted:
// events later in a partition's log never carry an earlier time. The locks
// are held to the end of the transaction: they serialize each partition's
// writers, so positions are gap-free, and a lease takeover waits on the
// same row, which is what makes the epoch checks hold until commit.
const sqlLockPartitions = `
WITH locked AS (
	SELECT partition, epoch, lease_expires_at, head, message_head FROM partitions
	WHERE partition = ANY($1::integer[])
	ORDER BY partition
	FOR UPDATE
)
SELECT array_agg(partition), array_agg(epoch), array_agg(lease_expires_at), array_agg(head),
	array_agg(message_head), ` + nowSQL + `
FROM locked`

// sqlHeadsSet moves the heads, of events and of messages, of the
// partitions the group wrote to.
const sqlHeadsSet = `
UPDATE partitions SET head = u.head, message_head = u.message_head
FROM unnest($1::integer[], $2::bigint[], $3::bigint[]) AS u(partition, head, message_head)
WHERE partitions.partition = u.partition`

// Rows are locked in key order so that two commits never wait on each
// other's locks in opposite orders.
const sqlLockStreams = `
SELECT stream, partition, version FROM streams
WHERE stream = ANY($1::text[])
ORDER BY stream
FOR UPDATE`

const sqlLockIdempotencyKeys = `
SELECT k.scope, k.key, k.partition, k.result, k.created_at, k.expires_at
FROM idempotency_keys k
JOIN unnest($1::text[], $2::text[]) AS u(scope, key) ON k.scope = u.scope AND k.key = u.key
ORDER BY k.scope, k.key
FOR UPDATE OF k`

const sqlStreamsInsert = `
INSERT INTO streams (stream, partition, version)
SELECT u.stream, $1, u.version FROM unnest($2::text[], $3::bigint[]) AS u(stream, version)`

const sqlStreamsUpdate = `
UPDATE streams SET version = u.version
FROM unnest($1::text[], $2::bigint[]) AS u(stream, version)
WHERE streams.stream = u.stream`

const sqlEventsInsert = `
INSERT INTO events (partition, position, stream, version, type, data, metadata, recorded_at)
SELECT $1, u.position, u.stream, u.version, u.type, u.data, u.metadata, $2
FROM unnest($3::bigint[], $4::text[], $5::bigint[], $6::text[], $7::bytea[], $8::bytea[])
	AS u(position, stream, version, type, data, metadata)`

const sqlIdempotencyKeysInsert = `
INSERT INTO idempotency_keys (scope, key, partition, result, created_at, expires_at)
SELECT u.scope, u.key, $1, u.result, $2, u.expires_at
FROM unnest($3::text[], $4::text[], $5::bytea[], $6::bigint[]) AS u(scope, key, result, expires_at)`

// sqlIdempotencyKeysReplace overwrites expired keys that the first batch
// found and locked.
const sqlIdempotencyKeysReplace = `
UPDATE idempotency_keys k
SET partition = $1, result = u.result, created_at = $2, expires_at = u.expires_at
FROM unnest($3::text[], $4::text[], $5::bytea[], $6::bigint[]) AS u(scope, key, result, expires_at)
WHERE k.scope = u.scope AND k.key = u.key`

const sqlTasksInsert = `
INSERT INTO tasks (id, partition, queue, payload, deliveries, claim_token, visible_at, created_at)
SELECT u.id, $1, u.queue, u.payload, u.deliveries, u.claim_token, u.visible_at, $2
FROM unnest($3::text[], $4::text[], $5::bytea[], $6::integer[], $7::text[], $8::bigint[])
	AS u(id, queue, payload, deliveries, claim_token, visible_at)`

const sqlTasksDelete = `DELETE FROM tasks WHERE id = ANY($1::text[])`

const sqlTimersInsert = `
INSERT INTO timers (id, partition, fire_at, payload)
SELECT u.id, $1, u.fire_at, u.payload
FROM unnest($2::text[], $3::bigint[], $4::bytea[]) AS u(id, fire_at, payload)`

const sqlTimersDelete = `DELETE FROM timers WHERE id = ANY($1::text[])`

const sqlConsumerPositionsUpsert = `
INSERT INTO consumer_positions (consumer, partition, position)
SELECT * FROM unnest($1::text[], $2::integer[], $3::bigint[])
ON CONFLICT (consumer, partition) DO UPDATE SET position = excluded.position`

// sqlSagasUpsert keeps created_at and partition from the first insert and
// sets ended_at once, when the saga first turns terminal.
const sqlSagasUpsert = `
INSERT INTO sagas AS s (id, partition, stream, definition, definition_version, status, terminal,
	idempotency_key, state, created_at, updated_at, ended_at)
SELECT u.id, $1, u.stream, u.definition, u.definition_version, u.status, u.terminal,
	u.idempotency_key, u.state, $2::bigint, $2::bigint, CASE WHEN u.terminal THEN $2::bigint END
FROM unnest($3::text[], $4::text[], $5::text[], $6::integer[], $7::text[], $8::boolean[], $9::text[], $10::bytea[])
	AS u(id, stream, definition, definition_version, status, terminal, idempotency_key, state)
ON CONFLICT (id) DO UPDATE SET
	stream = excluded.stream,
	definition = excluded.definition,
	definition_version = excluded.definition_version,
	status = excluded.status,
	terminal = excluded.terminal,
	idempotency_key = excluded.idempotency_key,
	state = excluded.state,
	updated_at = excluded.updated_at,
	ended_at = CASE WHEN excluded.terminal THEN coalesce(s.ended_at, excluded.updated_at) END`

// Commit writes params in one transaction, which it may share with
// commits of other partitions queued at the same moment (see group.go);
// see storage.Driver.
func (d *Driver) Commit(ctx context.Context, params *storage.CommitParams) (*storage.CommitResult, error) {
	if params == nil {
		return nil, fmt.Errorf("postgres: commit: %w: nil params", storage.ErrInvalid)
	}
	if err := params.Validate(d.partitions); err != nil {
		return nil, fmt.Errorf("postgres: commit: %w", err)
	}
	res, err := d.submit(ctx, params)
	if err != nil {
		// Explained here, once the worker has moved on: explaining reads
		// with a connection of its own, and the pool may have no other.
		if key := uniqueViolation(err); key != "" {
			return nil, d.explainUniqueViolation(ctx, params, key, err)
		}
		return nil, fmt.Errorf("postgres: commit: %w", err)
	}
	return res, nil
}

// partRow is a partition's row as its group locked it.
type partRow struct {
	epoch, expires, head, msgHead int64
}

// view is the store as one commit of a group sees it: the rows the group
// locked and read, overlaid with what the commits before it in the group
// wrote.
type view struct {
	heads    map[int]int64
	msgHeads map[int]int64
	streams  map[string]storage.StreamInfo
	keys     map[[2]string]storage.IdempotencyKey
	topics   map[string]bool                // the topics that exist, of those the group publishes to
	defs     map[storage.DefinitionRef]bool // the live definitions, of those the group starts sagas on
}

// plan is what one commit writes, decided against its view.
type plan struct {
	p       *storage.CommitParams
	events  []storage.Event
	head    int64 // the partition's head after the commit
	msgHead int64 // the partition's message head after the commit
	msgs    []storage.Message
	exists  map[string]bool          // streams that exist before the commit
	replace map[[2]string]bool       // expired keys to overwrite
	keys    []storage.IdempotencyKey // the keys as stored by the commit
}

// newPlan checks p against v, in the contract's order, and numbers its
// events. It writes nothing: a commit refused here has nothing to undo.
func newPlan(p *storage.CommitParams, part partRow, locked bool, now int64, v *view) (*plan, error) {
	if !locked || part.epoch != p.Epoch || part.expires <= now {
		return nil, fmt.Errorf("%w: partition %d epoch %d", storage.ErrFenced, p.Partition, p.Epoch)
	}
	pl := &plan{p: p}
	// Keys before appends: a retried commit reports its key even though
	// its expected versions no longer match.
	if err := pl.checkIdempotencyKeys(v, now); err != nil {
		return nil, err
	}
	if err := pl.numberEvents(v, now); err != nil {
		return nil, err
	}
	if err := pl.numberMessages(v, now); err != nil {
		return nil, err
	}
	for _, d := range p.Definitions {
		if !v.defs[d] {
			return nil, fmt.Errorf("%w: definition %s version %d", storage.ErrDefinitionDeleted, d.Name, d.Version)
		}
	}
	return pl, nil
}

// checkIdempotencyKeys refuses a key stored and unexpired, or given twice,
// and records the expired keys to overwrite.
func (pl *plan) checkIdempotencyKeys(v *view, now int64) error {
	p := pl.p
	pl.replace = make(map[[2]string]bool)
	seen := make(map[[2]string]bool, len(p.IdempotencyKeys))
	for _, k := range p.IdempotencyKeys {
		id := [2]string{k.Scope, k.Key}
		if seen[id] {
			// As if the keys were stored one after the other: the second
			// finds the first.
			for _, first := range pl.keys {
				if first.Scope == k.Scope && first.Key == k.Key {
					return &storage.IdempotencyKeyExistsError{Existing: first}
				}
			}
		}
		if stored, ok := v.keys[id]; ok {
			if stored.ExpiresAt.UnixMicro() > now {
				return &storage.IdempotencyKeyExistsError{Existing: stored}
			}
			pl.replace[id] = true
		}
		seen[id] = true
		pl.keys = append(pl.keys, storage.IdempotencyKey{
			Scope:     k.Scope,
			Key:       k.Key,
			Partition: p.Partition,
			Result:    k.Result,
			CreatedAt: fromMicros(now),
			ExpiresAt: fromMicros(now + k.TTL.Microseconds()),
		})
	}
	return nil
}

// numberEvents checks every append against the view and gives each event
// its position and version.
func (pl *plan) numberEvents(v *view, now int64) error {
	p := pl.p
	n := 0
	for _, a := range p.Appends {
		n += len(a.Events)
	}
	at := fromMicros(now)
	pos := v.heads[p.Partition]
	pl.exists = make(map[string]bool, len(p.Appends))
	pl.events = make([]storage.Event, 0, n)
	for _, a := range p.Appends {
		s, exists := v.streams[a.Stream]
		if exists && s.Partition != p.Partition {
			return fmt.Errorf("%w: stream %q is in partition %d, not %d", storage.ErrWrongPartition, a.Stream, s.Partition, p.Partition)
		}
		version := s.Version // 0 for a new stream
		if a.ExpectedVersion != storage.AnyVersion && a.ExpectedVersion != version {
			return &storage.VersionConflictError{Stream: a.Stream, Expected: a.ExpectedVersion, Actual: version}
		}
		pl.exists[a.Stream] = exists
		for _, e := range a.Events {
			pos++
			version++
			pl.events = append(pl.events, storage.Event{
				Partition:  p.Partition,
				Position:   pos,
				Stream:     a.Stream,
				Version:    version,
				Type:       e.Type,
				Data:       e.Data,
				Metadata:   e.Metadata,
				RecordedAt: at,
			})
		}
	}
	pl.head = pos
	return nil
}

// apply makes the plan's writes visible to the commits after it in the
// group.
func (pl *plan) apply(v *view) {
	v.heads[pl.p.Partition] = pl.head
	v.msgHeads[pl.p.Partition] = pl.msgHead
	for _, e := range pl.events { // the last event of a stream sets its version
		v.streams[e.Stream] = storage.StreamInfo{Stream: e.Stream, Partition: e.Partition, Version: e.Version}
	}
	for _, k := range pl.keys {
		v.keys[[2]string{k.Scope, k.Key}] = k
	}
}

// queueWrites queues every row the commit writes. The partition's head is
// not among them: the group moves each head once, after its commits.
func (pl *plan) queueWrites(b *pgx.Batch, now int64) {
	p := pl.p
	var newNames, oldNames []string
	var newVersions, oldVersions []int64
	last := make(map[string]int64, len(p.Appends))
	for _, e := range pl.events {
		last[e.Stream] = e.Version
	}
	for _, a := range p.Appends {
		if pl.exists[a.Stream] {
			oldNames, oldVersions = append(oldNames, a.Stream), append(oldVersions, last[a.Stream])
		} else {
			newNames, newVersions = append(newNames, a.Stream), append(newVersions, last[a.Stream])
		}
	}
	if len(newNames) > 0 {
		b.Queue(sqlStreamsInsert, p.Partition, newNames, newVersions)
	}
	if len(oldNames) > 0 {
		b.Queue(sqlStreamsUpdate, oldNames, oldVersions)
	}
	if len(pl.events) > 0 {
		n := len(pl.events)
		positions, versions := make([]int64, n), make([]int64, n)
		streams, types := make([]string, n), make([]string, n)
		data, metadata := make([][]byte, n), make([][]byte, n)
		for i, e := range pl.events {
			positions[i], versions[i] = e.Position, e.Version
			streams[i], types[i] = e.Stream, e.Type
			data[i], metadata[i] = e.Data, e.Metadata
		}
		b.Queue(sqlEventsInsert, p.Partition, now, positions, streams, versions, types, data, metadata)
	}

	if len(p.IdempotencyKeys) > 0 {
		var ins, rep keyColumns
		for _, k := range p.IdempotencyKeys {
			cols := &ins
			if pl.replace[[2]string{k.Scope, k.Key}] {
				cols = &rep
			}
			cols.add(k, now)
		}
		if len(ins.keys) > 0 {
			b.Queue(sqlIdempotencyKeysInsert, p.Partition, now, ins.scopes, ins.keys, ins.results, ins.expires)
		}
		if len(rep.keys) > 0 {
			b.Queue(sqlIdempotencyKeysReplace, p.Partition, now, rep.scopes, rep.keys, rep.results, rep.expires)
		}
	}

	pl.queuePublishes(b, now)

	if len(p.TaskDeletes) > 0 {
		b.Queue(sqlTasksDelete, p.TaskDeletes)
	}
	if n := len(p.TaskInserts); n > 0 {
		ids, queues, tokens := make([]string, n), make([]string, n), make([]string, n)
		payloads := make([][]byte, n)
		deliveries := make([]int32, n)
		visible := make([]int64, n)
		for i, t := range p.TaskInserts {
			ids[i], queues[i], payloads[i] = t.ID, t.Queue, t.Payload
			visible[i] = now + t.Delay.Microseconds()
			if t.ClaimToken != "" {
				tokens[i], deliveries[i] = t.ClaimToken, 1
				visible[i] = now + t.ClaimFor.Microseconds()
			}
		}
		b.Queue(sqlTasksInsert, p.Partition, now, ids, queues, payloads, deliveries, tokens, visible)
	}

	if len(p.TimerDeletes) > 0 {
		b.Queue(sqlTimersDelete, p.TimerDeletes)
	}
	if n := len(p.TimerInserts); n > 0 {
		ids, fireAt, payloads := make([]string, n), make([]int64, n), make([][]byte, n)
		for i, t := range p.TimerInserts {
			ids[i], fireAt[i], payloads[i] = t.ID, now+t.Delay.Microseconds(), t.Payload
		}
		b.Queue(sqlTimersInsert, p.Partition, ids, fireAt, payloads)
	}

	if len(p.ConsumerPositions) > 0 {
		// One statement may not update a row twice: the last position
		// given for a consumer and partition wins, as if written in order.
		cps := lastWins(p.ConsumerPositions, func(cp storage.ConsumerPosition) [2]any { return [2]any{cp.Consumer, cp.Partition} })
		consumers, parts, positions := make([]string, len(cps)), make([]int32, len(cps)), make([]int64, len(cps))
		for i, cp := range cps {
			consumers[i], parts[i], positions[i] = cp.Consumer, int32(cp.Partition), cp.Position
		}
		b.Queue(sqlConsumerPositionsUpsert, consumers, parts, positions)
	}

	if len(p.SagaUpserts) > 0 {
		ss := lastWins(p.SagaUpserts, func(s storage.Saga) [2]any { return [2]any{s.ID, nil} })
		n := len(ss)
		ids, streams, defs, statuses, ikeys := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		defVersions := make([]int32, n)
		terminal := make([]bool, n)
		states := make([][]byte, n)
		for i, s := range ss {
			ids[i], streams[i], defs[i], statuses[i], ikeys[i] = s.ID, s.Stream, s.Definition, s.Status, s.IdempotencyKey
			defVersions[i], terminal[i], states[i] = int32(s.DefinitionVersion), s.Terminal, s.State
		}
		b.Queue(sqlSagasUpsert, p.Partition, now, ids, streams, defs, defVersions, statuses, terminal, ikeys, states)
	}
}

// keyColumns are idempotency keys as the column arrays unnest reads.
type keyColumns struct {
	scopes, keys []string
	results      [][]byte
	expires      []int64
}

func (k *keyColumns) add(in storage.IdempotencyKeyInsert, now int64) {
	k.scopes = append(k.scopes, in.Scope)
	k.keys = append(k.keys, in.Key)
	k.results = append(k.results, in.Result)
	k.expires = append(k.expires, now+in.TTL.Microseconds())
}

// lastWins keeps the last element for each key, in the order of those last
// occurrences.
func lastWins[T any](in []T, key func(T) [2]any) []T {
	idx := make(map[[2]any]int, len(in))
	for i, v := range in {
		idx[key(v)] = i
	}
	if len(idx) == len(in) {
		return in
	}
	out := make([]T, 0, len(idx))
	for i, v := range in {
		if idx[key(v)] == i {
			out = append(out, v)
		}
	}
	return out
}

// explainUniqueViolation turns a unique violation that the first batch's
// checks could not foresee — a concurrent commit to another partition
// created the same stream or stored the same key in between — into the
// error the caller would have got had it come second.
func (d *Driver) explainUniqueViolation(ctx context.Context, p *storage.CommitParams, constraint string, cause error) error {
	switch constraint {
	case constraintStreamsPkey, constraintEventsStreamVersion:
		for _, a := range p.Appends {
			s, err := d.StreamInfo(ctx, a.Stream)
			if err != nil {
				continue
			}
			if s.Partition != p.Partition {
				return fmt.Errorf("%w: stream %q is in partition %d, not %d", storage.ErrWrongPartition, a.Stream, s.Partition, p.Partition)
			}
			if a.ExpectedVersion != storage.AnyVersion && a.ExpectedVersion != s.Version {
				return &storage.VersionConflictError{Stream: a.Stream, Expected: a.ExpectedVersion, Actual: s.Version}
			}
		}
	case constraintIdempotencyKeysPkey:
		for _, k := range p.IdempotencyKeys {
			if stored, err := d.IdempotencyKeyGet(ctx, k.Scope, k.Key); err == nil {
				return &storage.IdempotencyKeyExistsError{Existing: stored}
			}
		}
	case constraintTasksPkey, constraintTimersPkey:
		return fmt.Errorf("postgres: commit: %w: id already exists: %w", storage.ErrInvalid, cause)
	}
	return fmt.Errorf("postgres: commit: %w", cause)
}
