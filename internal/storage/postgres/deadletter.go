package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/accord-saga/accord/internal/storage"
)

// The dead letter's copy of its message, in messageColumns' order.
const deadLetterColumns = `m.id, m.topic, m.grp, m.partition, m.position, m.deliveries, m.reason, m.history, m.dead_at,
	m.partition, m.position, m.topic, m.key, m.message_id, m.correlation_id, m.headers, m.payload,
	m.tombstone, m.published_at, m.expires_at`

// DeadLetterList pages through a group's dead letters by id.
func (d *Driver) DeadLetterList(ctx context.Context, params *storage.DeadLetterListParams) ([]storage.DeadLetter, error) {
	if err := params.Validate(); err != nil {
		return nil, fmt.Errorf("postgres: dead letter list: %w", err)
	}
	rows, err := d.pool.Query(ctx, `SELECT `+deadLetterColumns+` FROM dead_letters m
		WHERE m.topic = $1 AND m.grp = $2 AND m.id > $3 ORDER BY m.id LIMIT $4`,
		params.Topic, params.Group, params.AfterID, params.Limit)
	if err != nil {
		return nil, fmt.Errorf("postgres: dead letter list %s/%s: %w", params.Topic, params.Group, err)
	}
	out, err := collect(rows, func(r pgx.Rows) (storage.DeadLetter, error) {
		var dl storage.DeadLetter
		var dead int64
		var mr messageRow
		err := r.Scan(append([]any{&dl.ID, &dl.Topic, &dl.Group, &dl.Partition, &dl.Position, &dl.Deliveries,
			&dl.Reason, &dl.History, &dead}, mr.dest()...)...)
		dl.DeadAt, dl.Message = fromMicros(dead), mr.message()
		return dl, err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: dead letter list %s/%s: %w", params.Topic, params.Group, err)
	}
	return out, nil
}

// sqlReplay turns dead letters whose message still exists into
// deliveries again (count and history kept, delivered_before marking the
// fresh budget), each blocked if its key has an outstanding delivery or an
// earlier dead letter of the same key comes back with it.
const sqlReplay = `
WITH r AS (
	DELETE FROM dead_letters dl
	WHERE dl.topic = $1 AND dl.grp = $2 AND dl.id = ANY($3::bigint[])
		AND EXISTS (SELECT 1 FROM messages m
			WHERE m.partition = dl.partition AND m.position = dl.position AND m.topic = dl.topic)
	RETURNING dl.*
)
INSERT INTO deliveries (topic, grp, partition, position, key, deliveries, visible_at, blocked, history, delivered_before)
SELECT r.topic, r.grp, r.partition, r.position, r.key, r.deliveries, ` + nowSQL + `,
	r.key <> '' AND (
		row_number() OVER (PARTITION BY r.partition, r.key ORDER BY r.id) > 1
		OR EXISTS (SELECT 1 FROM deliveries o
			WHERE o.topic = r.topic AND o.grp = r.grp AND o.partition = r.partition AND o.key = r.key AND o.key <> '')),
	r.history, r.deliveries
FROM r
ON CONFLICT DO NOTHING`

// DeadLetterReplay gives dead letters back to their group, with their
// delivery count and history and a fresh budget of deliveries, after any
// delivery of their key already outstanding. It
// takes the key locks of the dead letters, keyless ones included, which
// MessageSweep takes too: a message found in place is not deleted before
// its delivery is in.
func (d *Driver) DeadLetterReplay(ctx context.Context, topic, group string, ids []int64) (int, error) {
	if err := storage.CheckGroup(topic, group); err != nil {
		return 0, fmt.Errorf("postgres: dead letter replay: %w", err)
	}
	if err := storage.CheckIDs(ids); err != nil {
		return 0, fmt.Errorf("postgres: dead letter replay: %w", err)
	}
	n := 0
	err := d.inTx(ctx, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT id, partition, key FROM dead_letters
			WHERE topic = $1 AND grp = $2 AND ($3::bigint[] IS NULL OR id = ANY($3::bigint[]))`, topic, group, ids)
		if err != nil {
			return err
		}
		var locks keyLockSet
		found, err := collect(rows, func(r pgx.Rows) (int64, error) {
			var id int64
			var part int
			var key string
			err := r.Scan(&id, &part, &key)
			locks.addAny(topic, part, key)
			return id, err
		})
		if err != nil || len(found) == 0 {
			return err
		}
		if err := locks.exec(ctx, tx); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, sqlReplay, topic, group, found)
		n = int(tag.RowsAffected())
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("postgres: dead letter replay %s/%s: %w", topic, group, err)
	}
	return n, nil
}

// DeadLetterPurge deletes dead letters; ids nil deletes them all.
func (d *Driver) DeadLetterPurge(ctx context.Context, topic, group string, ids []int64) (int, error) {
	if err := storage.CheckGroup(topic, group); err != nil {
		return 0, fmt.Errorf("postgres: dead letter purge: %w", err)
	}
	if err := storage.CheckIDs(ids); err != nil {
		return 0, fmt.Errorf("postgres: dead letter purge: %w", err)
	}
	tag, err := d.pool.Exec(ctx, `DELETE FROM dead_letters
		WHERE topic = $1 AND grp = $2 AND ($3::bigint[] IS NULL OR id = ANY($3::bigint[]))`, topic, group, ids)
	if err != nil {
		return 0, fmt.Errorf("postgres: dead letter purge %s/%s: %w", topic, group, err)
	}
	return int(tag.RowsAffected()), nil
}
