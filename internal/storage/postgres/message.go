package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/accord-saga/accord/internal/storage"
)

// Messages are written by the fenced commit (commit.go, group.go): a
// commit's messages take the partition's next message positions, under the
// partition row's lock, and every group of their topic that exists when
// the commit's fan-out statement runs gets a delivery. That statement runs
// after the commit's messages are inserted, so after its transaction holds
// ROW EXCLUSIVE on messages, and READ COMMITTED gives it a fresh snapshot:
// a GroupCreate, which takes SHARE on messages, either committed before it
// (and the fan-out sees the group) or waits for the commit (and its
// backfill sees the messages).

// sqlLockTopics locks the topics a group of commits publishes to against
// deletion and reads which of them exist.
const sqlLockTopics = `
SELECT name FROM topics WHERE name = ANY($1::text[]) ORDER BY name FOR KEY SHARE`

const sqlMessagesInsert = `
INSERT INTO messages (partition, position, topic, key, id, correlation_id, headers, payload, tombstone, published_at, expires_at)
SELECT $1, u.position, u.topic, u.key, u.id, u.correlation_id, u.headers, u.payload, u.tombstone, $2, u.expires_at
FROM unnest($3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[], $8::bytea[], $9::bytea[], $10::boolean[], $11::bigint[])
	AS u(position, topic, key, id, correlation_id, headers, payload, tombstone, expires_at)`

// sqlFanOut gives every group of each message's topic a delivery. A keyed
// delivery is blocked if its key already has an outstanding delivery in
// the group, or an earlier message of this commit has the same key.
const sqlFanOut = `
INSERT INTO deliveries (topic, grp, partition, position, key, visible_at, blocked)
SELECT g.topic, g.name, $1, u.position, u.key, $2,
	u.key <> '' AND (
		row_number() OVER (PARTITION BY g.topic, g.name, u.key ORDER BY u.position) > 1
		OR EXISTS (SELECT 1 FROM deliveries d
			WHERE d.topic = g.topic AND d.grp = g.name AND d.partition = $1 AND d.key = u.key AND d.key <> ''))
FROM unnest($3::text[], $4::bigint[], $5::text[]) AS u(topic, position, key)
JOIN consumer_groups g ON g.topic = u.topic`

// numberMessages checks that the topics of the commit's messages exist and
// gives each message its position.
func (pl *plan) numberMessages(v *view, now int64) error {
	p := pl.p
	pos := v.msgHeads[p.Partition]
	pl.msgs = nil
	if len(p.Publishes) > 0 {
		pl.msgs = make([]storage.Message, 0, len(p.Publishes))
	}
	for i, in := range p.Publishes {
		if !v.topics[in.Topic] {
			return fmt.Errorf("%w: publish %d: topic %q does not exist", storage.ErrInvalid, i, in.Topic)
		}
		pos++
		m := storage.Message{
			Topic:         in.Topic,
			Partition:     p.Partition,
			Position:      pos,
			Key:           in.Key,
			ID:            in.ID,
			CorrelationID: in.CorrelationID,
			Headers:       in.Headers,
			Payload:       in.Payload,
			Tombstone:     in.Tombstone,
			PublishedAt:   fromMicros(now),
		}
		if in.Tombstone {
			m.Payload = nil
		}
		if in.TTL > 0 {
			m.ExpiresAt = fromMicros(now + in.TTL.Microseconds())
		}
		pl.msgs = append(pl.msgs, m)
	}
	pl.msgHead = pos
	return nil
}

// queuePublishes queues the commit's messages and their deliveries.
func (pl *plan) queuePublishes(b *pgx.Batch, now int64) {
	n := len(pl.msgs)
	if n == 0 {
		return
	}
	positions := make([]int64, n)
	topics, keys, ids, corrs := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	headers, payloads := make([][]byte, n), make([][]byte, n)
	tombstones := make([]bool, n)
	expires := make([]*int64, n)
	for i, m := range pl.msgs {
		positions[i], topics[i], keys[i], ids[i], corrs[i] = m.Position, m.Topic, m.Key, m.ID, m.CorrelationID
		headers[i], payloads[i], tombstones[i] = m.Headers, m.Payload, m.Tombstone
		if !m.ExpiresAt.IsZero() {
			us := m.ExpiresAt.UnixMicro()
			expires[i] = &us
		}
	}
	b.Queue(sqlMessagesInsert, pl.p.Partition, now, positions, topics, keys, ids, corrs, headers, payloads, tombstones, expires)
	b.Queue(sqlFanOut, pl.p.Partition, now, topics, positions, keys)
}

const messageColumns = `m.partition, m.position, m.topic, m.key, m.id, m.correlation_id, m.headers, m.payload,
	m.tombstone, m.published_at, m.expires_at`

// messageRow receives messageColumns.
type messageRow struct {
	m         storage.Message
	published int64
	expires   *int64
}

func (r *messageRow) dest() []any {
	m := &r.m
	return []any{&m.Partition, &m.Position, &m.Topic, &m.Key, &m.ID, &m.CorrelationID, &m.Headers, &m.Payload,
		&m.Tombstone, &r.published, &r.expires}
}

func (r *messageRow) message() storage.Message {
	r.m.PublishedAt, r.m.ExpiresAt = fromMicros(r.published), fromNullMicros(r.expires)
	return r.m
}

func scanMessage(r pgx.Rows) (storage.Message, error) {
	var mr messageRow
	err := r.Scan(mr.dest()...)
	return mr.message(), err
}

// MessageRead returns a topic's messages in a partition from a position on.
func (d *Driver) MessageRead(ctx context.Context, params *storage.MessageReadParams) ([]storage.Message, error) {
	if err := params.Validate(d.partitions); err != nil {
		return nil, fmt.Errorf("postgres: message read: %w", err)
	}
	ms, err := queryAll(ctx, d.pool, scanMessage, `SELECT `+messageColumns+` FROM messages m
		WHERE m.topic = $1 AND m.partition = $2 AND m.position >= $3
		ORDER BY m.position LIMIT $4`, params.Topic, params.Partition, params.FromPosition, params.Limit)
	if err != nil {
		return nil, fmt.Errorf("postgres: message read %q: %w", params.Topic, err)
	}
	return ms, nil
}

// MessageHead returns the last message position written in a partition.
func (d *Driver) MessageHead(ctx context.Context, partition int) (int64, error) {
	if err := storage.CheckPartition(partition, d.partitions); err != nil {
		return 0, fmt.Errorf("postgres: message head: %w", err)
	}
	var head int64
	err := d.pool.QueryRow(ctx, `SELECT message_head FROM partitions WHERE partition = $1`, partition).Scan(&head)
	if err != nil {
		return 0, fmt.Errorf("postgres: message head %d: %w", partition, err)
	}
	return head, nil
}

// MessagesByCorrelation returns messages with a correlation id, in publish
// order.
func (d *Driver) MessagesByCorrelation(ctx context.Context, correlationID string, limit int) ([]storage.Message, error) {
	if err := checkKey("correlation id", correlationID); err != nil {
		return nil, fmt.Errorf("postgres: messages by correlation: %w", err)
	}
	if err := storage.CheckLimit(limit); err != nil {
		return nil, fmt.Errorf("postgres: messages by correlation: %w", err)
	}
	ms, err := queryAll(ctx, d.pool, scanMessage, `SELECT `+messageColumns+` FROM messages m
		WHERE m.correlation_id = $1 AND m.correlation_id <> ''
		ORDER BY m.published_at, m.partition, m.position LIMIT $2`, correlationID, limit)
	if err != nil {
		return nil, fmt.Errorf("postgres: messages by correlation %q: %w", correlationID, err)
	}
	return ms, nil
}

// sqlSweepRules selects, oldest first, the messages of a topic and
// partition that a rule deletes: published before $3 (if not NULL), with a
// newer message of their key (if $4), or beyond the newest that fit in $5
// payload bytes (if not NULL).
const sqlSweepRules = `
SELECT m.position, m.key FROM (
	SELECT position, key, published_at,
		sum(coalesce(octet_length(payload), 0)) OVER (ORDER BY position DESC ROWS UNBOUNDED PRECEDING) AS newer_bytes
	FROM messages WHERE topic = $1 AND partition = $2
) m
WHERE m.published_at < $3
	OR ($4 AND m.key <> '' AND EXISTS (SELECT 1 FROM messages n
		WHERE n.topic = $1 AND n.partition = $2 AND n.key = m.key AND n.key <> '' AND n.position > m.position))
	OR m.newer_bytes > $5
ORDER BY m.position
LIMIT $6`

// sqlSweepTombstones selects tombstones published before $3 that are the
// oldest message of their key.
const sqlSweepTombstones = `
SELECT m.position, m.key FROM messages m
WHERE m.topic = $1 AND m.partition = $2 AND m.tombstone AND m.key <> '' AND m.published_at < $3
	AND NOT EXISTS (SELECT 1 FROM messages n
		WHERE n.topic = $1 AND n.partition = $2 AND n.key = m.key AND n.key <> '' AND n.position < m.position)
ORDER BY m.position
LIMIT $4`

// MessageSweep applies retention and compaction to one topic and
// partition. The rules are applied first, then, with Compact and
// TombstonesBefore, the tombstones that nothing older of their key
// precedes any more are deleted, within what remains of Limit.
func (d *Driver) MessageSweep(ctx context.Context, params *storage.MessageSweepParams) (int, error) {
	if err := params.Validate(d.partitions); err != nil {
		return 0, fmt.Errorf("postgres: message sweep: %w", err)
	}
	p := params
	var before, maxBytes *int64
	if !p.PublishedBefore.IsZero() {
		us := p.PublishedBefore.UnixMicro()
		before = &us
	}
	if p.MaxBytes > 0 {
		maxBytes = &p.MaxBytes
	}
	var limit *int64
	if p.Limit > 0 {
		l := int64(p.Limit)
		limit = &l
	}
	deleted := 0
	err := d.inTx(ctx, func(tx pgx.Tx) error {
		deleted = 0
		if before != nil || p.Compact || maxBytes != nil {
			n, err := sweepOnce(ctx, tx, p.Topic, p.Partition, sqlSweepRules, p.Topic, p.Partition, before, p.Compact, maxBytes, limit)
			if err != nil {
				return err
			}
			deleted += n
		}
		if !p.Compact || p.TombstonesBefore.IsZero() || (limit != nil && int64(deleted) >= *limit) {
			return nil
		}
		var rest *int64
		if limit != nil {
			r := *limit - int64(deleted)
			rest = &r
		}
		n, err := sweepOnce(ctx, tx, p.Topic, p.Partition, sqlSweepTombstones, p.Topic, p.Partition, p.TombstonesBefore.UnixMicro(), rest)
		deleted += n
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("postgres: message sweep of %q in partition %d: %w", p.Topic, p.Partition, err)
	}
	return deleted, nil
}

// sweepOnce deletes the messages query selects (position, key), with their
// deliveries, under the locks of their keys, and unblocks the next delivery
// of each key whose delivery it deleted.
func sweepOnce(ctx context.Context, tx pgx.Tx, topic string, partition int, query string, args ...any) (int, error) {
	type doomed struct {
		pos int64
		key string
	}
	ms, err := queryAll(ctx, tx, func(r pgx.Rows) (doomed, error) {
		var m doomed
		err := r.Scan(&m.pos, &m.key)
		return m, err
	}, query, args...)
	if err != nil || len(ms) == 0 {
		return 0, err
	}
	// Keyless messages too: DeadLetterReplay takes the same lock before it
	// inserts a delivery of a message it checked still exists.
	var locks keyLockSet
	positions := make([]int64, len(ms))
	for i, m := range ms {
		positions[i] = m.pos
		locks.addAny(topic, partition, m.key)
	}
	if err := locks.exec(ctx, tx); err != nil {
		return 0, err
	}
	gone, err := queryAll(ctx, tx, scanKeyOf, `DELETE FROM deliveries
		WHERE topic = $1 AND partition = $2 AND position = ANY($3::bigint[])
		RETURNING topic, grp, partition, key`, topic, partition, positions)
	if err != nil {
		return 0, err
	}
	if err := unblockNext(ctx, tx, gone); err != nil {
		return 0, err
	}
	tag, err := tx.Exec(ctx, `DELETE FROM messages WHERE topic = $1 AND partition = $2 AND position = ANY($3::bigint[])`,
		topic, partition, positions)
	if err != nil {
		return 0, err
	}
	return int(tag.RowsAffected()), nil
}
