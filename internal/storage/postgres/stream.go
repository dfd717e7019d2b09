package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/accord-saga/accord/internal/storage"
)

const eventColumns = `partition, position, stream, version, type, data, metadata, recorded_at`

func scanEvent(r pgx.Rows) (storage.Event, error) {
	var e storage.Event
	var at int64
	err := r.Scan(&e.Partition, &e.Position, &e.Stream, &e.Version, &e.Type, &e.Data, &e.Metadata, &at)
	e.RecordedAt = fromMicros(at)
	return e, err
}

func scanStreamInfo(r pgx.Rows) (storage.StreamInfo, error) {
	var s storage.StreamInfo
	return s, r.Scan(&s.Stream, &s.Partition, &s.Version)
}

// StreamRead returns a stream's events from params.FromVersion on.
func (d *Driver) StreamRead(ctx context.Context, params *storage.StreamReadParams) ([]storage.Event, error) {
	if params == nil {
		return nil, fmt.Errorf("postgres: stream read: %w: nil params", storage.ErrInvalid)
	}
	if err := checkKey("stream", params.Stream); err != nil {
		return nil, fmt.Errorf("postgres: stream read: %w", err)
	}
	if params.FromVersion < 0 {
		return nil, fmt.Errorf("postgres: stream read: %w: negative from version", storage.ErrInvalid)
	}
	if params.Limit != 0 {
		if err := storage.CheckLimit(params.Limit); err != nil {
			return nil, fmt.Errorf("postgres: stream read: %w", err)
		}
	}
	// LIMIT NULL is no limit.
	var limit *int
	if params.Limit > 0 {
		limit = &params.Limit
	}
	rows, err := d.pool.Query(ctx, `
		SELECT `+eventColumns+` FROM events
		WHERE stream = $1 AND version >= $2
		ORDER BY version
		LIMIT $3`, params.Stream, params.FromVersion, limit)
	if err != nil {
		return nil, fmt.Errorf("postgres: stream read: %w", err)
	}
	events, err := collect(rows, scanEvent)
	if err != nil {
		return nil, fmt.Errorf("postgres: stream read: %w", err)
	}
	return events, nil
}

// StreamInfo returns a stream's partition and version.
func (d *Driver) StreamInfo(ctx context.Context, stream string) (storage.StreamInfo, error) {
	if err := checkKey("stream", stream); err != nil {
		return storage.StreamInfo{}, fmt.Errorf("postgres: stream info: %w", err)
	}
	var s storage.StreamInfo
	err := d.pool.QueryRow(ctx, `SELECT stream, partition, version FROM streams WHERE stream = $1`, stream).
		Scan(&s.Stream, &s.Partition, &s.Version)
	if errors.Is(err, pgx.ErrNoRows) {
		return storage.StreamInfo{}, fmt.Errorf("postgres: stream %q: %w", stream, storage.ErrNotFound)
	}
	if err != nil {
		return storage.StreamInfo{}, fmt.Errorf("postgres: stream info: %w", err)
	}
	return s, nil
}

// PartitionRead returns a partition's events from params.FromPosition on.
func (d *Driver) PartitionRead(ctx context.Context, params *storage.PartitionReadParams) ([]storage.Event, error) {
	if params == nil {
		return nil, fmt.Errorf("postgres: partition read: %w: nil params", storage.ErrInvalid)
	}
	if err := storage.CheckPartition(params.Partition, d.partitions); err != nil {
		return nil, fmt.Errorf("postgres: partition read: %w", err)
	}
	if err := storage.CheckLimit(params.Limit); err != nil {
		return nil, fmt.Errorf("postgres: partition read: %w", err)
	}
	rows, err := d.pool.Query(ctx, `
		SELECT `+eventColumns+` FROM events
		WHERE partition = $1 AND position >= $2
		ORDER BY position
		LIMIT $3`, params.Partition, params.FromPosition, params.Limit)
	if err != nil {
		return nil, fmt.Errorf("postgres: partition read: %w", err)
	}
	events, err := collect(rows, scanEvent)
	if err != nil {
		return nil, fmt.Errorf("postgres: partition read: %w", err)
	}
	return events, nil
}

// PartitionHead returns the last position written in a partition.
func (d *Driver) PartitionHead(ctx context.Context, partition int) (int64, error) {
	if err := storage.CheckPartition(partition, d.partitions); err != nil {
		return 0, fmt.Errorf("postgres: partition head: %w", err)
	}
	var head int64
	if err := d.pool.QueryRow(ctx, `SELECT head FROM partitions WHERE partition = $1`, partition).Scan(&head); err != nil {
		return 0, fmt.Errorf("postgres: partition head: %w", err)
	}
	return head, nil
}

// ConsumerPositionGet returns a consumer's committed position in a
// partition, 0 if it has none.
func (d *Driver) ConsumerPositionGet(ctx context.Context, consumer string, partition int) (int64, error) {
	if err := storage.CheckPartition(partition, d.partitions); err != nil {
		return 0, fmt.Errorf("postgres: consumer position get: %w", err)
	}
	if err := checkKey("consumer", consumer); err != nil {
		return 0, fmt.Errorf("postgres: consumer position get: %w", err)
	}
	var pos int64
	err := d.pool.QueryRow(ctx, `SELECT position FROM consumer_positions WHERE consumer = $1 AND partition = $2`, consumer, partition).Scan(&pos)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return 0, fmt.Errorf("postgres: consumer position get: %w", err)
	}
	return pos, nil
}
