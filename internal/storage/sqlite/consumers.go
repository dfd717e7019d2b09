package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/accord-saga/accord/internal/storage"
)

const sqlConsumerGet = `SELECT position FROM consumer_positions WHERE consumer = ? AND partition = ?`

// ConsumerPositionGet returns a consumer's committed position in a
// partition, 0 if it has none. Positions are written by Commit.
func (d *Driver) ConsumerPositionGet(ctx context.Context, consumer string, partition int) (int64, error) {
	if err := checkName("consumer", consumer); err != nil {
		return 0, fmt.Errorf("sqlite: consumer position: %w", err)
	}
	if err := storage.CheckPartition(partition, d.info.Partitions); err != nil {
		return 0, fmt.Errorf("sqlite: consumer position: %w", err)
	}
	var pos int64
	err := d.r.consumerGet.QueryRowContext(ctx, consumer, partition).Scan(&pos)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("sqlite: consumer position %q in partition %d: %w", consumer, partition, err)
	}
	return pos, nil
}
