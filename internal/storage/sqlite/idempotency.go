package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/accord-saga/accord/internal/storage"
)

const (
	sqlKeyGet = `SELECT partition, result, created_at, expires_at FROM idempotency_keys WHERE scope = ? AND key = ?`
	// An expired key is replaced in place: it no longer stands for anything.
	sqlKeyPut = `INSERT INTO idempotency_keys (scope, key, partition, result, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)
		ON CONFLICT (scope, key) DO UPDATE SET partition = excluded.partition, result = excluded.result,
			created_at = excluded.created_at, expires_at = excluded.expires_at`
	sqlKeyDeleteExpired = `DELETE FROM idempotency_keys WHERE rowid IN
		(SELECT rowid FROM idempotency_keys WHERE expires_at <= ? ORDER BY expires_at LIMIT ?)`
)

// keyInsert stores k for a commit in partition, or fails with
// *IdempotencyKeyExistsError if it is stored and unexpired.
func (tx *wtx) keyInsert(partition int, k *storage.IdempotencyKeyInsert) error {
	existing, err := scanKey(tx.s.keyGet.QueryRow(k.Scope, k.Key), k.Scope, k.Key)
	switch {
	case err == nil && toMicros(existing.ExpiresAt) > tx.now:
		return &storage.IdempotencyKeyExistsError{Existing: existing}
	case err != nil && !errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("sqlite: commit: read idempotency key %q/%q: %w", k.Scope, k.Key, err)
	}
	if _, err := tx.s.keyPut.Exec(k.Scope, k.Key, partition, k.Result, tx.now, tx.now+durMicros(k.TTL)); err != nil {
		return fmt.Errorf("sqlite: commit: store idempotency key %q/%q: %w", k.Scope, k.Key, err)
	}
	return nil
}

func scanKey(row *sql.Row, scope, key string) (storage.IdempotencyKey, error) {
	k := storage.IdempotencyKey{Scope: scope, Key: key}
	var created, expires int64
	if err := row.Scan(&k.Partition, &k.Result, &created, &expires); err != nil {
		return storage.IdempotencyKey{}, err
	}
	k.CreatedAt, k.ExpiresAt = fromMicros(created), fromMicros(expires)
	return k, nil
}

// IdempotencyKeyGet returns a stored, unexpired key.
func (d *Driver) IdempotencyKeyGet(ctx context.Context, scope, key string) (storage.IdempotencyKey, error) {
	if err := checkName("idempotency scope", scope); err != nil {
		return storage.IdempotencyKey{}, fmt.Errorf("sqlite: idempotency key get: %w", err)
	}
	if err := checkName("idempotency key", key); err != nil {
		return storage.IdempotencyKey{}, fmt.Errorf("sqlite: idempotency key get: %w", err)
	}
	now := d.clock.now()
	k, err := scanKey(d.r.keyGet.QueryRowContext(ctx, scope, key), scope, key)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && toMicros(k.ExpiresAt) <= now) {
		return storage.IdempotencyKey{}, fmt.Errorf("sqlite: idempotency key %q/%q: %w", scope, key, storage.ErrNotFound)
	}
	if err != nil {
		return storage.IdempotencyKey{}, fmt.Errorf("sqlite: idempotency key get %q/%q: %w", scope, key, err)
	}
	return k, nil
}

// IdempotencyKeyDeleteExpired deletes up to limit expired keys, oldest
// expiry first.
func (d *Driver) IdempotencyKeyDeleteExpired(ctx context.Context, limit int) (int, error) {
	if err := storage.CheckLimit(limit); err != nil {
		return 0, fmt.Errorf("sqlite: idempotency key delete: %w", err)
	}
	var n int64
	err := d.w.exec(ctx, func(tx *wtx) error {
		r, err := tx.s.keyDeleteExpired.Exec(tx.now, limit)
		if err != nil {
			return fmt.Errorf("sqlite: idempotency key delete: %w", err)
		}
		n, err = r.RowsAffected()
		return err
	})
	return int(n), err
}
