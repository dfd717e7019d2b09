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
	sqlTaskColumns = `id, partition, queue, payload, deliveries, claim_token, visible_at, created_at`
	sqlTaskGet     = `SELECT ` + sqlTaskColumns + ` FROM tasks WHERE id = ?`
	// Oldest first: by the time the task became visible, then by insertion.
	sqlTaskClaimable = `SELECT seq FROM tasks WHERE queue = ? AND visible_at <= ? ORDER BY visible_at, seq LIMIT ?`
	sqlTaskClaim     = `UPDATE tasks SET claim_token = ?, deliveries = deliveries + 1, visible_at = ? WHERE seq = ?
		RETURNING ` + sqlTaskColumns
	sqlTaskHeartbeat = `UPDATE tasks SET visible_at = ? WHERE id = ? AND claim_token = ? RETURNING ` + sqlTaskColumns
	// A released task has no claim: its token stops working at once.
	sqlTaskRelease = `UPDATE tasks SET visible_at = ?, claim_token = '' WHERE id = ? AND claim_token = ?`
	sqlQueueStats  = `SELECT queue,
			count(*) FILTER (WHERE visible_at <= ?1),
			count(*) FILTER (WHERE visible_at > ?1 AND claim_token <> ''),
			count(*) FILTER (WHERE visible_at > ?1 AND claim_token = ''),
			min(visible_at) FILTER (WHERE visible_at <= ?1)
		FROM tasks GROUP BY queue ORDER BY queue`
)

// TaskClaim claims up to params.Limit visible tasks of a queue.
func (d *Driver) TaskClaim(ctx context.Context, params *storage.TaskClaimParams) ([]storage.Task, error) {
	if params == nil {
		return nil, fmt.Errorf("sqlite: task claim: %w: nil params", storage.ErrInvalid)
	}
	if err := checkName("queue", params.Queue); err != nil {
		return nil, fmt.Errorf("sqlite: task claim: %w", err)
	}
	if err := storage.CheckLimit(params.Limit); err != nil {
		return nil, fmt.Errorf("sqlite: task claim: %w", err)
	}
	if params.Visibility <= 0 {
		return nil, fmt.Errorf("sqlite: task claim: %w: visibility must be > 0", storage.ErrInvalid)
	}
	var tasks []storage.Task
	err := d.w.exec(ctx, func(tx *wtx) error {
		// The writer runs a batch again when another write of it failed:
		// only the claims of the run that commits are handed out.
		tasks = tasks[:0]
		rows, err := tx.s.taskClaimable.Query(params.Queue, tx.now, params.Limit)
		if err != nil {
			return fmt.Errorf("sqlite: task claim: %w", err)
		}
		var seqs []int64
		for rows.Next() {
			var seq int64
			if err := rows.Scan(&seq); err != nil {
				rows.Close()
				return fmt.Errorf("sqlite: task claim: %w", err)
			}
			seqs = append(seqs, seq)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("sqlite: task claim: %w", err)
		}
		visible := tx.now + durMicros(params.Visibility)
		for _, seq := range seqs {
			t, err := scanTask(tx.s.taskClaim.QueryRow(storage.NewToken(), visible, seq))
			if err != nil {
				return fmt.Errorf("sqlite: task claim: %w", err)
			}
			tasks = append(tasks, t)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return tasks, nil
}

// TaskHeartbeat extends a claim.
func (d *Driver) TaskHeartbeat(ctx context.Context, params *storage.TaskHeartbeatParams) (storage.Task, error) {
	if params == nil {
		return storage.Task{}, fmt.Errorf("sqlite: task heartbeat: %w: nil params", storage.ErrInvalid)
	}
	if err := checkClaim(params.ID, params.ClaimToken); err != nil {
		return storage.Task{}, fmt.Errorf("sqlite: task heartbeat: %w", err)
	}
	if params.Visibility <= 0 {
		return storage.Task{}, fmt.Errorf("sqlite: task heartbeat: %w: visibility must be > 0", storage.ErrInvalid)
	}
	var t storage.Task
	err := d.w.exec(ctx, func(tx *wtx) error {
		var err error
		t, err = scanTask(tx.s.taskHeartbeat.QueryRow(tx.now+durMicros(params.Visibility), params.ID, params.ClaimToken))
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("sqlite: task heartbeat %q: %w", params.ID, storage.ErrTaskClaimLost)
		}
		if err != nil {
			return fmt.Errorf("sqlite: task heartbeat %q: %w", params.ID, err)
		}
		return nil
	})
	return t, err
}

// TaskRelease gives a claimed task back, visible after params.Delay.
func (d *Driver) TaskRelease(ctx context.Context, params *storage.TaskReleaseParams) error {
	if params == nil {
		return fmt.Errorf("sqlite: task release: %w: nil params", storage.ErrInvalid)
	}
	if err := checkClaim(params.ID, params.ClaimToken); err != nil {
		return fmt.Errorf("sqlite: task release: %w", err)
	}
	if params.Delay < 0 {
		return fmt.Errorf("sqlite: task release: %w: negative delay", storage.ErrInvalid)
	}
	return d.w.exec(ctx, func(tx *wtx) error {
		r, err := tx.s.taskRelease.Exec(tx.now+durMicros(params.Delay), params.ID, params.ClaimToken)
		if err != nil {
			return fmt.Errorf("sqlite: task release %q: %w", params.ID, err)
		}
		if n, err := r.RowsAffected(); err != nil {
			return fmt.Errorf("sqlite: task release %q: %w", params.ID, err)
		} else if n == 0 {
			return fmt.Errorf("sqlite: task release %q: %w", params.ID, storage.ErrTaskClaimLost)
		}
		return nil
	})
}

// TaskGet returns one task.
func (d *Driver) TaskGet(ctx context.Context, id string) (storage.Task, error) {
	if err := checkName("task id", id); err != nil {
		return storage.Task{}, fmt.Errorf("sqlite: task get: %w", err)
	}
	t, err := scanTask(d.r.taskGet.QueryRowContext(ctx, id))
	if errors.Is(err, sql.ErrNoRows) {
		return storage.Task{}, fmt.Errorf("sqlite: task %q: %w", id, storage.ErrNotFound)
	}
	if err != nil {
		return storage.Task{}, fmt.Errorf("sqlite: task get %q: %w", id, err)
	}
	return t, nil
}

// TaskQueueStats returns the counts of every queue that has tasks.
func (d *Driver) TaskQueueStats(ctx context.Context) ([]storage.QueueStats, error) {
	now := d.clock.now()
	rows, err := d.r.queueStats.QueryContext(ctx, now)
	if err != nil {
		return nil, fmt.Errorf("sqlite: task queue stats: %w", err)
	}
	defer rows.Close()
	var out []storage.QueueStats
	for rows.Next() {
		var q storage.QueueStats
		var oldest sql.NullInt64
		if err := rows.Scan(&q.Queue, &q.Visible, &q.InFlight, &q.Delayed, &oldest); err != nil {
			return nil, fmt.Errorf("sqlite: task queue stats: %w", err)
		}
		if oldest.Valid {
			q.OldestAge = time.Duration(now-oldest.Int64) * time.Microsecond
		}
		out = append(out, q)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: task queue stats: %w", err)
	}
	return out, nil
}

func checkClaim(id, token string) error {
	if err := checkName("task id", id); err != nil {
		return err
	}
	return checkName("claim token", token)
}

type rowScanner interface{ Scan(dest ...any) error }

func scanTask(row rowScanner) (storage.Task, error) {
	var t storage.Task
	var visible, created int64
	if err := row.Scan(&t.ID, &t.Partition, &t.Queue, &t.Payload, &t.Deliveries, &t.ClaimToken, &visible, &created); err != nil {
		return storage.Task{}, err
	}
	t.VisibleAt, t.CreatedAt = fromMicros(visible), fromMicros(created)
	return t, nil
}
