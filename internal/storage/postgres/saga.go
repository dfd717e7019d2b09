package postgres

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/accord-saga/accord/internal/storage"
)

const sagaColumns = `id, partition, stream, definition, definition_version, status, terminal,
	idempotency_key, state, created_at, updated_at, ended_at`

func scanSaga(r pgx.Row) (storage.Saga, error) {
	var s storage.Saga
	var created, updated int64
	var ended *int64
	err := r.Scan(&s.ID, &s.Partition, &s.Stream, &s.Definition, &s.DefinitionVersion, &s.Status, &s.Terminal,
		&s.IdempotencyKey, &s.State, &created, &updated, &ended)
	s.CreatedAt, s.UpdatedAt, s.EndedAt = fromMicros(created), fromMicros(updated), fromNullMicros(ended)
	return s, err
}

// SagaGet returns a saga's record.
func (d *Driver) SagaGet(ctx context.Context, id string) (storage.Saga, error) {
	if err := checkKey("saga id", id); err != nil {
		return storage.Saga{}, fmt.Errorf("postgres: saga get: %w", err)
	}
	s, err := scanSaga(d.pool.QueryRow(ctx, `SELECT `+sagaColumns+` FROM sagas WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return storage.Saga{}, fmt.Errorf("postgres: saga %q: %w", id, storage.ErrNotFound)
	}
	if err != nil {
		return storage.Saga{}, fmt.Errorf("postgres: saga get: %w", err)
	}
	return s, nil
}

// SagaList lists sagas newest first, filtered by params.
func (d *Driver) SagaList(ctx context.Context, params *storage.SagaListParams) ([]storage.Saga, error) {
	if params == nil {
		return nil, fmt.Errorf("postgres: saga list: %w: nil params", storage.ErrInvalid)
	}
	if err := storage.CheckLimit(params.Limit); err != nil {
		return nil, fmt.Errorf("postgres: saga list: %w", err)
	}
	if params.ByPartition {
		if err := storage.CheckPartition(params.Partition, d.partitions); err != nil {
			return nil, fmt.Errorf("postgres: saga list: %w", err)
		}
	}
	var where []string
	var args []any
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	if len(params.Statuses) > 0 {
		where = append(where, "status = ANY("+arg(params.Statuses)+"::text[])")
	}
	if params.Definition != "" {
		where = append(where, "definition = "+arg(params.Definition))
	}
	if params.ByPartition {
		where = append(where, "partition = "+arg(params.Partition))
	}
	if params.NonTerminal {
		where = append(where, "NOT terminal")
	}
	if !params.CreatedAfter.IsZero() {
		where = append(where, "created_at >= "+arg(params.CreatedAfter.UnixMicro()))
	}
	if !params.CreatedBefore.IsZero() {
		where = append(where, "created_at < "+arg(params.CreatedBefore.UnixMicro()))
	}
	if params.AfterID != "" || !params.AfterCreatedAt.IsZero() {
		// With an empty AfterID this is created_at < AfterCreatedAt: every
		// id sorts after "".
		where = append(where, "(created_at, id) < ("+arg(params.AfterCreatedAt.UnixMicro())+", "+arg(params.AfterID)+"::text)")
	}
	q := `SELECT ` + sagaColumns + ` FROM sagas`
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, " AND ")
	}
	q += ` ORDER BY created_at DESC, id DESC LIMIT ` + arg(params.Limit)
	rows, err := d.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("postgres: saga list: %w", err)
	}
	sagas, err := collect(rows, func(r pgx.Rows) (storage.Saga, error) { return scanSaga(r) })
	if err != nil {
		return nil, fmt.Errorf("postgres: saga list: %w", err)
	}
	return sagas, nil
}

// SagaDeleteEnded deletes up to params.Limit sagas that ended before
// params.EndedBefore, with their streams and the streams' events, in one
// statement.
func (d *Driver) SagaDeleteEnded(ctx context.Context, params *storage.SagaDeleteEndedParams) (int, error) {
	if params == nil {
		return 0, fmt.Errorf("postgres: saga delete ended: %w: nil params", storage.ErrInvalid)
	}
	if err := storage.CheckLimit(params.Limit); err != nil {
		return 0, fmt.Errorf("postgres: saga delete ended: %w", err)
	}
	if params.EndedBefore.IsZero() {
		return 0, nil
	}
	var n int
	err := d.pool.QueryRow(ctx, `
		WITH doomed AS (
			SELECT id FROM sagas
			WHERE ended_at IS NOT NULL AND ended_at < $1
			ORDER BY ended_at, id
			LIMIT $2
			FOR UPDATE SKIP LOCKED
		),
		deleted AS (
			DELETE FROM sagas s USING doomed WHERE s.id = doomed.id
			RETURNING s.stream
		),
		deleted_events AS (
			DELETE FROM events e USING deleted WHERE e.stream = deleted.stream
		),
		deleted_streams AS (
			DELETE FROM streams st USING deleted WHERE st.stream = deleted.stream
		)
		SELECT count(*) FROM deleted`, params.EndedBefore.UnixMicro(), params.Limit).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("postgres: saga delete ended: %w", err)
	}
	return n, nil
}
