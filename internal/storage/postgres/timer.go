package postgres

import (
	"context"
	"fmt"
	"math"

	"github.com/jackc/pgx/v5"

	"github.com/accord-saga/accord/internal/storage"
)

func scanTimer(r pgx.Rows) (storage.Timer, error) {
	var t storage.Timer
	var fireAt int64
	err := r.Scan(&t.ID, &t.Partition, &fireAt, &t.Payload)
	t.FireAt = fromMicros(fireAt)
	return t, err
}

// TimerDue returns a partition's timers due by the database's clock,
// earliest first.
func (d *Driver) TimerDue(ctx context.Context, params *storage.TimerDueParams) ([]storage.Timer, error) {
	if params == nil {
		return nil, fmt.Errorf("postgres: timer due: %w: nil params", storage.ErrInvalid)
	}
	if err := storage.CheckPartition(params.Partition, d.partitions); err != nil {
		return nil, fmt.Errorf("postgres: timer due: %w", err)
	}
	if err := storage.CheckLimit(params.Limit); err != nil {
		return nil, fmt.Errorf("postgres: timer due: %w", err)
	}
	rows, err := d.pool.Query(ctx, `
		SELECT id, partition, fire_at, payload FROM timers
		WHERE partition = $1 AND fire_at <= `+nowSQL+`
		ORDER BY fire_at, id
		LIMIT $2`, params.Partition, params.Limit)
	if err != nil {
		return nil, fmt.Errorf("postgres: timer due: %w", err)
	}
	timers, err := collect(rows, scanTimer)
	if err != nil {
		return nil, fmt.Errorf("postgres: timer due: %w", err)
	}
	return timers, nil
}

// TimerList returns a partition's timers, earliest first, due or not.
func (d *Driver) TimerList(ctx context.Context, params *storage.TimerListParams) ([]storage.Timer, error) {
	if params == nil {
		return nil, fmt.Errorf("postgres: timer list: %w: nil params", storage.ErrInvalid)
	}
	if err := storage.CheckPartition(params.Partition, d.partitions); err != nil {
		return nil, fmt.Errorf("postgres: timer list: %w", err)
	}
	if err := storage.CheckLimit(params.Limit); err != nil {
		return nil, fmt.Errorf("postgres: timer list: %w", err)
	}
	// The cursor is a position, not a row: paging goes on past a cursor
	// timer deleted in between. With both fields zero it is before every
	// timer.
	after := int64(math.MinInt64)
	if !params.AfterFireAt.IsZero() {
		after = params.AfterFireAt.UnixMicro()
	}
	rows, err := d.pool.Query(ctx, `
		SELECT id, partition, fire_at, payload FROM timers
		WHERE partition = $1 AND (fire_at, id) > ($2, $3::text)
		ORDER BY fire_at, id
		LIMIT $4`, params.Partition, after, params.AfterID, params.Limit)
	if err != nil {
		return nil, fmt.Errorf("postgres: timer list: %w", err)
	}
	timers, err := collect(rows, scanTimer)
	if err != nil {
		return nil, fmt.Errorf("postgres: timer list: %w", err)
	}
	return timers, nil
}
