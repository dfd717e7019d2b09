package sqlite

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/accord-saga/accord/internal/storage"
)

// The bus (see storage.BusStore). Messages are written by Commit
// (messages.go); every other write goes through the writer like the rest.
// Statements that run once per message or delivery are prepared; the rare
// ones (topics, groups, sweeps, dead letters) run on the writer's
// connection unprepared.

var _ storage.BusStore = (*Driver)(nil)

const (
	sqlTopicColumns = `name, config, created_at, updated_at`
	sqlTopicGet     = `SELECT ` + sqlTopicColumns + ` FROM topics WHERE name = ?`
	sqlTopicList    = `SELECT ` + sqlTopicColumns + ` FROM topics ORDER BY name`
	sqlTopicPut     = `INSERT INTO topics (name, config, created_at, updated_at) VALUES (?1, ?2, ?3, ?3)
		ON CONFLICT (name) DO UPDATE SET config = excluded.config, updated_at = excluded.updated_at
		RETURNING ` + sqlTopicColumns
	sqlGroupColumns = `topic, name, config, created_at`
	sqlGroupGet     = `SELECT ` + sqlGroupColumns + ` FROM consumer_groups WHERE topic = ? AND name = ?`
	sqlGroupList    = `SELECT ` + sqlGroupColumns + ` FROM consumer_groups WHERE ?1 = '' OR topic = ?1 ORDER BY topic, name`
	sqlGroupInsert  = `INSERT INTO consumer_groups (topic, name, config, created_at) VALUES (?, ?, ?, ?)`
	// Deliveries for the stored messages published at or after ?4; among
	// one partition and key, all but the lowest position are blocked.
	sqlGroupBackfill = `INSERT INTO deliveries (topic, grp, partition, position, key, visible_at, blocked)
		SELECT topic, ?2, partition, position, key, ?3,
			key <> '' AND row_number() OVER (PARTITION BY partition, key ORDER BY position) > 1
		FROM messages WHERE topic = ?1 AND published_at >= ?4`
	sqlGroupDeliveryStats = `SELECT d.partition, count(*),
			count(*) FILTER (WHERE d.claim_token <> '' AND d.visible_at > ?3),
			count(*) FILTER (WHERE d.blocked),
			min(d.position), min(m.published_at)
		FROM deliveries d JOIN messages m ON m.partition = d.partition AND m.position = d.position
		WHERE d.topic = ?1 AND d.grp = ?2 GROUP BY d.partition`
	sqlGroupDeadStats = `SELECT partition, count(*) FROM dead_letters WHERE topic = ? AND grp = ? GROUP BY partition`
)

// exec, query and queryRow run unprepared statements in the writer's
// transaction.
func (tx *wtx) exec(query string, args ...any) (sql.Result, error) {
	return tx.conn.ExecContext(context.Background(), query, args...)
}

func (tx *wtx) queryRow(query string, args ...any) *sql.Row {
	return tx.conn.QueryRowContext(context.Background(), query, args...)
}

// TopicPut creates a topic or replaces its configuration.
func (d *Driver) TopicPut(ctx context.Context, t *storage.Topic) (storage.Topic, bool, error) {
	if err := t.Validate(); err != nil {
		return storage.Topic{}, false, fmt.Errorf("sqlite: topic put: %w", err)
	}
	var stored storage.Topic
	var created bool
	err := d.w.exec(ctx, func(tx *wtx) error {
		_, err := scanTopic(tx.queryRow(sqlTopicGet, t.Name))
		switch {
		case errors.Is(err, sql.ErrNoRows):
			created = true
		case err != nil:
			return fmt.Errorf("sqlite: topic put %q: %w", t.Name, err)
		default:
			created = false
		}
		stored, err = scanTopic(tx.queryRow(sqlTopicPut, t.Name, t.Config, tx.now))
		if err != nil {
			return fmt.Errorf("sqlite: topic put %q: %w", t.Name, err)
		}
		return nil
	})
	if err != nil {
		return storage.Topic{}, false, err
	}
	return stored, created, nil
}

// TopicGet returns a topic.
func (d *Driver) TopicGet(ctx context.Context, name string) (storage.Topic, error) {
	if err := storage.CheckTopic(name); err != nil {
		return storage.Topic{}, fmt.Errorf("sqlite: topic get: %w", err)
	}
	t, err := scanTopic(d.rdb.QueryRowContext(ctx, sqlTopicGet, name))
	if errors.Is(err, sql.ErrNoRows) {
		return storage.Topic{}, fmt.Errorf("sqlite: topic %q: %w", name, storage.ErrNotFound)
	}
	if err != nil {
		return storage.Topic{}, fmt.Errorf("sqlite: topic get %q: %w", name, err)
	}
	return t, nil
}

// TopicList lists topics by name.
func (d *Driver) TopicList(ctx context.Context) ([]storage.Topic, error) {
	rows, err := d.rdb.QueryContext(ctx, sqlTopicList)
	if err != nil {
		return nil, fmt.Errorf("sqlite: topic list: %w", err)
	}
	out, err := collect(rows, scanTopic)
	if err != nil {
		return nil, fmt.Errorf("sqlite: topic list: %w", err)
	}
	return out, nil
}

// TopicDelete deletes a topic and everything of it.
func (d *Driver) TopicDelete(ctx context.Context, name string) error {
	if err := storage.CheckTopic(name); err != nil {
		return fmt.Errorf("sqlite: topic delete: %w", err)
	}
	return d.w.exec(ctx, func(tx *wtx) error {
		r, err := tx.exec(`DELETE FROM topics WHERE name = ?`, name)
		if err := deletedOne(r, err); err != nil {
			return fmt.Errorf("sqlite: topic delete %q: %w", name, err)
		}
		for _, table := range []string{"dead_letters", "deliveries", "consumer_groups", "messages"} {
			if _, err := tx.exec(`DELETE FROM `+table+` WHERE topic = ?`, name); err != nil {
				return fmt.Errorf("sqlite: topic delete %q: %s: %w", name, table, err)
			}
		}
		return nil
	})
}

// deletedOne turns the outcome of a delete of one row into ErrNotFound
// when it matched none.
func deletedOne(r sql.Result, err error) error {
	if err != nil {
		return err
	}
	n, err := r.RowsAffected()
	if err != nil {
		return err
	}
	if n == 0 {
		return storage.ErrNotFound
	}
	return nil
}

// GroupCreate creates a consumer group and its deliveries.
func (d *Driver) GroupCreate(ctx context.Context, params *storage.GroupCreateParams) (storage.Group, bool, error) {
	if err := params.Validate(); err != nil {
		return storage.Group{}, false, fmt.Errorf("sqlite: group create: %w", err)
	}
	var stored storage.Group
	var created bool
	err := d.w.exec(ctx, func(tx *wtx) error {
		where := params.Topic + "/" + params.Name
		var n int
		if err := tx.s.topicExists.QueryRow(params.Topic).Scan(&n); err != nil {
			return fmt.Errorf("sqlite: group create %s: %w", where, err)
		}
		if n == 0 {
			return fmt.Errorf("sqlite: group create %s: topic: %w", where, storage.ErrNotFound)
		}
		cur, err := scanGroup(tx.queryRow(sqlGroupGet, params.Topic, params.Name))
		switch {
		case err == nil && bytes.Equal(cur.Config, params.Config):
			stored, created = cur, false
			return nil
		case err == nil:
			return fmt.Errorf("sqlite: group create %s: %w", where, storage.ErrGroupExists)
		case !errors.Is(err, sql.ErrNoRows):
			return fmt.Errorf("sqlite: group create %s: %w", where, err)
		}
		if _, err := tx.exec(sqlGroupInsert, params.Topic, params.Name, params.Config, tx.now); err != nil {
			return fmt.Errorf("sqlite: group create %s: %w", where, err)
		}
		from := int64(math.MinInt64)
		switch params.Start {
		case storage.StartEnd:
			from = math.MaxInt64
		case storage.StartTime:
			from = toMicros(params.StartAt)
		}
		if params.Start != storage.StartEnd {
			if _, err := tx.exec(sqlGroupBackfill, params.Topic, params.Name, tx.now, from); err != nil {
				return fmt.Errorf("sqlite: group create %s: deliveries: %w", where, err)
			}
		}
		stored = storage.Group{Topic: params.Topic, Name: params.Name, Config: bytes.Clone(params.Config), CreatedAt: fromMicros(tx.now)}
		created = true
		return nil
	})
	if err != nil {
		return storage.Group{}, false, err
	}
	return stored, created, nil
}

// GroupGet returns a group.
func (d *Driver) GroupGet(ctx context.Context, topic, name string) (storage.Group, error) {
	if err := storage.CheckGroup(topic, name); err != nil {
		return storage.Group{}, fmt.Errorf("sqlite: group get: %w", err)
	}
	g, err := scanGroup(d.rdb.QueryRowContext(ctx, sqlGroupGet, topic, name))
	if errors.Is(err, sql.ErrNoRows) {
		return storage.Group{}, fmt.Errorf("sqlite: group %s/%s: %w", topic, name, storage.ErrNotFound)
	}
	if err != nil {
		return storage.Group{}, fmt.Errorf("sqlite: group get %s/%s: %w", topic, name, err)
	}
	return g, nil
}

// GroupList lists a topic's groups, or every topic's.
func (d *Driver) GroupList(ctx context.Context, topic string) ([]storage.Group, error) {
	if topic != "" {
		if err := storage.CheckTopic(topic); err != nil {
			return nil, fmt.Errorf("sqlite: group list: %w", err)
		}
	}
	rows, err := d.rdb.QueryContext(ctx, sqlGroupList, topic)
	if err != nil {
		return nil, fmt.Errorf("sqlite: group list: %w", err)
	}
	out, err := collect(rows, scanGroup)
	if err != nil {
		return nil, fmt.Errorf("sqlite: group list: %w", err)
	}
	return out, nil
}

// GroupDelete deletes a group with its deliveries and dead letters.
func (d *Driver) GroupDelete(ctx context.Context, topic, name string) error {
	if err := storage.CheckGroup(topic, name); err != nil {
		return fmt.Errorf("sqlite: group delete: %w", err)
	}
	return d.w.exec(ctx, func(tx *wtx) error {
		r, err := tx.exec(`DELETE FROM consumer_groups WHERE topic = ? AND name = ?`, topic, name)
		if err := deletedOne(r, err); err != nil {
			return fmt.Errorf("sqlite: group delete %s/%s: %w", topic, name, err)
		}
		for _, table := range []string{"dead_letters", "deliveries"} {
			if _, err := tx.exec(`DELETE FROM `+table+` WHERE topic = ? AND grp = ?`, topic, name); err != nil {
				return fmt.Errorf("sqlite: group delete %s/%s: %s: %w", topic, name, table, err)
			}
		}
		return nil
	})
}

// GroupStats describes a group's backlog per partition. Its queries run in
// one read transaction, so that they agree.
func (d *Driver) GroupStats(ctx context.Context, topic, name string) ([]storage.GroupPartitionStats, error) {
	if err := storage.CheckGroup(topic, name); err != nil {
		return nil, fmt.Errorf("sqlite: group stats: %w", err)
	}
	rtx, err := d.rdb.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("sqlite: group stats %s/%s: %w", topic, name, err)
	}
	defer func() { _ = rtx.Rollback() }()
	stats, err := groupStats(ctx, rtx, topic, name, d.clock.now())
	if err != nil {
		return nil, fmt.Errorf("sqlite: group stats %s/%s: %w", topic, name, err)
	}
	return stats, nil
}

func groupStats(ctx context.Context, rtx *sql.Tx, topic, name string, now int64) ([]storage.GroupPartitionStats, error) {
	if _, err := scanGroup(rtx.QueryRowContext(ctx, sqlGroupGet, topic, name)); errors.Is(err, sql.ErrNoRows) {
		return nil, storage.ErrNotFound
	} else if err != nil {
		return nil, err
	}
	byPart := make(map[int]*storage.GroupPartitionStats)
	get := func(p int) *storage.GroupPartitionStats {
		st := byPart[p]
		if st == nil {
			st = &storage.GroupPartitionStats{Partition: p, Position: -1}
			byPart[p] = st
		}
		return st
	}
	rows, err := rtx.QueryContext(ctx, sqlGroupDeliveryStats, topic, name, now)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var p int
		var minPos, oldest int64
		var pending, inFlight, blocked int
		if err := rows.Scan(&p, &pending, &inFlight, &blocked, &minPos, &oldest); err != nil {
			rows.Close()
			return nil, err
		}
		st := get(p)
		st.Pending, st.InFlight, st.Blocked, st.Position = pending, inFlight, blocked, minPos-1
		st.OldestAge = max(time.Duration(now-oldest)*time.Microsecond, 0)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	rows, err = rtx.QueryContext(ctx, sqlGroupDeadStats, topic, name)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var p, n int
		if err := rows.Scan(&p, &n); err != nil {
			rows.Close()
			return nil, err
		}
		get(p).DeadLetters = n
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	out := make([]storage.GroupPartitionStats, 0, len(byPart))
	for p := range byPart {
		st := byPart[p]
		if st.Position < 0 {
			// Nothing outstanding: the group is at the partition's head.
			if err := rtx.QueryRowContext(ctx, sqlMessageHead, p).Scan(&st.Position); err != nil {
				return nil, err
			}
		}
		out = append(out, *st)
	}
	slices.SortFunc(out, func(a, b storage.GroupPartitionStats) int { return a.Partition - b.Partition })
	return out, nil
}

// collect scans every row with scan and closes rows.
func collect[T any](rows *sql.Rows, scan func(rowScanner) (T, error)) ([]T, error) {
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

func scanTopic(row rowScanner) (storage.Topic, error) {
	var t storage.Topic
	var created, updated int64
	if err := row.Scan(&t.Name, &t.Config, &created, &updated); err != nil {
		return storage.Topic{}, err
	}
	t.CreatedAt, t.UpdatedAt = fromMicros(created), fromMicros(updated)
	return t, nil
}

func scanGroup(row rowScanner) (storage.Group, error) {
	var g storage.Group
	var created int64
	if err := row.Scan(&g.Topic, &g.Name, &g.Config, &created); err != nil {
		return storage.Group{}, err
	}
	g.CreatedAt = fromMicros(created)
	return g, nil
}

const (
	sqlGroupBacklogs = `SELECT g.topic, g.name, coalesce(o.pending, 0), o.oldest, coalesce(dl.n, 0)
		FROM consumer_groups g
		LEFT JOIN (SELECT d.topic, d.grp, count(*) AS pending, min(m.published_at) AS oldest
			FROM deliveries d JOIN messages m ON m.partition = d.partition AND m.position = d.position
			GROUP BY d.topic, d.grp) o ON o.topic = g.topic AND o.grp = g.name
		LEFT JOIN (SELECT topic, grp, count(*) AS n FROM dead_letters GROUP BY topic, grp) dl
			ON dl.topic = g.topic AND dl.grp = g.name
		ORDER BY g.topic, g.name`
	sqlGroupsDue = `SELECT g.topic, g.name FROM consumer_groups g
		WHERE EXISTS (SELECT 1 FROM deliveries d
			WHERE d.topic = g.topic AND d.grp = g.name AND d.blocked = 0 AND d.visible_at <= ?)
		ORDER BY g.topic, g.name`
)

// GroupBacklogs describes every group's backlog in one query.
func (d *Driver) GroupBacklogs(ctx context.Context) ([]storage.GroupBacklog, error) {
	now := d.clock.now()
	rows, err := d.rdb.QueryContext(ctx, sqlGroupBacklogs)
	if err != nil {
		return nil, fmt.Errorf("sqlite: group backlogs: %w", err)
	}
	out, err := collect(rows, func(r rowScanner) (storage.GroupBacklog, error) {
		var b storage.GroupBacklog
		var oldest sql.NullInt64
		if err := r.Scan(&b.Topic, &b.Name, &b.Pending, &oldest, &b.DeadLetters); err != nil {
			return b, err
		}
		if oldest.Valid {
			b.OldestAge = max(time.Duration(now-oldest.Int64)*time.Microsecond, 0)
		}
		return b, nil
	})
	if err != nil {
		return nil, fmt.Errorf("sqlite: group backlogs: %w", err)
	}
	return out, nil
}

// GroupsDue lists the groups with a delivery a claim would take now.
func (d *Driver) GroupsDue(ctx context.Context) ([]storage.GroupKey, error) {
	rows, err := d.rdb.QueryContext(ctx, sqlGroupsDue, d.clock.now())
	if err != nil {
		return nil, fmt.Errorf("sqlite: groups due: %w", err)
	}
	out, err := collect(rows, func(r rowScanner) (storage.GroupKey, error) {
		var k storage.GroupKey
		return k, r.Scan(&k.Topic, &k.Name)
	})
	if err != nil {
		return nil, fmt.Errorf("sqlite: groups due: %w", err)
	}
	return out, nil
}
