package sqlite

import (
	"context"
	"fmt"
	"strings"

	"github.com/accord-saga/accord/internal/storage"
)

const (
	sqlDeadLetterColumns = `id, topic, grp, partition, position, deliveries, reason, history, dead_at,
		partition, position, topic, key, message_id, correlation_id, headers, payload, tombstone, published_at, expires_at`
	sqlDeadLetterList = `SELECT ` + sqlDeadLetterColumns + ` FROM dead_letters
		WHERE topic = ? AND grp = ? AND id > ? ORDER BY id LIMIT ?`
	// A replayed delivery waits behind the outstanding delivery of its key,
	// if there is one. It keeps its count and history, with a fresh budget.
	sqlReplayInsert = `INSERT INTO deliveries (topic, grp, partition, position, key, deliveries, visible_at, blocked, history,
			delivered_before)
		SELECT d.topic, d.grp, d.partition, d.position, d.key, d.deliveries, ?2,
			d.key <> '' AND EXISTS (SELECT 1 FROM deliveries o
				WHERE o.topic = d.topic AND o.grp = d.grp AND o.partition = d.partition AND o.key = d.key),
			d.history, d.deliveries
		FROM dead_letters d WHERE d.id = ?1
			AND EXISTS (SELECT 1 FROM messages m WHERE m.partition = d.partition AND m.position = d.position)
		ON CONFLICT DO NOTHING`
	sqlReplayMissing = `SELECT count(*) FROM dead_letters d WHERE d.id = ?
		AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.partition = d.partition AND m.position = d.position)`
)

// DeadLetterList pages through a group's dead letters by id.
func (d *Driver) DeadLetterList(ctx context.Context, params *storage.DeadLetterListParams) ([]storage.DeadLetter, error) {
	if err := params.Validate(); err != nil {
		return nil, fmt.Errorf("sqlite: dead letter list: %w", err)
	}
	rows, err := d.rdb.QueryContext(ctx, sqlDeadLetterList, params.Topic, params.Group, params.AfterID, params.Limit)
	if err != nil {
		return nil, fmt.Errorf("sqlite: dead letter list %s/%s: %w", params.Topic, params.Group, err)
	}
	defer rows.Close()
	var out []storage.DeadLetter
	for rows.Next() {
		var dl storage.DeadLetter
		var dead int64
		dest := append([]any{&dl.ID, &dl.Topic, &dl.Group, &dl.Partition, &dl.Position, &dl.Deliveries, &dl.Reason,
			&dl.History, &dead}, messageDest(&dl.Message)...)
		if err := rows.Scan(dest...); err != nil {
			return nil, fmt.Errorf("sqlite: dead letter list %s/%s: %w", params.Topic, params.Group, err)
		}
		dl.DeadAt = fromMicros(dead)
		out = append(out, dl)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: dead letter list %s/%s: %w", params.Topic, params.Group, err)
	}
	return out, nil
}

// DeadLetterReplay gives dead letters back to their group, with their
// delivery count and history and a fresh budget of deliveries; those whose
// message is gone stay.
func (d *Driver) DeadLetterReplay(ctx context.Context, topic, group string, ids []int64) (int, error) {
	return d.eachDeadLetter(ctx, "replay", topic, group, ids, func(tx *wtx, id int64) (bool, error) {
		var missing int
		if err := tx.queryRow(sqlReplayMissing, id).Scan(&missing); err != nil || missing > 0 {
			return false, err
		}
		if _, err := tx.exec(sqlReplayInsert, id, tx.now); err != nil {
			return false, err
		}
		_, err := tx.exec(`DELETE FROM dead_letters WHERE id = ?`, id)
		return err == nil, err
	})
}

// DeadLetterPurge deletes dead letters.
func (d *Driver) DeadLetterPurge(ctx context.Context, topic, group string, ids []int64) (int, error) {
	return d.eachDeadLetter(ctx, "purge", topic, group, ids, func(tx *wtx, id int64) (bool, error) {
		_, err := tx.exec(`DELETE FROM dead_letters WHERE id = ?`, id)
		return err == nil, err
	})
}

// eachDeadLetter runs fn, in one write, on each of the group's dead letters
// among ids (all of them if ids is nil), in id order, and returns how many
// fn reported done.
func (d *Driver) eachDeadLetter(ctx context.Context, op, topic, group string, ids []int64,
	fn func(tx *wtx, id int64) (done bool, err error)) (int, error) {
	if err := checkDeadLetters(topic, group, ids); err != nil {
		return 0, fmt.Errorf("sqlite: dead letter %s: %w", op, err)
	}
	var n int
	err := d.w.exec(ctx, func(tx *wtx) error {
		n = 0
		all, err := tx.deadLetterIDs(topic, group, ids)
		if err != nil {
			return fmt.Errorf("sqlite: dead letter %s %s/%s: %w", op, topic, group, err)
		}
		for _, id := range all {
			done, err := fn(tx, id)
			if err != nil {
				return fmt.Errorf("sqlite: dead letter %s %s/%s: %d: %w", op, topic, group, id, err)
			}
			if done {
				n++
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}

func checkDeadLetters(topic, group string, ids []int64) error {
	if err := storage.CheckGroup(topic, group); err != nil {
		return err
	}
	return storage.CheckIDs(ids)
}

// deadLetterIDs returns the ids of the group's dead letters among ids (all
// of them if ids is nil), in id order.
func (tx *wtx) deadLetterIDs(topic, group string, ids []int64) ([]int64, error) {
	query := `SELECT id FROM dead_letters WHERE topic = ? AND grp = ?`
	args := []any{topic, group}
	if ids != nil {
		if len(ids) == 0 {
			return nil, nil
		}
		query += ` AND id IN (?` + strings.Repeat(", ?", len(ids)-1) + `)`
		for _, id := range ids {
			args = append(args, id)
		}
	}
	return tx.int64s(query+` ORDER BY id`, args...)
}
