package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"math"

	"github.com/accord-saga/accord/internal/storage"
)

const (
	sqlTimerDue  = `SELECT id, partition, fire_at, payload FROM timers WHERE partition = ? AND fire_at <= ? ORDER BY fire_at, id LIMIT ?`
	sqlTimerList = `SELECT id, partition, fire_at, payload FROM timers
		WHERE partition = ?1 AND (fire_at > ?2 OR (fire_at = ?2 AND id > ?3)) ORDER BY fire_at, id LIMIT ?4`
)

// TimerDue returns the partition's timers whose fire time has come,
// earliest first.
func (d *Driver) TimerDue(ctx context.Context, params *storage.TimerDueParams) ([]storage.Timer, error) {
	if params == nil {
		return nil, fmt.Errorf("sqlite: timer due: %w: nil params", storage.ErrInvalid)
	}
	if err := storage.CheckPartition(params.Partition, d.info.Partitions); err != nil {
		return nil, fmt.Errorf("sqlite: timer due: %w", err)
	}
	if err := storage.CheckLimit(params.Limit); err != nil {
		return nil, fmt.Errorf("sqlite: timer due: %w", err)
	}
	ts, err := d.queryTimers(ctx, d.r.timerDue, params.Limit, params.Partition, d.clock.now(), params.Limit)
	if err != nil {
		return nil, fmt.Errorf("sqlite: timer due in partition %d: %w", params.Partition, err)
	}
	return ts, nil
}

// TimerList returns the partition's timers by fire time, then id, after
// the cursor.
func (d *Driver) TimerList(ctx context.Context, params *storage.TimerListParams) ([]storage.Timer, error) {
	if params == nil {
		return nil, fmt.Errorf("sqlite: timer list: %w: nil params", storage.ErrInvalid)
	}
	if err := storage.CheckPartition(params.Partition, d.info.Partitions); err != nil {
		return nil, fmt.Errorf("sqlite: timer list: %w", err)
	}
	if err := storage.CheckLimit(params.Limit); err != nil {
		return nil, fmt.Errorf("sqlite: timer list: %w", err)
	}
	after := int64(math.MinInt64)
	if !params.AfterFireAt.IsZero() || params.AfterID != "" {
		after = toMicros(params.AfterFireAt)
	}
	ts, err := d.queryTimers(ctx, d.r.timerList, params.Limit, params.Partition, after, params.AfterID, params.Limit)
	if err != nil {
		return nil, fmt.Errorf("sqlite: timer list in partition %d: %w", params.Partition, err)
	}
	return ts, nil
}

func (d *Driver) queryTimers(ctx context.Context, stmt *sql.Stmt, sizeHint int, args ...any) ([]storage.Timer, error) {
	rows, err := stmt.QueryContext(ctx, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := make([]storage.Timer, 0, min(sizeHint, 256))
	for rows.Next() {
		var t storage.Timer
		var at int64
		if err := rows.Scan(&t.ID, &t.Partition, &at, &t.Payload); err != nil {
			return nil, err
		}
		t.FireAt = fromMicros(at)
		out = append(out, t)
	}
	return out, rows.Err()
}
