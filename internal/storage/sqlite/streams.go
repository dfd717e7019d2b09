package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/accord-saga/accord/internal/storage"
)

const (
	sqlEventColumns = `partition, position, stream, version, type, data, metadata, recorded_at`
	// LIMIT -1 is no limit.
	sqlStreamRead    = `SELECT ` + sqlEventColumns + ` FROM events WHERE stream = ? AND version >= ? ORDER BY version LIMIT ?`
	sqlPartitionRead = `SELECT ` + sqlEventColumns + ` FROM events WHERE partition = ? AND position >= ? ORDER BY position LIMIT ?`
	sqlPartitionHead = `SELECT head FROM partitions WHERE partition = ?`
)

// StreamRead returns a stream's events from params.FromVersion on.
func (d *Driver) StreamRead(ctx context.Context, params *storage.StreamReadParams) ([]storage.Event, error) {
	if params == nil {
		return nil, fmt.Errorf("sqlite: stream read: %w: nil params", storage.ErrInvalid)
	}
	if err := checkName("stream", params.Stream); err != nil {
		return nil, fmt.Errorf("sqlite: stream read: %w", err)
	}
	if params.FromVersion < 0 {
		return nil, fmt.Errorf("sqlite: stream read: %w: from version %d", storage.ErrInvalid, params.FromVersion)
	}
	limit := -1
	if params.Limit != 0 {
		if err := storage.CheckLimit(params.Limit); err != nil {
			return nil, fmt.Errorf("sqlite: stream read: %w", err)
		}
		limit = params.Limit
	}
	rows, err := d.r.streamRead.QueryContext(ctx, params.Stream, params.FromVersion, limit)
	if err != nil {
		return nil, fmt.Errorf("sqlite: stream read %q: %w", params.Stream, err)
	}
	evs, err := scanEvents(rows, 0)
	if err != nil {
		return nil, fmt.Errorf("sqlite: stream read %q: %w", params.Stream, err)
	}
	return evs, nil
}

// StreamInfo returns a stream's partition and version.
func (d *Driver) StreamInfo(ctx context.Context, stream string) (storage.StreamInfo, error) {
	if err := checkName("stream", stream); err != nil {
		return storage.StreamInfo{}, fmt.Errorf("sqlite: stream info: %w", err)
	}
	info := storage.StreamInfo{Stream: stream}
	err := d.r.streamInfo.QueryRowContext(ctx, stream).Scan(&info.Partition, &info.Version)
	if errors.Is(err, sql.ErrNoRows) {
		return storage.StreamInfo{}, fmt.Errorf("sqlite: stream %q: %w", stream, storage.ErrNotFound)
	}
	if err != nil {
		return storage.StreamInfo{}, fmt.Errorf("sqlite: stream info %q: %w", stream, err)
	}
	return info, nil
}

// PartitionRead returns a partition's events from params.FromPosition on.
func (d *Driver) PartitionRead(ctx context.Context, params *storage.PartitionReadParams) ([]storage.Event, error) {
	if params == nil {
		return nil, fmt.Errorf("sqlite: partition read: %w: nil params", storage.ErrInvalid)
	}
	if err := storage.CheckPartition(params.Partition, d.info.Partitions); err != nil {
		return nil, fmt.Errorf("sqlite: partition read: %w", err)
	}
	if err := storage.CheckLimit(params.Limit); err != nil {
		return nil, fmt.Errorf("sqlite: partition read: %w", err)
	}
	if params.FromPosition < 0 {
		return nil, fmt.Errorf("sqlite: partition read: %w: from position %d", storage.ErrInvalid, params.FromPosition)
	}
	rows, err := d.r.partitionRead.QueryContext(ctx, params.Partition, params.FromPosition, params.Limit)
	if err != nil {
		return nil, fmt.Errorf("sqlite: partition read %d: %w", params.Partition, err)
	}
	evs, err := scanEvents(rows, params.Limit)
	if err != nil {
		return nil, fmt.Errorf("sqlite: partition read %d: %w", params.Partition, err)
	}
	return evs, nil
}

// PartitionHead returns the last position written in a partition.
func (d *Driver) PartitionHead(ctx context.Context, partition int) (int64, error) {
	if err := storage.CheckPartition(partition, d.info.Partitions); err != nil {
		return 0, fmt.Errorf("sqlite: partition head: %w", err)
	}
	var head int64
	if err := d.r.partitionHead.QueryRowContext(ctx, partition).Scan(&head); err != nil {
		return 0, fmt.Errorf("sqlite: partition head %d: %w", partition, err)
	}
	return head, nil
}

func scanEvents(rows *sql.Rows, sizeHint int) ([]storage.Event, error) {
	defer rows.Close()
	evs := make([]storage.Event, 0, min(sizeHint, 256))
	for rows.Next() {
		var e storage.Event
		var at int64
		if err := rows.Scan(&e.Partition, &e.Position, &e.Stream, &e.Version, &e.Type, &e.Data, &e.Metadata, &at); err != nil {
			return nil, err
		}
		e.RecordedAt = fromMicros(at)
		evs = append(evs, e)
	}
	return evs, rows.Err()
}

// checkName validates a key-like string argument (a stream name, an id).
func checkName(what, s string) error {
	if s == "" || len(s) > storage.MaxKeyLength {
		return fmt.Errorf("%w: %s must be 1..%d bytes", storage.ErrInvalid, what, storage.MaxKeyLength)
	}
	return nil
}
