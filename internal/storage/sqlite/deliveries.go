package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/accord-saga/accord/internal/storage"
)

const (
	sqlDeliveryColumns = `d.topic, d.grp, d.partition, d.position, d.key, d.deliveries, d.claim_token, d.visible_at,
		d.blocked, d.history, d.delivered_before`
	sqlDeliveryMessageColumns = sqlDeliveryColumns + `, m.partition, m.position, m.topic, m.key, m.id, m.correlation_id,
		m.headers, m.payload, m.tombstone, m.published_at, m.expires_at`
	sqlDeliveryJoin = ` FROM deliveries d JOIN messages m ON m.partition = d.partition AND m.position = d.position`
	// Oldest visible first: the claim index serves the order.
	sqlDeliveryClaimable = `SELECT ` + sqlDeliveryMessageColumns + sqlDeliveryJoin + `
		WHERE d.topic = ? AND d.grp = ? AND d.blocked = 0 AND d.visible_at <= ?
		ORDER BY d.visible_at, d.partition, d.position LIMIT ?`
	sqlDeliveryWhere     = ` WHERE topic = ? AND grp = ? AND partition = ? AND position = ?`
	sqlDeliveryClaim     = `UPDATE deliveries SET claim_token = ?, deliveries = deliveries + 1, visible_at = ?` + sqlDeliveryWhere
	sqlDeliveryDelete    = `DELETE FROM deliveries` + sqlDeliveryWhere
	sqlDeliveryAck       = `DELETE FROM deliveries` + sqlDeliveryWhere + ` AND claim_token = ? RETURNING key`
	sqlDeliveryGet       = `SELECT key, deliveries FROM deliveries` + sqlDeliveryWhere + ` AND claim_token = ?`
	sqlDeliveryHeartbeat = `UPDATE deliveries SET visible_at = ?` + sqlDeliveryWhere + ` AND claim_token = ?`
	// A nacked delivery has no claim: its token stops working at once.
	sqlDeliveryNack = `UPDATE deliveries SET visible_at = ?, claim_token = '', history = ?` + sqlDeliveryWhere + ` AND claim_token = ?`
	// Unblocks the lowest position of a key's deliveries when none of them
	// is unblocked any more.
	sqlUnblockNext = `UPDATE deliveries SET blocked = 0
		WHERE topic = ?1 AND grp = ?2 AND partition = ?3 AND blocked = 1 AND position = (
			SELECT min(position) FROM deliveries WHERE topic = ?1 AND grp = ?2 AND partition = ?3 AND key = ?4)
		AND NOT EXISTS (SELECT 1 FROM deliveries
			WHERE topic = ?1 AND grp = ?2 AND partition = ?3 AND key = ?4 AND blocked = 0)`
	sqlDeadLetterInsert = `INSERT INTO dead_letters (topic, grp, partition, position, deliveries, reason, history, dead_at,
			key, message_id, correlation_id, headers, payload, tombstone, published_at, expires_at)
		SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8,
			key, id, correlation_id, headers, payload, tombstone, published_at, expires_at
		FROM messages WHERE partition = ?3 AND position = ?4`
	sqlDeliveryStalled = `SELECT ` + sqlDeliveryMessageColumns + sqlDeliveryJoin + `
		WHERE m.published_at < ? ORDER BY m.published_at, m.partition, m.position, d.topic, d.grp LIMIT ?`
	// The unary + keeps SQLite on deliveries_message: a message has a
	// delivery per group, a topic a delivery per message and group.
	sqlDeliveriesOf = `SELECT ` + sqlDeliveryColumns + ` FROM deliveries d
		WHERE d.partition = ? AND d.position = ? AND +d.topic = ? ORDER BY d.grp`
)

// maxDropsPerClaim bounds the expired and dead-lettered deliveries one
// claim clears, so that one transaction stays bounded behind a backlog of
// expired messages; the next claim goes on.
const maxDropsPerClaim = storage.MaxReadLimit

// DeliveryClaim claims up to Limit claimable deliveries of a group, first
// dropping expired ones and dead-lettering those out of deliveries.
func (d *Driver) DeliveryClaim(ctx context.Context, params *storage.DeliveryClaimParams) (*storage.DeliveryClaimResult, error) {
	if err := params.Validate(); err != nil {
		return nil, fmt.Errorf("sqlite: delivery claim: %w", err)
	}
	var res *storage.DeliveryClaimResult
	err := d.w.exec(ctx, func(tx *wtx) error {
		var err error
		res, err = tx.claim(params)
		if err != nil {
			return fmt.Errorf("sqlite: delivery claim of %s/%s: %w", params.Topic, params.Group, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

func (tx *wtx) claim(p *storage.DeliveryClaimParams) (*storage.DeliveryClaimResult, error) {
	res := &storage.DeliveryClaimResult{}
	visible := tx.now + durMicros(p.Visibility)
	reason := fmt.Sprintf("max deliveries (%d) reached", p.MaxDeliveries)
	for len(res.Deliveries) < p.Limit && res.Expired+res.DeadLettered < maxDropsPerClaim {
		cands, err := tx.claimable(p.Topic, p.Group, p.Limit-len(res.Deliveries))
		if err != nil {
			return nil, err
		}
		dropped := false
		for i := range cands {
			c := &cands[i]
			switch {
			case !c.Message.ExpiresAt.IsZero() && toMicros(c.Message.ExpiresAt) <= tx.now:
				if _, err := tx.s.deliveryDelete.Exec(c.Topic, c.Group, c.Partition, c.Position); err != nil {
					return nil, fmt.Errorf("drop expired delivery: %w", err)
				}
				if err := tx.unblockNext(c.Topic, c.Group, c.Partition, c.Key); err != nil {
					return nil, err
				}
				res.Expired++
				dropped = true
			case c.Deliveries-c.DeliveredBefore >= p.MaxDeliveries:
				if err := tx.deadLetter(c, reason, c.History); err != nil {
					return nil, err
				}
				res.DeadLettered++
				dropped = true
			default:
				c.ClaimToken = storage.NewToken()
				if _, err := tx.s.deliveryClaim.Exec(c.ClaimToken, visible, c.Topic, c.Group, c.Partition, c.Position); err != nil {
					return nil, fmt.Errorf("claim: %w", err)
				}
				c.Deliveries++
				c.VisibleAt = fromMicros(visible)
				res.Deliveries = append(res.Deliveries, *c)
			}
		}
		// Only a drop can make more deliveries claimable (the next of its
		// key); without one, what was found is all there is.
		if !dropped {
			break
		}
	}
	return res, nil
}

func (tx *wtx) claimable(topic, group string, limit int) ([]storage.Delivery, error) {
	rows, err := tx.s.deliveryClaimable.Query(topic, group, tx.now, limit)
	if err != nil {
		return nil, fmt.Errorf("find claimable deliveries: %w", err)
	}
	out, err := scanDeliveries(rows, true)
	if err != nil {
		return nil, fmt.Errorf("find claimable deliveries: %w", err)
	}
	return out, nil
}

// deadLetter moves a delivery to its group's dead letters, with a copy of
// its message, and unblocks the next delivery of its key.
func (tx *wtx) deadLetter(dl *storage.Delivery, reason string, history []byte) error {
	if _, err := tx.s.deadLetterInsert.Exec(dl.Topic, dl.Group, dl.Partition, dl.Position, dl.Deliveries,
		reason, history, tx.now); err != nil {
		return fmt.Errorf("insert dead letter: %w", err)
	}
	if _, err := tx.s.deliveryDelete.Exec(dl.Topic, dl.Group, dl.Partition, dl.Position); err != nil {
		return fmt.Errorf("delete dead-lettered delivery: %w", err)
	}
	return tx.unblockNext(dl.Topic, dl.Group, dl.Partition, dl.Key)
}

// unblockNext makes the next delivery of a key claimable once none of the
// key's deliveries is.
func (tx *wtx) unblockNext(topic, group string, partition int, key string) error {
	if key == "" {
		return nil
	}
	if _, err := tx.s.unblockNext.Exec(topic, group, partition, key); err != nil {
		return fmt.Errorf("unblock the next delivery of key %q: %w", key, err)
	}
	return nil
}

// DeliveryHeartbeat extends a claim.
func (d *Driver) DeliveryHeartbeat(ctx context.Context, ref storage.DeliveryRef, visibility time.Duration) error {
	if err := ref.Validate(d.info.Partitions); err != nil {
		return fmt.Errorf("sqlite: delivery heartbeat: %w", err)
	}
	if visibility <= 0 {
		return fmt.Errorf("sqlite: delivery heartbeat: %w: visibility must be > 0", storage.ErrInvalid)
	}
	return d.w.exec(ctx, func(tx *wtx) error {
		r, err := tx.s.deliveryHeartbeat.Exec(tx.now+durMicros(visibility), ref.Topic, ref.Group, ref.Partition, ref.Position, ref.ClaimToken)
		return claimed("heartbeat", ref, r, err)
	})
}

// claimed turns the outcome of an update of a claimed delivery into
// ErrTaskClaimLost when it matched no row.
func claimed(op string, ref storage.DeliveryRef, r sql.Result, err error) error {
	if err != nil {
		return fmt.Errorf("sqlite: delivery %s %s: %w", op, refString(ref), err)
	}
	if n, err := r.RowsAffected(); err != nil {
		return fmt.Errorf("sqlite: delivery %s %s: %w", op, refString(ref), err)
	} else if n == 0 {
		return fmt.Errorf("sqlite: delivery %s %s: %w", op, refString(ref), storage.ErrTaskClaimLost)
	}
	return nil
}

func refString(ref storage.DeliveryRef) string {
	return fmt.Sprintf("%s/%s %d:%d", ref.Topic, ref.Group, ref.Partition, ref.Position)
}

// DeliveryAck deletes claimed deliveries and unblocks the next of their
// keys.
func (d *Driver) DeliveryAck(ctx context.Context, refs []storage.DeliveryRef) ([]error, error) {
	if len(refs) > storage.MaxReadLimit {
		return nil, fmt.Errorf("sqlite: delivery ack: %w: %d refs, at most %d", storage.ErrInvalid, len(refs), storage.MaxReadLimit)
	}
	for i := range refs {
		if err := refs[i].Validate(d.info.Partitions); err != nil {
			return nil, fmt.Errorf("sqlite: delivery ack: ref %d: %w", i, err)
		}
	}
	errs := make([]error, len(refs))
	if len(refs) == 0 {
		return errs, nil
	}
	err := d.w.exec(ctx, func(tx *wtx) error {
		clear(errs)
		for i, ref := range refs {
			var key string
			err := tx.s.deliveryAck.QueryRow(ref.Topic, ref.Group, ref.Partition, ref.Position, ref.ClaimToken).Scan(&key)
			if errors.Is(err, sql.ErrNoRows) {
				errs[i] = fmt.Errorf("sqlite: delivery ack %s: %w", refString(ref), storage.ErrTaskClaimLost)
				continue
			}
			if err != nil {
				return fmt.Errorf("sqlite: delivery ack %s: %w", refString(ref), err)
			}
			if err := tx.unblockNext(ref.Topic, ref.Group, ref.Partition, key); err != nil {
				return fmt.Errorf("sqlite: delivery ack %s: %w", refString(ref), err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return errs, nil
}

// DeliveryNack gives a claimed delivery back, or dead-letters it.
func (d *Driver) DeliveryNack(ctx context.Context, params *storage.DeliveryNackParams) error {
	if err := params.Validate(d.info.Partitions); err != nil {
		return fmt.Errorf("sqlite: delivery nack: %w", err)
	}
	ref := params.Ref
	return d.w.exec(ctx, func(tx *wtx) error {
		if !params.DeadLetter {
			r, err := tx.s.deliveryNack.Exec(tx.now+durMicros(params.Delay), params.History,
				ref.Topic, ref.Group, ref.Partition, ref.Position, ref.ClaimToken)
			return claimed("nack", ref, r, err)
		}
		dl := storage.Delivery{Topic: ref.Topic, Group: ref.Group, Partition: ref.Partition, Position: ref.Position}
		err := tx.s.deliveryGet.QueryRow(ref.Topic, ref.Group, ref.Partition, ref.Position, ref.ClaimToken).Scan(&dl.Key, &dl.Deliveries)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("sqlite: delivery nack %s: %w", refString(ref), storage.ErrTaskClaimLost)
		}
		if err != nil {
			return fmt.Errorf("sqlite: delivery nack %s: %w", refString(ref), err)
		}
		if err := tx.deadLetter(&dl, params.Reason, params.History); err != nil {
			return fmt.Errorf("sqlite: delivery nack %s: %w", refString(ref), err)
		}
		return nil
	})
}

// DeliveryStalled returns outstanding deliveries of messages published
// before olderThan, oldest message first.
func (d *Driver) DeliveryStalled(ctx context.Context, olderThan time.Time, limit int) ([]storage.Delivery, error) {
	if err := storage.CheckLimit(limit); err != nil {
		return nil, fmt.Errorf("sqlite: stalled deliveries: %w", err)
	}
	rows, err := d.rdb.QueryContext(ctx, sqlDeliveryStalled, toMicros(olderThan), limit)
	if err != nil {
		return nil, fmt.Errorf("sqlite: stalled deliveries: %w", err)
	}
	out, err := scanDeliveries(rows, true)
	if err != nil {
		return nil, fmt.Errorf("sqlite: stalled deliveries: %w", err)
	}
	return out, nil
}

// DeliveriesOf returns the outstanding deliveries of one message.
func (d *Driver) DeliveriesOf(ctx context.Context, topic string, partition int, position int64) ([]storage.Delivery, error) {
	if err := storage.CheckTopic(topic); err != nil {
		return nil, fmt.Errorf("sqlite: deliveries of a message: %w", err)
	}
	if err := storage.CheckPartition(partition, d.info.Partitions); err != nil {
		return nil, fmt.Errorf("sqlite: deliveries of a message: %w", err)
	}
	rows, err := d.rdb.QueryContext(ctx, sqlDeliveriesOf, partition, position, topic)
	if err != nil {
		return nil, fmt.Errorf("sqlite: deliveries of %s %d:%d: %w", topic, partition, position, err)
	}
	out, err := scanDeliveries(rows, false)
	if err != nil {
		return nil, fmt.Errorf("sqlite: deliveries of %s %d:%d: %w", topic, partition, position, err)
	}
	return out, nil
}

// scanDeliveries scans sqlDeliveryColumns, followed by the message's
// columns when withMessage.
func scanDeliveries(rows *sql.Rows, withMessage bool) ([]storage.Delivery, error) {
	defer rows.Close()
	var out []storage.Delivery
	for rows.Next() {
		var dl storage.Delivery
		var visible int64
		dest := []any{&dl.Topic, &dl.Group, &dl.Partition, &dl.Position, &dl.Key, &dl.Deliveries, &dl.ClaimToken,
			&visible, &dl.Blocked, &dl.History, &dl.DeliveredBefore}
		if withMessage {
			dest = append(dest, messageDest(&dl.Message)...)
		}
		if err := rows.Scan(dest...); err != nil {
			return nil, err
		}
		dl.VisibleAt = fromMicros(visible)
		out = append(out, dl)
	}
	return out, rows.Err()
}
