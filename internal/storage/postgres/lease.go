package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/accord-saga/accord/internal/storage"
)

const leaseColumns = `partition, owner, epoch, lease_expires_at`

func scanLease(r pgx.Row) (storage.Lease, error) {
	var l storage.Lease
	var expires int64
	err := r.Scan(&l.Partition, &l.Owner, &l.Epoch, &expires)
	if expires != 0 {
		l.ExpiresAt = fromMicros(expires)
	}
	return l, err
}

func checkLeaseParams(partition, partitions int, owner string, ttl time.Duration, needTTL bool) error {
	if err := storage.CheckPartition(partition, partitions); err != nil {
		return err
	}
	if err := checkKey("owner", owner); err != nil {
		return err
	}
	if needTTL && ttl <= 0 {
		return fmt.Errorf("%w: lease ttl must be > 0", storage.ErrInvalid)
	}
	return nil
}

// LeaseAcquire takes a partition's lease if it is free, expired, or already
// owner's; the epoch grows by one. Expiry is judged by the database's clock,
// under the partition row's lock, so two acquirers never both succeed and an
// acquirer waits for a commit in flight on the partition.
func (d *Driver) LeaseAcquire(ctx context.Context, params *storage.LeaseAcquireParams) (storage.Lease, error) {
	if params == nil {
		return storage.Lease{}, fmt.Errorf("postgres: lease acquire: %w: nil params", storage.ErrInvalid)
	}
	if err := checkLeaseParams(params.Partition, d.partitions, params.Owner, params.TTL, true); err != nil {
		return storage.Lease{}, fmt.Errorf("postgres: lease acquire: %w", err)
	}
	l, err := scanLease(d.pool.QueryRow(ctx, `
		WITH clock AS (SELECT `+nowSQL+` AS now)
		UPDATE partitions
		SET owner = $2, epoch = epoch + 1, lease_expires_at = clock.now + $3
		FROM clock
		WHERE partition = $1 AND (owner = '' OR owner = $2 OR lease_expires_at <= clock.now)
		RETURNING `+leaseColumns, params.Partition, params.Owner, params.TTL.Microseconds()))
	if errors.Is(err, pgx.ErrNoRows) {
		return storage.Lease{}, fmt.Errorf("postgres: lease acquire partition %d: %w", params.Partition, storage.ErrLeaseHeld)
	}
	if err != nil {
		return storage.Lease{}, fmt.Errorf("postgres: lease acquire: %w", err)
	}
	return l, nil
}

// LeaseRenew extends a lease that owner holds, unexpired, at epoch.
func (d *Driver) LeaseRenew(ctx context.Context, params *storage.LeaseRenewParams) (storage.Lease, error) {
	if params == nil {
		return storage.Lease{}, fmt.Errorf("postgres: lease renew: %w: nil params", storage.ErrInvalid)
	}
	if err := checkLeaseParams(params.Partition, d.partitions, params.Owner, params.TTL, true); err != nil {
		return storage.Lease{}, fmt.Errorf("postgres: lease renew: %w", err)
	}
	l, err := scanLease(d.pool.QueryRow(ctx, `
		WITH clock AS (SELECT `+nowSQL+` AS now)
		UPDATE partitions SET lease_expires_at = clock.now + $4
		FROM clock
		WHERE partition = $1 AND owner = $2 AND epoch = $3 AND lease_expires_at > clock.now
		RETURNING `+leaseColumns, params.Partition, params.Owner, params.Epoch, params.TTL.Microseconds()))
	if errors.Is(err, pgx.ErrNoRows) {
		return storage.Lease{}, fmt.Errorf("postgres: lease renew partition %d epoch %d: %w", params.Partition, params.Epoch, storage.ErrFenced)
	}
	if err != nil {
		return storage.Lease{}, fmt.Errorf("postgres: lease renew: %w", err)
	}
	return l, nil
}

// LeaseRelease ends a lease at once, so another owner may take it. The
// owner stays recorded; the epoch stays, so the next acquisition still
// fences the releaser out.
func (d *Driver) LeaseRelease(ctx context.Context, params *storage.LeaseReleaseParams) error {
	if params == nil {
		return fmt.Errorf("postgres: lease release: %w: nil params", storage.ErrInvalid)
	}
	if err := checkLeaseParams(params.Partition, d.partitions, params.Owner, 0, false); err != nil {
		return fmt.Errorf("postgres: lease release: %w", err)
	}
	tag, err := d.pool.Exec(ctx, `
		WITH clock AS (SELECT `+nowSQL+` AS now)
		UPDATE partitions SET lease_expires_at = clock.now
		FROM clock
		WHERE partition = $1 AND owner = $2 AND epoch = $3 AND lease_expires_at > clock.now`,
		params.Partition, params.Owner, params.Epoch)
	if err != nil {
		return fmt.Errorf("postgres: lease release: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("postgres: lease release partition %d epoch %d: %w", params.Partition, params.Epoch, storage.ErrFenced)
	}
	return nil
}

// LeaseList returns every partition's lease, in partition order.
func (d *Driver) LeaseList(ctx context.Context) ([]storage.Lease, error) {
	rows, err := d.pool.Query(ctx, `SELECT `+leaseColumns+` FROM partitions ORDER BY partition`)
	if err != nil {
		return nil, fmt.Errorf("postgres: lease list: %w", err)
	}
	leases, err := collect(rows, func(r pgx.Rows) (storage.Lease, error) { return scanLease(r) })
	if err != nil {
		return nil, fmt.Errorf("postgres: lease list: %w", err)
	}
	return leases, nil
}
