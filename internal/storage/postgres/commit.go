package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/accord-saga/accord/internal/storage"
)

// A commit costs two round trips. The first batch opens the transaction,
// locks the partition's row, checks the fence and advances the position
// counter in one statement, and locks the rows the checks read: the commit's streams
// and its existing idempotency keys. Go then checks versions and keys and
// numbers the events; the second batch writes everything and commits. If
// any statement of the second batch fails, the server skips the rest,
// COMMIT included, and the transaction is rolled back.

// sqlLockPartition takes the partition's row lock before the commit reads
// the clock, so that commit times follow the order in which the lock is
// granted: events later in the log never carry an earlier time. The lock is
// held to the end of the transaction: it serializes the partition's
// writers, so positions are gap-free, and a lease takeover waits on the
// same row, which is what makes the epoch check hold until commit.
const sqlLockPartition = `SELECT 1 FROM partitions WHERE partition = $1 FOR UPDATE`

// sqlFence advances the partition's head by the commit's event count if the
// epoch is current and the lease unexpired by the database's clock, and
// returns the new head and that clock reading: the commit's time.
const sqlFence = `
WITH clock AS (SELECT ` + nowSQL + ` AS now)
UPDATE partitions SET head = head + $3
FROM clock
WHERE partition = $1 AND epoch = $2 AND lease_expires_at > clock.now
RETURNING head, clock.now`

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

// Commit writes params in one transaction; see storage.Driver.
func (d *Driver) Commit(ctx context.Context, params *storage.CommitParams) (*storage.CommitResult, error) {
	if params == nil {
		return nil, fmt.Errorf("postgres: commit: %w: nil params", storage.ErrInvalid)
	}
	if err := params.Validate(d.partitions); err != nil {
		return nil, fmt.Errorf("postgres: commit: %w", err)
	}
	res, err := d.commit(ctx, params)
	if err != nil {
		// Explained after the connection went back: explaining reads with
		// a connection of its own, and the pool may have no other.
		if key := uniqueViolation(err); key != "" {
			return nil, d.explainUniqueViolation(ctx, params, key, err)
		}
		return nil, fmt.Errorf("postgres: commit: %w", err)
	}
	return res, nil
}

func (d *Driver) commit(ctx context.Context, params *storage.CommitParams) (*storage.CommitResult, error) {
	conn, err := d.pool.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Release()
	c := &committer{conn: conn, p: params}
	res, err := c.run(ctx)
	if err != nil {
		c.rollback(ctx)
		return nil, err
	}
	return res, nil
}

// committer holds one commit's state between its two batches.
type committer struct {
	conn *pgxpool.Conn
	p    *storage.CommitParams

	head    int64 // the partition's head after this commit
	now     int64 // the commit's database time, Unix microseconds
	streams map[string]storage.StreamInfo
	keys    map[[2]string]storage.IdempotencyKey
}

func (c *committer) run(ctx context.Context) (*storage.CommitResult, error) {
	if err := c.fenceAndLock(ctx); err != nil {
		return nil, err
	}
	// Keys before appends: a retried commit reports its key even though
	// its expected versions no longer match.
	replace, err := c.checkIdempotencyKeys()
	if err != nil {
		return nil, err
	}
	events, err := c.numberEvents()
	if err != nil {
		return nil, err
	}
	if err := c.write(ctx, events, replace); err != nil {
		return nil, err
	}
	if c.conn.Conn().PgConn().TxStatus() != 'I' {
		return nil, errors.New("transaction still open after commit")
	}
	return &storage.CommitResult{Events: events, Now: fromMicros(c.now)}, nil
}

// rollback ends a failed commit's transaction, if one is open. If that
// fails too the connection is closed, so the pool discards it and the
// server aborts the transaction.
func (c *committer) rollback(ctx context.Context) {
	pc := c.conn.Conn().PgConn()
	if pc.IsClosed() || pc.TxStatus() == 'I' {
		return
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if _, err := c.conn.Exec(rctx, "ROLLBACK"); err != nil {
		_ = c.conn.Conn().Close(rctx)
	}
}

func (c *committer) eventCount() int {
	n := 0
	for _, a := range c.p.Appends {
		n += len(a.Events)
	}
	return n
}

// fenceAndLock sends the first batch.
func (c *committer) fenceAndLock(ctx context.Context) error {
	p := c.p
	b := &pgx.Batch{}
	b.Queue("BEGIN ISOLATION LEVEL READ COMMITTED")
	b.Queue(sqlLockPartition, p.Partition)
	b.Queue(sqlFence, p.Partition, p.Epoch, c.eventCount())
	names := make([]string, len(p.Appends))
	for i, a := range p.Appends {
		names[i] = a.Stream
	}
	if len(names) > 0 {
		b.Queue(sqlLockStreams, names)
	}
	var scopes, keys []string
	for _, k := range p.IdempotencyKeys {
		scopes = append(scopes, k.Scope)
		keys = append(keys, k.Key)
	}
	if len(keys) > 0 {
		b.Queue(sqlLockIdempotencyKeys, scopes, keys)
	}

	br := c.conn.SendBatch(ctx, b)
	err := c.readLocks(br, len(names) > 0, len(keys) > 0)
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	return err
}

func (c *committer) readLocks(br pgx.BatchResults, streams, keys bool) error {
	for range 2 { // BEGIN, the partition lock
		if _, err := br.Exec(); err != nil {
			return err
		}
	}
	err := br.QueryRow().Scan(&c.head, &c.now)
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("%w: partition %d epoch %d", storage.ErrFenced, c.p.Partition, c.p.Epoch)
	}
	if err != nil {
		return err
	}
	c.streams = make(map[string]storage.StreamInfo)
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
			c.streams[s.Stream] = s
		}
	}
	c.keys = make(map[[2]string]storage.IdempotencyKey)
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
			c.keys[[2]string{k.Scope, k.Key}] = k
		}
	}
	return nil
}

// numberEvents checks every append against the locked stream rows and gives
// each event its position and version.
func (c *committer) numberEvents() ([]storage.Event, error) {
	n := c.eventCount()
	at := fromMicros(c.now)
	pos := c.head - int64(n)
	events := make([]storage.Event, 0, n)
	for _, a := range c.p.Appends {
		s, exists := c.streams[a.Stream]
		if exists && s.Partition != c.p.Partition {
			return nil, fmt.Errorf("%w: stream %q is in partition %d, not %d", storage.ErrWrongPartition, a.Stream, s.Partition, c.p.Partition)
		}
		version := s.Version // 0 for a new stream
		if a.ExpectedVersion != storage.AnyVersion && a.ExpectedVersion != version {
			return nil, &storage.VersionConflictError{Stream: a.Stream, Expected: a.ExpectedVersion, Actual: version}
		}
		for _, e := range a.Events {
			pos++
			version++
			events = append(events, storage.Event{
				Partition:  c.p.Partition,
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
	return events, nil
}

// checkIdempotencyKeys refuses a key stored and unexpired, or given twice,
// and returns the expired keys to overwrite.
func (c *committer) checkIdempotencyKeys() (replace map[[2]string]bool, err error) {
	replace = make(map[[2]string]bool)
	seen := make(map[[2]string]storage.IdempotencyKey, len(c.p.IdempotencyKeys))
	for _, k := range c.p.IdempotencyKeys {
		id := [2]string{k.Scope, k.Key}
		if first, dup := seen[id]; dup {
			// As if the keys were stored one after the other: the second
			// finds the first.
			return nil, &storage.IdempotencyKeyExistsError{Existing: first}
		}
		if stored, ok := c.keys[id]; ok {
			if stored.ExpiresAt.UnixMicro() > c.now {
				return nil, &storage.IdempotencyKeyExistsError{Existing: stored}
			}
			replace[id] = true
		}
		seen[id] = storage.IdempotencyKey{
			Scope:     k.Scope,
			Key:       k.Key,
			Partition: c.p.Partition,
			Result:    k.Result,
			CreatedAt: fromMicros(c.now),
			ExpiresAt: fromMicros(c.now + k.TTL.Microseconds()),
		}
	}
	return replace, nil
}

// write sends the second batch: every row, then COMMIT.
func (c *committer) write(ctx context.Context, events []storage.Event, replaceKeys map[[2]string]bool) error {
	p := c.p
	b := &pgx.Batch{}

	var newNames, oldNames []string
	var newVersions, oldVersions []int64
	last := make(map[string]int64, len(p.Appends))
	for _, e := range events {
		last[e.Stream] = e.Version
	}
	for _, a := range p.Appends {
		if _, exists := c.streams[a.Stream]; exists {
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
	if len(events) > 0 {
		n := len(events)
		positions, versions := make([]int64, n), make([]int64, n)
		streams, types := make([]string, n), make([]string, n)
		data, metadata := make([][]byte, n), make([][]byte, n)
		for i, e := range events {
			positions[i], versions[i] = e.Position, e.Version
			streams[i], types[i] = e.Stream, e.Type
			data[i], metadata[i] = e.Data, e.Metadata
		}
		b.Queue(sqlEventsInsert, p.Partition, c.now, positions, streams, versions, types, data, metadata)
	}

	if len(p.IdempotencyKeys) > 0 {
		var ins, rep keyColumns
		for _, k := range p.IdempotencyKeys {
			cols := &ins
			if replaceKeys[[2]string{k.Scope, k.Key}] {
				cols = &rep
			}
			cols.add(k, c.now)
		}
		if len(ins.keys) > 0 {
			b.Queue(sqlIdempotencyKeysInsert, p.Partition, c.now, ins.scopes, ins.keys, ins.results, ins.expires)
		}
		if len(rep.keys) > 0 {
			b.Queue(sqlIdempotencyKeysReplace, p.Partition, c.now, rep.scopes, rep.keys, rep.results, rep.expires)
		}
	}

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
			visible[i] = c.now + t.Delay.Microseconds()
			if t.ClaimToken != "" {
				tokens[i], deliveries[i] = t.ClaimToken, 1
				visible[i] = c.now + t.ClaimFor.Microseconds()
			}
		}
		b.Queue(sqlTasksInsert, p.Partition, c.now, ids, queues, payloads, deliveries, tokens, visible)
	}

	if len(p.TimerDeletes) > 0 {
		b.Queue(sqlTimersDelete, p.TimerDeletes)
	}
	if n := len(p.TimerInserts); n > 0 {
		ids, fireAt, payloads := make([]string, n), make([]int64, n), make([][]byte, n)
		for i, t := range p.TimerInserts {
			ids[i], fireAt[i], payloads[i] = t.ID, c.now+t.Delay.Microseconds(), t.Payload
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
		b.Queue(sqlSagasUpsert, p.Partition, c.now, ids, streams, defs, defVersions, statuses, terminal, ikeys, states)
	}

	b.Queue("COMMIT")
	br := c.conn.SendBatch(ctx, b)
	var err error
	for range b.Len() {
		if _, err = br.Exec(); err != nil {
			break
		}
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	return err
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
