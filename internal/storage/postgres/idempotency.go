package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/accord-saga/accord/internal/storage"
)

func scanIdempotencyKey(r pgx.Rows) (storage.IdempotencyKey, error) {
	var k storage.IdempotencyKey
	var created, expires int64
	err := r.Scan(&k.Scope, &k.Key, &k.Partition, &k.Result, &created, &expires)
	k.CreatedAt, k.ExpiresAt = fromMicros(created), fromMicros(expires)
	return k, err
}

// IdempotencyKeyGet returns a stored, unexpired key.
func (d *Driver) IdempotencyKeyGet(ctx context.Context, scope, key string) (storage.IdempotencyKey, error) {
	if err := checkKey("idempotency scope", scope); err != nil {
		return storage.IdempotencyKey{}, fmt.Errorf("postgres: idempotency key get: %w", err)
	}
	if err := checkKey("idempotency key", key); err != nil {
		return storage.IdempotencyKey{}, fmt.Errorf("postgres: idempotency key get: %w", err)
	}
	rows, err := d.pool.Query(ctx, `
		SELECT scope, key, partition, result, created_at, expires_at FROM idempotency_keys
		WHERE scope = $1 AND key = $2 AND expires_at > `+nowSQL, scope, key)
	if err != nil {
		return storage.IdempotencyKey{}, fmt.Errorf("postgres: idempotency key get: %w", err)
	}
	keys, err := collect(rows, scanIdempotencyKey)
	if err != nil {
		return storage.IdempotencyKey{}, fmt.Errorf("postgres: idempotency key get: %w", err)
	}
	if len(keys) == 0 {
		return storage.IdempotencyKey{}, fmt.Errorf("postgres: idempotency key %q in scope %q: %w", key, scope, storage.ErrNotFound)
	}
	return keys[0], nil
}

// IdempotencyKeyDeleteExpired deletes up to limit expired keys.
func (d *Driver) IdempotencyKeyDeleteExpired(ctx context.Context, limit int) (int, error) {
	if err := storage.CheckLimit(limit); err != nil {
		return 0, fmt.Errorf("postgres: idempotency key delete expired: %w", err)
	}
	// SKIP LOCKED: a key that a commit is replacing right now is not ours
	// to delete.
	tag, err := d.pool.Exec(ctx, `
		DELETE FROM idempotency_keys k
		USING (
			SELECT scope, key FROM idempotency_keys
			WHERE expires_at <= `+nowSQL+`
			ORDER BY expires_at
			LIMIT $1
			FOR UPDATE SKIP LOCKED
		) x
		WHERE k.scope = x.scope AND k.key = x.key`, limit)
	if err != nil {
		return 0, fmt.Errorf("postgres: idempotency key delete expired: %w", err)
	}
	return int(tag.RowsAffected()), nil
}
