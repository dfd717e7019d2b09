package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/accord-saga/accord/internal/storage"
)

const (
	sqlSagaColumns = `id, partition, stream, definition, definition_version, status, terminal, idempotency_key, state,
		created_at, updated_at, ended_at`
	sqlSagaGet            = `SELECT ` + sqlSagaColumns + ` FROM sagas WHERE id = ?`
	sqlSagaEnded          = `SELECT id, stream FROM sagas WHERE ended_at IS NOT NULL AND ended_at < ? ORDER BY ended_at, id LIMIT ?`
	sqlSagaDelete         = `DELETE FROM sagas WHERE id = ?`
	sqlStreamEventsDelete = `DELETE FROM events WHERE stream = ?`
	sqlStreamDelete       = `DELETE FROM streams WHERE name = ?`
)

// SagaGet returns a saga's record.
func (d *Driver) SagaGet(ctx context.Context, id string) (storage.Saga, error) {
	if err := checkName("saga id", id); err != nil {
		return storage.Saga{}, fmt.Errorf("sqlite: saga get: %w", err)
	}
	s, err := scanSaga(d.r.sagaGet.QueryRowContext(ctx, id))
	if errors.Is(err, sql.ErrNoRows) {
		return storage.Saga{}, fmt.Errorf("sqlite: saga %q: %w", id, storage.ErrNotFound)
	}
	if err != nil {
		return storage.Saga{}, fmt.Errorf("sqlite: saga get %q: %w", id, err)
	}
	return s, nil
}

// SagaList lists sagas newest first, filtered by params. The query is built
// from the filters that are set, so that SQLite can pick the index that
// fits (status, definition, active per partition, or creation time).
func (d *Driver) SagaList(ctx context.Context, params *storage.SagaListParams) ([]storage.Saga, error) {
	if params == nil {
		return nil, fmt.Errorf("sqlite: saga list: %w: nil params", storage.ErrInvalid)
	}
	if err := storage.CheckLimit(params.Limit); err != nil {
		return nil, fmt.Errorf("sqlite: saga list: %w", err)
	}
	if params.ByPartition {
		if err := storage.CheckPartition(params.Partition, d.info.Partitions); err != nil {
			return nil, fmt.Errorf("sqlite: saga list: %w", err)
		}
	}
	if len(params.Statuses) > 100 {
		return nil, fmt.Errorf("sqlite: saga list: %w: %d statuses, at most 100", storage.ErrInvalid, len(params.Statuses))
	}
	var where []string
	var args []any
	if len(params.Statuses) > 0 {
		where = append(where, "status IN (?"+strings.Repeat(", ?", len(params.Statuses)-1)+")")
		for _, s := range params.Statuses {
			args = append(args, s)
		}
	}
	if params.Definition != "" {
		where, args = append(where, "definition = ?"), append(args, params.Definition)
	}
	if params.ByPartition {
		where, args = append(where, "partition = ?"), append(args, params.Partition)
	}
	if params.NonTerminal {
		where = append(where, "terminal = 0")
	}
	if !params.CreatedAfter.IsZero() {
		where, args = append(where, "created_at >= ?"), append(args, toMicros(params.CreatedAfter))
	}
	if !params.CreatedBefore.IsZero() {
		where, args = append(where, "created_at < ?"), append(args, toMicros(params.CreatedBefore))
	}
	if !params.AfterCreatedAt.IsZero() || params.AfterID != "" {
		at := toMicros(params.AfterCreatedAt)
		where, args = append(where, "(created_at < ? OR (created_at = ? AND id < ?))"), append(args, at, at, params.AfterID)
	}
	q := "SELECT " + sqlSagaColumns + " FROM sagas"
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY created_at DESC, id DESC LIMIT ?"
	args = append(args, params.Limit)

	rows, err := d.rdb.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("sqlite: saga list: %w", err)
	}
	defer rows.Close()
	var out []storage.Saga
	for rows.Next() {
		s, err := scanSaga(rows)
		if err != nil {
			return nil, fmt.Errorf("sqlite: saga list: %w", err)
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: saga list: %w", err)
	}
	return out, nil
}

// SagaDeleteEnded deletes up to params.Limit sagas that ended before
// params.EndedBefore, oldest first, with their streams' events. Positions
// of the deleted events stay used: the log keeps its holes, heads do not
// move.
func (d *Driver) SagaDeleteEnded(ctx context.Context, params *storage.SagaDeleteEndedParams) (int, error) {
	if params == nil {
		return 0, fmt.Errorf("sqlite: saga delete: %w: nil params", storage.ErrInvalid)
	}
	if err := storage.CheckLimit(params.Limit); err != nil {
		return 0, fmt.Errorf("sqlite: saga delete: %w", err)
	}
	var n int
	err := d.w.exec(ctx, func(tx *wtx) error {
		n = 0
		rows, err := tx.s.sagaEnded.Query(toMicros(params.EndedBefore), params.Limit)
		if err != nil {
			return fmt.Errorf("sqlite: saga delete: %w", err)
		}
		type victim struct{ id, stream string }
		var victims []victim
		for rows.Next() {
			var v victim
			if err := rows.Scan(&v.id, &v.stream); err != nil {
				rows.Close()
				return fmt.Errorf("sqlite: saga delete: %w", err)
			}
			victims = append(victims, v)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("sqlite: saga delete: %w", err)
		}
		for _, v := range victims {
			if v.stream != "" {
				if _, err := tx.s.streamEventsDelete.Exec(v.stream); err != nil {
					return fmt.Errorf("sqlite: saga delete %q: events: %w", v.id, err)
				}
				if _, err := tx.s.streamDelete.Exec(v.stream); err != nil {
					return fmt.Errorf("sqlite: saga delete %q: stream: %w", v.id, err)
				}
			}
			if _, err := tx.s.sagaDelete.Exec(v.id); err != nil {
				return fmt.Errorf("sqlite: saga delete %q: %w", v.id, err)
			}
			n++
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}

func scanSaga(row rowScanner) (storage.Saga, error) {
	var s storage.Saga
	var created, updated int64
	var ended sql.NullInt64
	if err := row.Scan(&s.ID, &s.Partition, &s.Stream, &s.Definition, &s.DefinitionVersion, &s.Status, &s.Terminal,
		&s.IdempotencyKey, &s.State, &created, &updated, &ended); err != nil {
		return storage.Saga{}, err
	}
	s.CreatedAt, s.UpdatedAt = fromMicros(created), fromMicros(updated)
	if ended.Valid {
		s.EndedAt = fromMicros(ended.Int64)
	}
	return s, nil
}
