package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/accord-saga/accord/internal/storage"
)

const taskColumns = `t.id, t.partition, t.queue, t.payload, t.deliveries, t.claim_token, t.visible_at, t.created_at`

func scanTask(r pgx.Row, extra ...any) (storage.Task, error) {
	var t storage.Task
	var visible, created int64
	dest := append([]any{&t.ID, &t.Partition, &t.Queue, &t.Payload, &t.Deliveries, &t.ClaimToken, &visible, &created}, extra...)
	err := r.Scan(dest...)
	t.VisibleAt, t.CreatedAt = fromMicros(visible), fromMicros(created)
	return t, err
}

// sqlTaskClaim picks the oldest visible tasks of a queue, skipping rows that
// a concurrent claimer has locked, and gives each its own token: the call's
// random prefix $3 followed by the task's rank in the claim.
const sqlTaskClaim = `
WITH clock AS (SELECT ` + nowSQL + ` AS now),
picked AS (
	SELECT t.id, t.visible_at, t.seq FROM tasks t, clock
	WHERE t.queue = $1 AND t.visible_at <= clock.now
	ORDER BY t.visible_at, t.seq
	LIMIT $2
	FOR UPDATE OF t SKIP LOCKED
),
numbered AS (
	SELECT id, row_number() OVER (ORDER BY visible_at, seq) AS n FROM picked
)
UPDATE tasks t
SET claim_token = $3::text || lpad(to_hex(numbered.n), 8, '0'), deliveries = t.deliveries + 1, visible_at = clock.now + $4
FROM numbered, clock
WHERE t.id = numbered.id
RETURNING ` + taskColumns + `, numbered.n`

// TaskClaim claims up to params.Limit visible tasks of a queue, oldest first.
func (d *Driver) TaskClaim(ctx context.Context, params *storage.TaskClaimParams) ([]storage.Task, error) {
	if params == nil {
		return nil, fmt.Errorf("postgres: task claim: %w: nil params", storage.ErrInvalid)
	}
	if err := checkKey("queue", params.Queue); err != nil {
		return nil, fmt.Errorf("postgres: task claim: %w", err)
	}
	if err := storage.CheckLimit(params.Limit); err != nil {
		return nil, fmt.Errorf("postgres: task claim: %w", err)
	}
	if params.Visibility <= 0 {
		return nil, fmt.Errorf("postgres: task claim: %w: visibility must be > 0", storage.ErrInvalid)
	}
	// One random prefix per call rather than a token per possible task: a
	// poll with a large limit on an empty queue costs nothing. A token is
	// 96 random bits and a rank, 32 hex digits like storage.NewToken's.
	prefix := storage.NewToken()[:24]
	rows, err := d.pool.Query(ctx, sqlTaskClaim, params.Queue, params.Limit, prefix, params.Visibility.Microseconds())
	if err != nil {
		return nil, fmt.Errorf("postgres: task claim: %w", err)
	}
	type numbered struct {
		task storage.Task
		n    int64
	}
	claimed, err := collect(rows, func(r pgx.Rows) (numbered, error) {
		var n numbered
		var err error
		n.task, err = scanTask(r, &n.n)
		return n, err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: task claim: %w", err)
	}
	// RETURNING comes in no particular order.
	slices.SortFunc(claimed, func(a, b numbered) int { return int(a.n - b.n) })
	tasks := make([]storage.Task, len(claimed))
	for i, c := range claimed {
		tasks[i] = c.task
	}
	return tasks, nil
}

// TaskHeartbeat extends a claim.
func (d *Driver) TaskHeartbeat(ctx context.Context, params *storage.TaskHeartbeatParams) (storage.Task, error) {
	if params == nil {
		return storage.Task{}, fmt.Errorf("postgres: task heartbeat: %w: nil params", storage.ErrInvalid)
	}
	if params.Visibility <= 0 {
		return storage.Task{}, fmt.Errorf("postgres: task heartbeat: %w: visibility must be > 0", storage.ErrInvalid)
	}
	// An unclaimed task's token is "": an empty token must never match.
	if err := checkKey("claim token", params.ClaimToken); err != nil {
		return storage.Task{}, fmt.Errorf("postgres: task heartbeat: %w", err)
	}
	t, err := scanTask(d.pool.QueryRow(ctx, `
		WITH clock AS (SELECT `+nowSQL+` AS now)
		UPDATE tasks t SET visible_at = clock.now + $3
		FROM clock
		WHERE t.id = $1 AND t.claim_token = $2
		RETURNING `+taskColumns, params.ID, params.ClaimToken, params.Visibility.Microseconds()))
	if errors.Is(err, pgx.ErrNoRows) {
		return storage.Task{}, fmt.Errorf("postgres: task heartbeat %q: %w", params.ID, storage.ErrTaskClaimLost)
	}
	if err != nil {
		return storage.Task{}, fmt.Errorf("postgres: task heartbeat: %w", err)
	}
	return t, nil
}

// TaskRelease gives a claimed task back, visible again after params.Delay.
// The released claim's token stops being current, so a late heartbeat with
// it fails.
func (d *Driver) TaskRelease(ctx context.Context, params *storage.TaskReleaseParams) error {
	if params == nil {
		return fmt.Errorf("postgres: task release: %w: nil params", storage.ErrInvalid)
	}
	if params.Delay < 0 {
		return fmt.Errorf("postgres: task release: %w: negative delay", storage.ErrInvalid)
	}
	if err := checkKey("claim token", params.ClaimToken); err != nil {
		return fmt.Errorf("postgres: task release: %w", err)
	}
	tag, err := d.pool.Exec(ctx, `
		WITH clock AS (SELECT `+nowSQL+` AS now)
		UPDATE tasks t SET visible_at = clock.now + $3, claim_token = ''
		FROM clock
		WHERE t.id = $1 AND t.claim_token = $2`, params.ID, params.ClaimToken, params.Delay.Microseconds())
	if err != nil {
		return fmt.Errorf("postgres: task release: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("postgres: task release %q: %w", params.ID, storage.ErrTaskClaimLost)
	}
	return nil
}

// TaskGet returns one task.
func (d *Driver) TaskGet(ctx context.Context, id string) (storage.Task, error) {
	if err := checkKey("task id", id); err != nil {
		return storage.Task{}, fmt.Errorf("postgres: task get: %w", err)
	}
	t, err := scanTask(d.pool.QueryRow(ctx, `SELECT `+taskColumns+` FROM tasks t WHERE t.id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return storage.Task{}, fmt.Errorf("postgres: task %q: %w", id, storage.ErrNotFound)
	}
	if err != nil {
		return storage.Task{}, fmt.Errorf("postgres: task get: %w", err)
	}
	return t, nil
}

// TaskQueueStats describes every queue that has tasks, in queue order.
func (d *Driver) TaskQueueStats(ctx context.Context) ([]storage.QueueStats, error) {
	rows, err := d.pool.Query(ctx, `
		WITH clock AS (SELECT `+nowSQL+` AS now)
		SELECT t.queue,
			count(*) FILTER (WHERE t.visible_at <= clock.now),
			count(*) FILTER (WHERE t.visible_at > clock.now AND t.claim_token <> ''),
			count(*) FILTER (WHERE t.visible_at > clock.now AND t.claim_token = ''),
			coalesce(clock.now - min(t.created_at) FILTER (WHERE t.visible_at <= clock.now), 0)
		FROM tasks t, clock
		GROUP BY t.queue, clock.now
		ORDER BY t.queue`)
	if err != nil {
		return nil, fmt.Errorf("postgres: task queue stats: %w", err)
	}
	stats, err := collect(rows, func(r pgx.Rows) (storage.QueueStats, error) {
		var s storage.QueueStats
		var age int64
		err := r.Scan(&s.Queue, &s.Visible, &s.InFlight, &s.Delayed, &age)
		s.OldestAge = time.Duration(max(age, 0)) * time.Microsecond
		return s, err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: task queue stats: %w", err)
	}
	return stats, nil
}
