package postgres

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/accord-saga/accord/internal/storage"
)

// The bus (see storage.BusStore). Per-key order rests on the blocked flag
// of deliveries: among a group's outstanding deliveries of one partition
// and key, exactly one is unblocked. Every transaction that adds a keyed
// delivery (a publish commit, DeadLetterReplay) or removes one and unblocks
// the next (ack, dead-lettering, expiry, sweep) first takes a transaction
// advisory lock on its topic, partition and key, so that the one that adds
// sees what the one that removes did and the other way round. A
// transaction takes its key locks in one statement, in ascending order, and
// waits for them before any row lock it could hold against another holder
// of key locks; DeliveryClaim, which holds deliveries' row locks, only
// tries them. GroupCreate needs none: no one else sees the new group's
// deliveries before it commits.

var _ storage.BusStore = (*Driver)(nil)

// inTx runs fn in a READ COMMITTED transaction and commits it if fn
// succeeds.
func (d *Driver) inTx(ctx context.Context, fn func(pgx.Tx) error) error {
	return pgx.BeginTxFunc(ctx, d.pool, pgx.TxOptions{IsoLevel: pgx.ReadCommitted}, fn)
}

// sqlKeyLocks takes the key locks of a set of topics, partitions and keys,
// in ascending order of lock id. The schema is part of the id, so that
// stores of one database do not wait on each other (a collision only
// costs a wait).
const sqlKeyLocks = `
SELECT pg_advisory_xact_lock(s.h) FROM (
	SELECT DISTINCT ` + sqlKeyLockID + ` AS h
	FROM unnest($1::text[], $2::integer[], $3::text[]) AS u(topic, partition, key)
	ORDER BY h
) s`

const sqlKeyLockID = `hashtextextended(current_schema() || ' ' || u.topic || ' ' || u.partition::text || ' ' || u.key, 1)`

// keyLockSet collects key locks to take.
type keyLockSet struct {
	topics     []string
	partitions []int32
	keys       []string
}

// add adds a message key's lock; keyless messages are unordered and need
// none.
func (s *keyLockSet) add(topic string, partition int, key string) {
	if key != "" {
		s.addAny(topic, partition, key)
	}
}

// addAny adds a lock, "" keys included.
func (s *keyLockSet) addAny(topic string, partition int, key string) {
	s.topics = append(s.topics, topic)
	s.partitions = append(s.partitions, int32(partition))
	s.keys = append(s.keys, key)
}

func (s *keyLockSet) len() int { return len(s.keys) }

// queue queues the statement that takes the locks, if there are any.
func (s *keyLockSet) queue(b *pgx.Batch) {
	if s.len() > 0 {
		b.Queue(sqlKeyLocks, s.topics, s.partitions, s.keys)
	}
}

// exec takes the locks, if there are any.
func (s *keyLockSet) exec(ctx context.Context, tx pgx.Tx) error {
	if s.len() == 0 {
		return nil
	}
	if _, err := tx.Exec(ctx, sqlKeyLocks, s.topics, s.partitions, s.keys); err != nil {
		return fmt.Errorf("lock keys: %w", err)
	}
	return nil
}

// keyOf names a key's deliveries in one group and partition.
type keyOf struct {
	topic, group string
	partition    int
	key          string
}

func scanKeyOf(r pgx.Rows) (keyOf, error) {
	var k keyOf
	err := r.Scan(&k.topic, &k.group, &k.partition, &k.key)
	return k, err
}

// sqlUnblockNext unblocks, for each group, partition and key given, the
// lowest position of its deliveries when none of them is unblocked. (The
// test that a key is not empty, beside each comparison of keys, lets the
// planner use the partial indexes on keys.)
const sqlUnblockNext = `
UPDATE deliveries d SET blocked = false
FROM (SELECT DISTINCT * FROM unnest($1::text[], $2::text[], $3::integer[], $4::text[])) AS u(topic, grp, partition, key),
LATERAL (
	SELECT x.position FROM deliveries x
	WHERE x.topic = u.topic AND x.grp = u.grp AND x.partition = u.partition AND x.key = u.key AND x.key <> ''
	ORDER BY x.position
	LIMIT 1
) n
WHERE u.key <> '' AND d.topic = u.topic AND d.grp = u.grp AND d.partition = u.partition AND d.position = n.position
	AND d.blocked
	AND NOT EXISTS (SELECT 1 FROM deliveries o
		WHERE o.topic = u.topic AND o.grp = u.grp AND o.partition = u.partition AND o.key = u.key
			AND o.key <> '' AND NOT o.blocked)`

// unblockNext makes the next delivery of each key claimable once none of
// the key's deliveries is. It must run, under the keys' locks, in a
// statement after the one that removed deliveries.
func unblockNext(ctx context.Context, tx pgx.Tx, ks []keyOf) error {
	var topics, groups, keys []string
	var parts []int32
	for _, k := range ks {
		if k.key != "" {
			topics, groups, keys = append(topics, k.topic), append(groups, k.group), append(keys, k.key)
			parts = append(parts, int32(k.partition))
		}
	}
	if len(keys) == 0 {
		return nil
	}
	if _, err := tx.Exec(ctx, sqlUnblockNext, topics, groups, parts, keys); err != nil {
		return fmt.Errorf("unblock the next deliveries: %w", err)
	}
	return nil
}

const topicColumns = `name, config, created_at, updated_at`

func scanTopic(r pgx.Row, extra ...any) (storage.Topic, error) {
	var t storage.Topic
	var created, updated int64
	err := r.Scan(append([]any{&t.Name, &t.Config, &created, &updated}, extra...)...)
	t.CreatedAt, t.UpdatedAt = fromMicros(created), fromMicros(updated)
	return t, err
}

// TopicPut creates a topic or replaces its configuration.
func (d *Driver) TopicPut(ctx context.Context, t *storage.Topic) (storage.Topic, bool, error) {
	if err := t.Validate(); err != nil {
		return storage.Topic{}, false, fmt.Errorf("postgres: topic put: %w", err)
	}
	var created bool
	stored, err := scanTopic(d.pool.QueryRow(ctx, `
		INSERT INTO topics AS t (name, config, created_at, updated_at)
		SELECT $1, $2, now, now FROM (SELECT `+nowSQL+` AS now) clock
		ON CONFLICT (name) DO UPDATE SET config = excluded.config, updated_at = excluded.updated_at
		RETURNING `+topicColumns+`, t.xmax = 0`, t.Name, t.Config), &created)
	if err != nil {
		return storage.Topic{}, false, fmt.Errorf("postgres: topic put %q: %w", t.Name, err)
	}
	return stored, created, nil
}

// TopicGet returns a topic.
func (d *Driver) TopicGet(ctx context.Context, name string) (storage.Topic, error) {
	if err := storage.CheckTopic(name); err != nil {
		return storage.Topic{}, fmt.Errorf("postgres: topic get: %w", err)
	}
	t, err := scanTopic(d.pool.QueryRow(ctx, `SELECT `+topicColumns+` FROM topics WHERE name = $1`, name))
	if errors.Is(err, pgx.ErrNoRows) {
		return storage.Topic{}, fmt.Errorf("postgres: topic %q: %w", name, storage.ErrNotFound)
	}
	if err != nil {
		return storage.Topic{}, fmt.Errorf("postgres: topic get %q: %w", name, err)
	}
	return t, nil
}

// TopicList lists topics by name.
func (d *Driver) TopicList(ctx context.Context) ([]storage.Topic, error) {
	ts, err := queryAll(ctx, d.pool, func(r pgx.Rows) (storage.Topic, error) { return scanTopic(r) }, `SELECT `+topicColumns+` FROM topics ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("postgres: topic list: %w", err)
	}
	return ts, nil
}

// TopicDelete deletes a topic with its messages, groups, deliveries and
// dead letters. Deleting the topic's row first waits for the commits that
// publish to it (they lock it), and makes those that come later find it
// gone.
func (d *Driver) TopicDelete(ctx context.Context, name string) error {
	if err := storage.CheckTopic(name); err != nil {
		return fmt.Errorf("postgres: topic delete: %w", err)
	}
	err := d.inTx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM topics WHERE name = $1`, name)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return storage.ErrNotFound
		}
		for _, table := range []string{"dead_letters", "deliveries", "consumer_groups", "messages"} {
			if _, err := tx.Exec(ctx, `DELETE FROM `+table+` WHERE topic = $1`, name); err != nil {
				return fmt.Errorf("%s: %w", table, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("postgres: topic delete %q: %w", name, err)
	}
	return nil
}

const groupColumns = `topic, name, config, created_at`

func scanGroup(r pgx.Row) (storage.Group, error) {
	var g storage.Group
	var created int64
	err := r.Scan(&g.Topic, &g.Name, &g.Config, &created)
	g.CreatedAt = fromMicros(created)
	return g, err
}

// sqlGroupBackfill gives a new group a delivery of every stored message of
// its topic published at or after $4; of each key's, only the first is
// unblocked.
const sqlGroupBackfill = `
INSERT INTO deliveries (topic, grp, partition, position, key, visible_at, blocked)
SELECT topic, $2, partition, position, key, $3,
	key <> '' AND row_number() OVER (PARTITION BY partition, key ORDER BY position) > 1
FROM messages WHERE topic = $1 AND published_at >= $4`

// GroupCreate creates a consumer group and its deliveries. It takes SHARE
// on messages, which conflicts with the ROW EXCLUSIVE a publishing commit
// holds from its first message on: a commit publishing to the topic runs
// entirely before it (and the backfill sees its messages) or entirely after
// it (and its fan-out sees the group).
func (d *Driver) GroupCreate(ctx context.Context, params *storage.GroupCreateParams) (storage.Group, bool, error) {
	if err := params.Validate(); err != nil {
		return storage.Group{}, false, fmt.Errorf("postgres: group create: %w", err)
	}
	p := params
	var stored storage.Group
	var created bool
	err := d.inTx(ctx, func(tx pgx.Tx) error {
		created = false
		var one int
		err := tx.QueryRow(ctx, `SELECT 1 FROM topics WHERE name = $1 FOR KEY SHARE`, p.Topic).Scan(&one)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("topic: %w", storage.ErrNotFound)
		}
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `LOCK TABLE messages IN SHARE MODE`); err != nil {
			return err
		}
		stored, err = scanGroup(tx.QueryRow(ctx, `
			INSERT INTO consumer_groups (topic, name, config, created_at)
			VALUES ($1, $2, $3, `+nowSQL+`)
			ON CONFLICT (topic, name) DO NOTHING
			RETURNING `+groupColumns, p.Topic, p.Name, p.Config))
		if errors.Is(err, pgx.ErrNoRows) {
			// It exists (a concurrent creation has committed by now).
			stored, err = scanGroup(tx.QueryRow(ctx, `SELECT `+groupColumns+` FROM consumer_groups
				WHERE topic = $1 AND name = $2`, p.Topic, p.Name))
			if err != nil {
				return err
			}
			if !bytes.Equal(stored.Config, p.Config) {
				return storage.ErrGroupExists
			}
			return nil
		}
		if err != nil {
			return err
		}
		created = true
		var from int64
		switch p.Start {
		case storage.StartEnd:
			return nil
		case storage.StartTime:
			from = p.StartAt.UnixMicro()
		case storage.StartBeginning:
			from = -1 << 63
		}
		if _, err := tx.Exec(ctx, sqlGroupBackfill, p.Topic, p.Name, stored.CreatedAt.UnixMicro(), from); err != nil {
			return fmt.Errorf("deliveries: %w", err)
		}
		return nil
	})
	if err != nil {
		return storage.Group{}, false, fmt.Errorf("postgres: group create %s/%s: %w", p.Topic, p.Name, err)
	}
	return stored, created, nil
}

// GroupGet returns a group.
func (d *Driver) GroupGet(ctx context.Context, topic, name string) (storage.Group, error) {
	if err := storage.CheckGroup(topic, name); err != nil {
		return storage.Group{}, fmt.Errorf("postgres: group get: %w", err)
	}
	g, err := scanGroup(d.pool.QueryRow(ctx, `SELECT `+groupColumns+` FROM consumer_groups
		WHERE topic = $1 AND name = $2`, topic, name))
	if errors.Is(err, pgx.ErrNoRows) {
		return storage.Group{}, fmt.Errorf("postgres: group %s/%s: %w", topic, name, storage.ErrNotFound)
	}
	if err != nil {
		return storage.Group{}, fmt.Errorf("postgres: group get %s/%s: %w", topic, name, err)
	}
	return g, nil
}

// GroupList lists a topic's groups by name, or every topic's.
func (d *Driver) GroupList(ctx context.Context, topic string) ([]storage.Group, error) {
	if topic != "" {
		if err := storage.CheckTopic(topic); err != nil {
			return nil, fmt.Errorf("postgres: group list: %w", err)
		}
	}
	gs, err := queryAll(ctx, d.pool, func(r pgx.Rows) (storage.Group, error) { return scanGroup(r) }, `SELECT `+groupColumns+` FROM consumer_groups
		WHERE $1 = '' OR topic = $1 ORDER BY topic, name`, topic)
	if err != nil {
		return nil, fmt.Errorf("postgres: group list: %w", err)
	}
	return gs, nil
}

// GroupDelete deletes a group with its deliveries and dead letters. Like
// GroupCreate it takes SHARE on messages, so that no commit's fan-out that
// saw the group inserts deliveries after they are deleted.
func (d *Driver) GroupDelete(ctx context.Context, topic, name string) error {
	if err := storage.CheckGroup(topic, name); err != nil {
		return fmt.Errorf("postgres: group delete: %w", err)
	}
	err := d.inTx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `LOCK TABLE messages IN SHARE MODE`); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, `DELETE FROM consumer_groups WHERE topic = $1 AND name = $2`, topic, name)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return storage.ErrNotFound
		}
		for _, table := range []string{"dead_letters", "deliveries"} {
			if _, err := tx.Exec(ctx, `DELETE FROM `+table+` WHERE topic = $1 AND grp = $2`, topic, name); err != nil {
				return fmt.Errorf("%s: %w", table, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("postgres: group delete %s/%s: %w", topic, name, err)
	}
	return nil
}

const sqlGroupStats = `
WITH clock AS (SELECT ` + nowSQL + ` AS now),
o AS (
	SELECT d.partition, count(*) AS pending,
		count(*) FILTER (WHERE d.claim_token <> '' AND d.visible_at > clock.now) AS in_flight,
		count(*) FILTER (WHERE d.blocked) AS blocked,
		min(d.position) AS first, min(m.published_at) AS oldest
	FROM clock, deliveries d LEFT JOIN messages m ON m.partition = d.partition AND m.position = d.position
	WHERE d.topic = $1 AND d.grp = $2
	GROUP BY d.partition
),
dl AS (
	SELECT partition, count(*) AS n FROM dead_letters WHERE topic = $1 AND grp = $2 GROUP BY partition
)
SELECT p.partition, coalesce(o.pending, 0), coalesce(o.in_flight, 0), coalesce(o.blocked, 0),
	coalesce(o.first - 1, p.message_head), greatest(coalesce(clock.now - o.oldest, 0), 0), coalesce(dl.n, 0)
FROM clock, partitions p
LEFT JOIN o ON o.partition = p.partition
LEFT JOIN dl ON dl.partition = p.partition
WHERE o.partition IS NOT NULL OR dl.partition IS NOT NULL
ORDER BY p.partition`

// GroupStats describes a group's backlog per partition.
func (d *Driver) GroupStats(ctx context.Context, topic, name string) ([]storage.GroupPartitionStats, error) {
	if _, err := d.GroupGet(ctx, topic, name); err != nil {
		return nil, fmt.Errorf("postgres: group stats: %w", err)
	}
	rows, err := d.pool.Query(ctx, sqlGroupStats, topic, name)
	if err != nil {
		return nil, fmt.Errorf("postgres: group stats %s/%s: %w", topic, name, err)
	}
	stats, err := collect(rows, func(r pgx.Rows) (storage.GroupPartitionStats, error) {
		var s storage.GroupPartitionStats
		var age int64
		err := r.Scan(&s.Partition, &s.Pending, &s.InFlight, &s.Blocked, &s.Position, &age, &s.DeadLetters)
		s.OldestAge = time.Duration(age) * time.Microsecond
		return s, err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: group stats %s/%s: %w", topic, name, err)
	}
	return stats, nil
}

const sqlGroupBacklogs = `
WITH clock AS (SELECT ` + nowSQL + ` AS now)
SELECT g.topic, g.name, coalesce(o.pending, 0), greatest(coalesce(clock.now - o.oldest, 0), 0), coalesce(dl.n, 0)
FROM clock, consumer_groups g
LEFT JOIN (SELECT d.topic, d.grp, count(*) AS pending, min(m.published_at) AS oldest
	FROM deliveries d LEFT JOIN messages m ON m.partition = d.partition AND m.position = d.position
	GROUP BY d.topic, d.grp) o ON o.topic = g.topic AND o.grp = g.name
LEFT JOIN (SELECT topic, grp, count(*) AS n FROM dead_letters GROUP BY topic, grp) dl
	ON dl.topic = g.topic AND dl.grp = g.name
ORDER BY g.topic, g.name`

// GroupBacklogs describes every group's backlog in one query.
func (d *Driver) GroupBacklogs(ctx context.Context) ([]storage.GroupBacklog, error) {
	out, err := queryAll(ctx, d.pool, func(r pgx.Rows) (storage.GroupBacklog, error) {
		var b storage.GroupBacklog
		var age int64
		err := r.Scan(&b.Topic, &b.Name, &b.Pending, &age, &b.DeadLetters)
		b.OldestAge = time.Duration(age) * time.Microsecond
		return b, err
	}, sqlGroupBacklogs)
	if err != nil {
		return nil, fmt.Errorf("postgres: group backlogs: %w", err)
	}
	return out, nil
}

// GroupsDue lists the groups with a delivery a claim would take now.
func (d *Driver) GroupsDue(ctx context.Context) ([]storage.GroupKey, error) {
	out, err := queryAll(ctx, d.pool, func(r pgx.Rows) (storage.GroupKey, error) {
		var k storage.GroupKey
		return k, r.Scan(&k.Topic, &k.Name)
	}, `SELECT g.topic, g.name FROM consumer_groups g
		WHERE EXISTS (SELECT 1 FROM deliveries d
			WHERE d.topic = g.topic AND d.grp = g.name AND NOT d.blocked AND d.visible_at <= `+nowSQL+`)
		ORDER BY g.topic, g.name`)
	if err != nil {
		return nil, fmt.Errorf("postgres: groups due: %w", err)
	}
	return out, nil
}
