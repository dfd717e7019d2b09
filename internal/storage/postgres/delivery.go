package postgres

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/accord-saga/accord/internal/storage"
)

const deliveryColumns = `d.topic, d.grp, d.partition, d.position, d.key, d.deliveries, d.claim_token, d.visible_at,
	d.blocked, d.history, d.delivered_before`

// scanDelivery scans deliveryColumns, then messageColumns if withMessage,
// after the extra destinations.
func scanDelivery(r pgx.Rows, withMessage bool, extra ...any) (storage.Delivery, error) {
	var dl storage.Delivery
	var visible int64
	var mr messageRow
	dest := append(extra, &dl.Topic, &dl.Group, &dl.Partition, &dl.Position, &dl.Key, &dl.Deliveries, &dl.ClaimToken,
		&visible, &dl.Blocked, &dl.History, &dl.DeliveredBefore)
	if withMessage {
		dest = append(dest, mr.dest()...)
	}
	err := r.Scan(dest...)
	dl.VisibleAt = fromMicros(visible)
	if withMessage {
		dl.Message = mr.message()
	}
	return dl, err
}

// maxDropsPerClaim bounds the expired and dead-lettered deliveries one
// claim clears, so that a claim behind a backlog of expired messages stays
// bounded; the next claim goes on.
const maxDropsPerClaim = storage.MaxReadLimit

// sqlClaimCandidates picks the oldest visible unblocked deliveries of a
// group, skipping rows that a concurrent claimer has locked and those this
// claim has set aside ($5, $6).
const sqlClaimCandidates = `
SELECT d.partition, d.position, d.key, d.deliveries - d.delivered_before, d.visible_at, m.expires_at
FROM deliveries d JOIN messages m ON m.partition = d.partition AND m.position = d.position
WHERE d.topic = $1 AND d.grp = $2 AND NOT d.blocked AND d.visible_at <= $3
	AND (d.partition, d.position) NOT IN (SELECT * FROM unnest($5::integer[], $6::bigint[]))
ORDER BY d.visible_at, d.partition, d.position
LIMIT $4
FOR UPDATE OF d SKIP LOCKED`

// sqlTryKeyLocks tries the key locks of candidates to drop and returns the
// indexes of those it could not take: a claim holds row locks, so it never
// waits for a key lock, whose holder may wait for one of those rows.
const sqlTryKeyLocks = `
SELECT u.i FROM unnest($1::text[], $2::integer[], $3::text[], $4::integer[]) AS u(topic, partition, key, i)
WHERE NOT pg_try_advisory_xact_lock(` + sqlKeyLockID + `)`

const sqlDeliveriesDelete = `
DELETE FROM deliveries d USING unnest($3::integer[], $4::bigint[]) AS u(partition, position)
WHERE d.topic = $1 AND d.grp = $2 AND d.partition = u.partition AND d.position = u.position
RETURNING d.topic, d.grp, d.partition, d.key`

// sqlDeadLetter moves deliveries to their group's dead letters with a copy
// of their messages: with reason $5, at time $6 (NULL: the clock's) and,
// if $7, history $8 instead of the stored one. A token in $9 other than "" must match the delivery's.
const sqlDeadLetter = `
WITH gone AS (
	DELETE FROM deliveries d USING unnest($3::integer[], $4::bigint[], $9::text[]) AS u(partition, position, token)
	WHERE d.topic = $1 AND d.grp = $2 AND d.partition = u.partition AND d.position = u.position
		AND (u.token = '' OR d.claim_token = u.token)
	RETURNING d.*
)
INSERT INTO dead_letters (topic, grp, partition, position, deliveries, reason, history, dead_at,
	key, message_id, correlation_id, headers, payload, tombstone, published_at, expires_at)
SELECT g.topic, g.grp, g.partition, g.position, g.deliveries, $5, CASE WHEN $7::boolean THEN $8::bytea ELSE g.history END,
	coalesce($6::bigint, ` + nowSQL + `),
	m.key, m.id, m.correlation_id, m.headers, m.payload, m.tombstone, m.published_at, m.expires_at
FROM gone g JOIN messages m ON m.partition = g.partition AND m.position = g.position
ORDER BY g.visible_at, g.partition, g.position
RETURNING topic, grp, partition, key`

const sqlDeliveriesClaim = `
UPDATE deliveries d SET claim_token = u.token, deliveries = d.deliveries + 1, visible_at = $3
FROM unnest($4::integer[], $5::bigint[], $6::text[], $7::integer[]) AS u(partition, position, token, i), messages m
WHERE d.topic = $1 AND d.grp = $2 AND d.partition = u.partition AND d.position = u.position
	AND m.partition = d.partition AND m.position = d.position
RETURNING u.i, ` + deliveryColumns + `, ` + messageColumns

// candidate is a delivery a claim has locked.
type candidate struct {
	partition  int32
	position   int64
	key        string
	deliveries int // since the last replay: what MaxDeliveries bounds
	visible    int64
	expires    *int64
}

// refs holds the partitions and positions of deliveries, as unnest reads
// them.
type refs struct {
	parts []int32
	pos   []int64
}

func (r *refs) add(c candidate) {
	r.parts, r.pos = append(r.parts, c.partition), append(r.pos, c.position)
}

// DeliveryClaim claims up to Limit claimable deliveries of a group, oldest
// visible first, in one transaction: it drops the candidates whose message
// has expired, dead-letters those whose count has reached MaxDeliveries,
// unblocks the next delivery of their keys, and claims the rest.
func (d *Driver) DeliveryClaim(ctx context.Context, params *storage.DeliveryClaimParams) (*storage.DeliveryClaimResult, error) {
	if err := params.Validate(); err != nil {
		return nil, fmt.Errorf("postgres: delivery claim: %w", err)
	}
	var res *storage.DeliveryClaimResult
	err := d.inTx(ctx, func(tx pgx.Tx) error {
		var err error
		res, err = claim(ctx, tx, params)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: delivery claim of %s/%s: %w", params.Topic, params.Group, err)
	}
	return res, nil
}

func claim(ctx context.Context, tx pgx.Tx, p *storage.DeliveryClaimParams) (*storage.DeliveryClaimResult, error) {
	res := &storage.DeliveryClaimResult{}
	reason := fmt.Sprintf("max deliveries (%d) reached", p.MaxDeliveries)
	var now int64
	if err := tx.QueryRow(ctx, `SELECT `+nowSQL).Scan(&now); err != nil {
		return nil, err
	}
	skipped := refs{parts: []int32{}, pos: []int64{}}
	// Claimed deliveries with the visibility they had, to return them
	// oldest visible first across the rounds.
	type ranked struct {
		visible int64
		dl      storage.Delivery
	}
	var all []ranked
	for len(res.Deliveries) < p.Limit && res.Expired+res.DeadLettered < maxDropsPerClaim {
		rows, err := tx.Query(ctx, sqlClaimCandidates, p.Topic, p.Group, now, p.Limit-len(res.Deliveries), skipped.parts, skipped.pos)
		if err != nil {
			return nil, fmt.Errorf("find claimable deliveries: %w", err)
		}
		cands, err := collect(rows, func(r pgx.Rows) (candidate, error) {
			var c candidate
			err := r.Scan(&c.partition, &c.position, &c.key, &c.deliveries, &c.visible, &c.expires)
			return c, err
		})
		if err != nil {
			return nil, fmt.Errorf("find claimable deliveries: %w", err)
		}
		if len(cands) == 0 {
			break
		}
		const (
			claimIt = iota
			expireIt
			deadLetterIt
		)
		fate := make([]int, len(cands))
		var locks keyLockSet
		var lockOf []int32
		for i, c := range cands {
			switch {
			case c.expires != nil && *c.expires <= now:
				fate[i] = expireIt
			case c.deliveries >= p.MaxDeliveries:
				fate[i] = deadLetterIt
			default:
				continue
			}
			if c.key != "" {
				locks.add(p.Topic, int(c.partition), c.key)
				lockOf = append(lockOf, int32(i))
			}
		}
		set := make(map[int]bool)
		if locks.len() > 0 {
			rows, err := tx.Query(ctx, sqlTryKeyLocks, locks.topics, locks.partitions, locks.keys, lockOf)
			if err != nil {
				return nil, fmt.Errorf("lock keys: %w", err)
			}
			failed, err := collect(rows, func(r pgx.Rows) (int32, error) {
				var i int32
				err := r.Scan(&i)
				return i, err
			})
			if err != nil {
				return nil, fmt.Errorf("lock keys: %w", err)
			}
			for _, i := range failed {
				set[int(i)] = true
			}
		}
		var expired, dead, claimed refs
		var tokens []string
		var ranks []int32
		for i, c := range cands {
			switch {
			case set[i]:
				// Another transaction holds its key: left for a later
				// claim.
				skipped.add(c)
			case fate[i] == expireIt:
				expired.add(c)
			case fate[i] == deadLetterIt:
				dead.add(c)
			default:
				claimed.add(c)
				tokens, ranks = append(tokens, storage.NewToken()), append(ranks, int32(i))
			}
		}
		var gone []keyOf
		if len(expired.pos) > 0 {
			ks, err := queryAll(ctx, tx, scanKeyOf, sqlDeliveriesDelete, p.Topic, p.Group, expired.parts, expired.pos)
			if err != nil {
				return nil, fmt.Errorf("drop expired deliveries: %w", err)
			}
			res.Expired += len(ks)
			gone = append(gone, ks...)
		}
		if len(dead.pos) > 0 {
			noTokens := make([]string, len(dead.pos))
			ks, err := queryAll(ctx, tx, scanKeyOf, sqlDeadLetter, p.Topic, p.Group, dead.parts, dead.pos, reason, now, false, nil, noTokens)
			if err != nil {
				return nil, fmt.Errorf("dead-letter deliveries: %w", err)
			}
			res.DeadLettered += len(ks)
			gone = append(gone, ks...)
		}
		if err := unblockNext(ctx, tx, gone); err != nil {
			return nil, err
		}
		if len(claimed.pos) > 0 {
			rows, err := tx.Query(ctx, sqlDeliveriesClaim, p.Topic, p.Group, now+p.Visibility.Microseconds(),
				claimed.parts, claimed.pos, tokens, ranks)
			if err != nil {
				return nil, fmt.Errorf("claim: %w", err)
			}
			got, err := collect(rows, func(r pgx.Rows) (ranked, error) {
				var rank int32
				dl, err := scanDelivery(r, true, &rank)
				return ranked{visible: cands[rank].visible, dl: dl}, err
			})
			if err != nil {
				return nil, fmt.Errorf("claim: %w", err)
			}
			all = append(all, got...)
			for _, x := range got {
				res.Deliveries = append(res.Deliveries, x.dl)
			}
		}
		// Only a drop can make more deliveries claimable (the next of its
		// key); without one, what was found is all there is.
		if len(gone) == 0 {
			break
		}
	}
	// RETURNING comes in no particular order.
	slices.SortFunc(all, func(a, b ranked) int {
		return cmp.Or(cmp.Compare(a.visible, b.visible), cmp.Compare(a.dl.Partition, b.dl.Partition),
			cmp.Compare(a.dl.Position, b.dl.Position))
	})
	for i, x := range all {
		res.Deliveries[i] = x.dl
	}
	return res, nil
}

func refString(ref storage.DeliveryRef) string {
	return fmt.Sprintf("%s/%s %d:%d", ref.Topic, ref.Group, ref.Partition, ref.Position)
}

// DeliveryHeartbeat extends a claim.
func (d *Driver) DeliveryHeartbeat(ctx context.Context, ref storage.DeliveryRef, visibility time.Duration) error {
	if err := ref.Validate(d.partitions); err != nil {
		return fmt.Errorf("postgres: delivery heartbeat: %w", err)
	}
	if visibility <= 0 {
		return fmt.Errorf("postgres: delivery heartbeat: %w: visibility must be > 0", storage.ErrInvalid)
	}
	tag, err := d.pool.Exec(ctx, `
		UPDATE deliveries SET visible_at = `+nowSQL+` + $6
		WHERE topic = $1 AND grp = $2 AND partition = $3 AND position = $4 AND claim_token = $5`,
		ref.Topic, ref.Group, ref.Partition, ref.Position, ref.ClaimToken, visibility.Microseconds())
	if err != nil {
		return fmt.Errorf("postgres: delivery heartbeat %s: %w", refString(ref), err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("postgres: delivery heartbeat %s: %w", refString(ref), storage.ErrTaskClaimLost)
	}
	return nil
}

// sqlClaimedKeys reads the keys of the given deliveries that are still
// claimed with the given tokens.
const sqlClaimedKeys = `
SELECT d.topic, d.partition, d.key
FROM deliveries d JOIN unnest($1::text[], $2::text[], $3::integer[], $4::bigint[], $5::text[])
	AS u(topic, grp, partition, position, token)
	ON d.topic = u.topic AND d.grp = u.grp AND d.partition = u.partition AND d.position = u.position
	AND d.claim_token = u.token`

const sqlDeliveriesAck = `
DELETE FROM deliveries d
USING unnest($1::text[], $2::text[], $3::integer[], $4::bigint[], $5::text[], $6::integer[])
	AS u(topic, grp, partition, position, token, i)
WHERE d.topic = u.topic AND d.grp = u.grp AND d.partition = u.partition AND d.position = u.position
	AND d.claim_token = u.token
RETURNING u.i, d.topic, d.grp, d.partition, d.key`

// refColumns are delivery refs as the column arrays unnest reads.
type refColumns struct {
	topics, groups, tokens []string
	parts, index           []int32
	pos                    []int64
}

func newRefColumns(rs []storage.DeliveryRef) refColumns {
	var c refColumns
	for i, r := range rs {
		c.topics, c.groups, c.tokens = append(c.topics, r.Topic), append(c.groups, r.Group), append(c.tokens, r.ClaimToken)
		c.parts, c.pos, c.index = append(c.parts, int32(r.Partition)), append(c.pos, r.Position), append(c.index, int32(i))
	}
	return c
}

// lockClaimedKeys takes the key locks of the deliveries of c still claimed
// with their tokens. A delivery's key never changes, and a token that does
// not match now never will, so the deliveries that the statements after it
// find claimed have their keys locked.
func lockClaimedKeys(ctx context.Context, tx pgx.Tx, c refColumns) error {
	rows, err := tx.Query(ctx, sqlClaimedKeys, c.topics, c.groups, c.parts, c.pos, c.tokens)
	if err != nil {
		return fmt.Errorf("read keys: %w", err)
	}
	var locks keyLockSet
	_, err = collect(rows, func(r pgx.Rows) (struct{}, error) {
		var topic, key string
		var part int
		err := r.Scan(&topic, &part, &key)
		locks.add(topic, part, key)
		return struct{}{}, err
	})
	if err != nil {
		return fmt.Errorf("read keys: %w", err)
	}
	return locks.exec(ctx, tx)
}

// DeliveryAck deletes claimed deliveries and unblocks the next of their
// keys.
func (d *Driver) DeliveryAck(ctx context.Context, rs []storage.DeliveryRef) ([]error, error) {
	if len(rs) > storage.MaxReadLimit {
		return nil, fmt.Errorf("postgres: delivery ack: %w: %d refs, at most %d", storage.ErrInvalid, len(rs), storage.MaxReadLimit)
	}
	for i := range rs {
		if err := rs[i].Validate(d.partitions); err != nil {
			return nil, fmt.Errorf("postgres: delivery ack: ref %d: %w", i, err)
		}
	}
	errs := make([]error, len(rs))
	if len(rs) == 0 {
		return errs, nil
	}
	c := newRefColumns(rs)
	acked := make([]bool, len(rs))
	err := d.inTx(ctx, func(tx pgx.Tx) error {
		clear(acked)
		if err := lockClaimedKeys(ctx, tx, c); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, sqlDeliveriesAck, c.topics, c.groups, c.parts, c.pos, c.tokens, c.index)
		if err != nil {
			return err
		}
		gone, err := collect(rows, func(r pgx.Rows) (keyOf, error) {
			var i int32
			var k keyOf
			err := r.Scan(&i, &k.topic, &k.group, &k.partition, &k.key)
			acked[i] = true
			return k, err
		})
		if err != nil {
			return err
		}
		return unblockNext(ctx, tx, gone)
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: delivery ack: %w", err)
	}
	for i, ok := range acked {
		if !ok {
			errs[i] = fmt.Errorf("postgres: delivery ack %s: %w", refString(rs[i]), storage.ErrTaskClaimLost)
		}
	}
	return errs, nil
}

// DeliveryNack gives a claimed delivery back, keeping its place in its
// key's order, or dead-letters it.
func (d *Driver) DeliveryNack(ctx context.Context, params *storage.DeliveryNackParams) error {
	if err := params.Validate(d.partitions); err != nil {
		return fmt.Errorf("postgres: delivery nack: %w", err)
	}
	ref := params.Ref
	if !params.DeadLetter {
		tag, err := d.pool.Exec(ctx, `
			UPDATE deliveries SET visible_at = `+nowSQL+` + $6, claim_token = '', history = $7
			WHERE topic = $1 AND grp = $2 AND partition = $3 AND position = $4 AND claim_token = $5`,
			ref.Topic, ref.Group, ref.Partition, ref.Position, ref.ClaimToken, params.Delay.Microseconds(), params.History)
		if err != nil {
			return fmt.Errorf("postgres: delivery nack %s: %w", refString(ref), err)
		}
		if tag.RowsAffected() == 0 {
			return fmt.Errorf("postgres: delivery nack %s: %w", refString(ref), storage.ErrTaskClaimLost)
		}
		return nil
	}
	err := d.inTx(ctx, func(tx pgx.Tx) error {
		if err := lockClaimedKeys(ctx, tx, newRefColumns([]storage.DeliveryRef{ref})); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, sqlDeadLetter, ref.Topic, ref.Group, []int32{int32(ref.Partition)}, []int64{ref.Position},
			params.Reason, nil, true, params.History, []string{ref.ClaimToken})
		if err != nil {
			return err
		}
		gone, err := collect(rows, scanKeyOf)
		if err != nil {
			return err
		}
		if len(gone) == 0 {
			return storage.ErrTaskClaimLost
		}
		return unblockNext(ctx, tx, gone)
	})
	if err != nil {
		return fmt.Errorf("postgres: delivery nack %s: %w", refString(ref), err)
	}
	return nil
}

// DeliveryStalled returns outstanding deliveries of messages published
// before olderThan, oldest message first.
func (d *Driver) DeliveryStalled(ctx context.Context, olderThan time.Time, limit int) ([]storage.Delivery, error) {
	if err := storage.CheckLimit(limit); err != nil {
		return nil, fmt.Errorf("postgres: stalled deliveries: %w", err)
	}
	out, err := queryAll(ctx, d.pool, func(r pgx.Rows) (storage.Delivery, error) { return scanDelivery(r, true) }, `SELECT `+deliveryColumns+`, `+messageColumns+`
		FROM deliveries d JOIN messages m ON m.partition = d.partition AND m.position = d.position
		WHERE m.published_at < $1
		ORDER BY m.published_at, m.partition, m.position, d.topic, d.grp
		LIMIT $2`, olderThan.UnixMicro(), limit)
	if err != nil {
		return nil, fmt.Errorf("postgres: stalled deliveries: %w", err)
	}
	return out, nil
}

// DeliveriesOf returns the outstanding deliveries of one message.
func (d *Driver) DeliveriesOf(ctx context.Context, topic string, partition int, position int64) ([]storage.Delivery, error) {
	if err := storage.CheckTopic(topic); err != nil {
		return nil, fmt.Errorf("postgres: deliveries of a message: %w", err)
	}
	if err := storage.CheckPartition(partition, d.partitions); err != nil {
		return nil, fmt.Errorf("postgres: deliveries of a message: %w", err)
	}
	out, err := queryAll(ctx, d.pool, func(r pgx.Rows) (storage.Delivery, error) { return scanDelivery(r, false) }, `SELECT `+deliveryColumns+` FROM deliveries d
		WHERE d.partition = $1 AND d.position = $2 AND d.topic = $3 ORDER BY d.grp`, partition, position, topic)
	if err != nil {
		return nil, fmt.Errorf("postgres: deliveries of %s %d:%d: %w", topic, partition, position, err)
	}
	return out, nil
}
