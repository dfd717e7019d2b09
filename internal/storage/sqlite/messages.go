package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"time"

	"github.com/accord-saga/accord/internal/storage"
)

const (
	sqlMessageColumns = `partition, position, topic, key, id, correlation_id, headers, payload, tombstone, published_at, expires_at`
	sqlTopicExists    = `SELECT count(*) FROM topics WHERE name = ?`
	sqlMessageInsert  = `INSERT INTO messages (` + sqlMessageColumns + `) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`
	// One delivery per group of the topic; a keyed one is blocked when its
	// key already has an outstanding delivery in the group (the new message
	// has the partition's highest position).
	sqlFanOut = `INSERT INTO deliveries (topic, grp, partition, position, key, visible_at, blocked)
		SELECT g.topic, g.name, ?2, ?3, ?4, ?5, ?4 <> '' AND EXISTS (SELECT 1 FROM deliveries d
			WHERE d.topic = g.topic AND d.grp = g.name AND d.partition = ?2 AND d.key = ?4)
		FROM consumer_groups g WHERE g.topic = ?1`
	sqlMessageRead = `SELECT ` + sqlMessageColumns + ` FROM messages
		WHERE topic = ? AND partition = ? AND position >= ? ORDER BY position LIMIT ?`
	sqlMessageHead          = `SELECT message_head FROM partitions WHERE partition = ?`
	sqlMessagesByCorrelated = `SELECT ` + sqlMessageColumns + ` FROM messages
		WHERE correlation_id = ? AND correlation_id <> '' ORDER BY published_at, partition, position LIMIT ?`

	// Sweep candidates, each rule on its own: age, compaction (a newer
	// message of the same key exists), size (the newest messages whose
	// payloads sum to at most ?3 stay).
	sqlSweepAge     = `SELECT position FROM messages WHERE topic = ? AND partition = ? AND published_at < ?`
	sqlSweepCompact = `SELECT m.position FROM messages m WHERE m.topic = ?1 AND m.partition = ?2 AND m.key <> ''
		AND EXISTS (SELECT 1 FROM messages n
			WHERE n.topic = ?1 AND n.partition = ?2 AND n.key = m.key AND n.key <> '' AND n.position > m.position)`
	sqlSweepSize = `SELECT position FROM (SELECT position,
			sum(coalesce(length(payload), 0)) OVER (ORDER BY position DESC ROWS UNBOUNDED PRECEDING) AS total
		FROM messages WHERE topic = ?1 AND partition = ?2) WHERE total > ?3`
	// Tombstones older than ?3 that are the oldest message of their key.
	sqlSweepTombstones = `SELECT m.position FROM messages m WHERE m.topic = ?1 AND m.partition = ?2 AND m.tombstone
		AND m.key <> '' AND m.published_at < ?3
		AND NOT EXISTS (SELECT 1 FROM messages n
			WHERE n.topic = ?1 AND n.partition = ?2 AND n.key = m.key AND n.key <> '' AND n.position < m.position)
		ORDER BY m.position LIMIT ?4`
	sqlSweepDeliveries = `DELETE FROM deliveries WHERE partition = ? AND position = ? RETURNING topic, grp, key`
	sqlMessageDelete   = `DELETE FROM messages WHERE partition = ? AND position = ?`
)

// publish writes p's messages, with positions after head, and their
// deliveries; it returns the new message head.
func (tx *wtx) publish(p *storage.CommitParams, head int64, res *storage.CommitResult) (int64, error) {
	if len(p.Publishes) == 0 {
		return head, nil
	}
	res.Messages = make([]storage.Message, 0, len(p.Publishes))
	checked := ""
	for i := range p.Publishes {
		in := &p.Publishes[i]
		if in.Topic != checked {
			var n int
			if err := tx.s.topicExists.QueryRow(in.Topic).Scan(&n); err != nil {
				return 0, fmt.Errorf("sqlite: commit: read topic %q: %w", in.Topic, err)
			}
			if n == 0 {
				return 0, fmt.Errorf("sqlite: commit: publish %d: %w: topic %q does not exist", i, storage.ErrInvalid, in.Topic)
			}
			checked = in.Topic
		}
		head++
		m := storage.Message{
			Topic: in.Topic, Partition: p.Partition, Position: head, Key: in.Key, ID: in.ID,
			CorrelationID: in.CorrelationID, Headers: in.Headers, Payload: in.Payload, Tombstone: in.Tombstone,
			PublishedAt: fromMicros(tx.now),
		}
		if in.Tombstone {
			m.Payload = nil
		}
		var expires any
		if in.TTL > 0 {
			exp := tx.now + durMicros(in.TTL)
			expires, m.ExpiresAt = exp, fromMicros(exp)
		}
		if _, err := tx.s.messageInsert.Exec(m.Partition, m.Position, m.Topic, m.Key, m.ID, m.CorrelationID,
			m.Headers, m.Payload, boolInt(m.Tombstone), tx.now, expires); err != nil {
			return 0, fmt.Errorf("sqlite: commit: insert message %d of topic %q: %w", i, in.Topic, err)
		}
		if _, err := tx.s.fanOut.Exec(m.Topic, m.Partition, m.Position, m.Key, tx.now); err != nil {
			return 0, fmt.Errorf("sqlite: commit: deliveries of message %d of topic %q: %w", i, in.Topic, err)
		}
		res.Messages = append(res.Messages, m)
	}
	return head, nil
}

// MessageRead returns a topic's messages in a partition from a position on.
func (d *Driver) MessageRead(ctx context.Context, params *storage.MessageReadParams) ([]storage.Message, error) {
	if err := params.Validate(d.info.Partitions); err != nil {
		return nil, fmt.Errorf("sqlite: message read: %w", err)
	}
	rows, err := d.r.messageRead.QueryContext(ctx, params.Topic, params.Partition, params.FromPosition, params.Limit)
	if err != nil {
		return nil, fmt.Errorf("sqlite: message read %q: %w", params.Topic, err)
	}
	ms, err := scanMessages(rows)
	if err != nil {
		return nil, fmt.Errorf("sqlite: message read %q: %w", params.Topic, err)
	}
	return ms, nil
}

// MessageHead returns the last message position written in a partition.
func (d *Driver) MessageHead(ctx context.Context, partition int) (int64, error) {
	if err := storage.CheckPartition(partition, d.info.Partitions); err != nil {
		return 0, fmt.Errorf("sqlite: message head: %w", err)
	}
	var head int64
	if err := d.r.messageHead.QueryRowContext(ctx, partition).Scan(&head); err != nil {
		return 0, fmt.Errorf("sqlite: message head %d: %w", partition, err)
	}
	return head, nil
}

// MessagesByCorrelation returns messages with a correlation id, in publish
// order.
func (d *Driver) MessagesByCorrelation(ctx context.Context, correlationID string, limit int) ([]storage.Message, error) {
	if err := checkName("correlation id", correlationID); err != nil {
		return nil, fmt.Errorf("sqlite: messages by correlation: %w", err)
	}
	if err := storage.CheckLimit(limit); err != nil {
		return nil, fmt.Errorf("sqlite: messages by correlation: %w", err)
	}
	rows, err := d.rdb.QueryContext(ctx, sqlMessagesByCorrelated, correlationID, limit)
	if err != nil {
		return nil, fmt.Errorf("sqlite: messages by correlation %q: %w", correlationID, err)
	}
	ms, err := scanMessages(rows)
	if err != nil {
		return nil, fmt.Errorf("sqlite: messages by correlation %q: %w", correlationID, err)
	}
	return ms, nil
}

// MessageSweep applies retention and compaction to one topic and
// partition.
func (d *Driver) MessageSweep(ctx context.Context, params *storage.MessageSweepParams) (int, error) {
	if err := params.Validate(d.info.Partitions); err != nil {
		return 0, fmt.Errorf("sqlite: message sweep: %w", err)
	}
	var deleted int
	err := d.w.exec(ctx, func(tx *wtx) error {
		deleted = 0
		n, err := tx.sweep(params)
		if err != nil {
			return fmt.Errorf("sqlite: message sweep of %q in partition %d: %w", params.Topic, params.Partition, err)
		}
		deleted = n
		return nil
	})
	return deleted, err
}

func (tx *wtx) sweep(p *storage.MessageSweepParams) (int, error) {
	var doomed []int64
	add := func(query string, args ...any) error {
		ps, err := tx.int64s(query, args...)
		doomed = append(doomed, ps...)
		return err
	}
	if !p.PublishedBefore.IsZero() {
		if err := add(sqlSweepAge, p.Topic, p.Partition, toMicros(p.PublishedBefore)); err != nil {
			return 0, err
		}
	}
	if p.Compact {
		if err := add(sqlSweepCompact, p.Topic, p.Partition); err != nil {
			return 0, err
		}
	}
	if p.MaxBytes > 0 {
		if err := add(sqlSweepSize, p.Topic, p.Partition, p.MaxBytes); err != nil {
			return 0, err
		}
	}
	slices.Sort(doomed)
	doomed = slices.Compact(doomed)
	if p.Limit > 0 && len(doomed) > p.Limit {
		doomed = doomed[:p.Limit]
	}
	for _, pos := range doomed {
		if err := tx.messageDelete(p.Partition, pos); err != nil {
			return 0, err
		}
	}
	n := len(doomed)
	if p.Compact && !p.TombstonesBefore.IsZero() && (p.Limit == 0 || n < p.Limit) {
		limit := -1
		if p.Limit > 0 {
			limit = p.Limit - n
		}
		tombs, err := tx.int64s(sqlSweepTombstones, p.Topic, p.Partition, toMicros(p.TombstonesBefore), limit)
		if err != nil {
			return 0, err
		}
		for _, pos := range tombs {
			if err := tx.messageDelete(p.Partition, pos); err != nil {
				return 0, err
			}
		}
		n += len(tombs)
	}
	return n, nil
}

// int64s runs a query of one integer column (positions, ids).
func (tx *wtx) int64s(query string, args ...any) ([]int64, error) {
	rows, err := tx.conn.QueryContext(context.Background(), query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []int64
	for rows.Next() {
		var pos int64
		if err := rows.Scan(&pos); err != nil {
			return nil, err
		}
		out = append(out, pos)
	}
	return out, rows.Err()
}

// messageDelete deletes a message and its deliveries, unblocking the next
// delivery of each one's key.
func (tx *wtx) messageDelete(partition int, position int64) error {
	rows, err := tx.s.sweepDeliveries.Query(partition, position)
	if err != nil {
		return fmt.Errorf("delete deliveries of position %d: %w", position, err)
	}
	type gone struct{ topic, grp, key string }
	var all []gone
	for rows.Next() {
		var g gone
		if err := rows.Scan(&g.topic, &g.grp, &g.key); err != nil {
			rows.Close()
			return fmt.Errorf("delete deliveries of position %d: %w", position, err)
		}
		all = append(all, g)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("delete deliveries of position %d: %w", position, err)
	}
	for _, g := range all {
		if err := tx.unblockNext(g.topic, g.grp, partition, g.key); err != nil {
			return err
		}
	}
	if _, err := tx.s.messageDelete.Exec(partition, position); err != nil {
		return fmt.Errorf("delete message at position %d: %w", position, err)
	}
	return nil
}

func scanMessages(rows *sql.Rows) ([]storage.Message, error) {
	defer rows.Close()
	var out []storage.Message
	for rows.Next() {
		var m storage.Message
		if err := rows.Scan(messageDest(&m)...); err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

// messageDest returns the scan destinations of sqlMessageColumns into m.
// The last three convert as they scan, so that m is complete as soon as
// Scan returns.
func messageDest(m *storage.Message) []any {
	return []any{&m.Partition, &m.Position, &m.Topic, &m.Key, &m.ID, &m.CorrelationID, &m.Headers, &m.Payload,
		tombstoneCol{m}, publishedCol{m}, expiresCol{m}}
}

type (
	tombstoneCol struct{ m *storage.Message }
	publishedCol struct{ m *storage.Message }
	expiresCol   struct{ m *storage.Message }
)

func (c tombstoneCol) Scan(v any) error {
	n, ok := v.(int64)
	if !ok {
		return fmt.Errorf("tombstone column holds %T", v)
	}
	c.m.Tombstone = n != 0
	return nil
}

func (c publishedCol) Scan(v any) error {
	n, ok := v.(int64)
	if !ok {
		return fmt.Errorf("published_at column holds %T", v)
	}
	c.m.PublishedAt = fromMicros(n)
	return nil
}

func (c expiresCol) Scan(v any) error {
	switch n := v.(type) {
	case nil:
		c.m.ExpiresAt = time.Time{}
	case int64:
		c.m.ExpiresAt = fromMicros(n)
	default:
		return fmt.Errorf("expires_at column holds %T", v)
	}
	return nil
}
