package sqlite

import (
	"context"
	"fmt"
	"time"

	"github.com/accord-saga/accord/internal/storage"
)

const (
	sqlLeaseGet  = `SELECT owner, epoch, expires_at FROM partitions WHERE partition = ?`
	sqlLeaseSet  = `UPDATE partitions SET owner = ?, epoch = ?, expires_at = ? WHERE partition = ?`
	sqlLeaseList = `SELECT partition, owner, epoch, expires_at FROM partitions ORDER BY partition`
)

// A lease is valid while the store's now is before its expires_at. All
// lease writes go through the writer, so the read-check-write below is
// never interleaved with another.

// LeaseAcquire takes a partition's lease if it is free, expired, or already
// owner's; the epoch grows by one.
func (d *Driver) LeaseAcquire(ctx context.Context, params *storage.LeaseAcquireParams) (storage.Lease, error) {
	if params == nil {
		return storage.Lease{}, fmt.Errorf("sqlite: lease acquire: %w: nil params", storage.ErrInvalid)
	}
	if err := d.checkLease(params.Partition, params.Owner, params.TTL > 0); err != nil {
		return storage.Lease{}, fmt.Errorf("sqlite: lease acquire: %w", err)
	}
	var l storage.Lease
	err := d.w.exec(ctx, func(tx *wtx) error {
		cur, expires, err := tx.leaseGet(params.Partition)
		if err != nil {
			return err
		}
		if cur.Owner != "" && cur.Owner != params.Owner && tx.now < expires {
			return fmt.Errorf("sqlite: lease acquire of partition %d by %q: %w: %q holds it until %v",
				params.Partition, params.Owner, storage.ErrLeaseHeld, cur.Owner, cur.ExpiresAt)
		}
		l, err = tx.leaseSet(params.Partition, params.Owner, cur.Epoch+1, tx.now+durMicros(params.TTL))
		return err
	})
	return l, err
}

// LeaseRenew extends a lease that owner holds, unexpired, at epoch.
func (d *Driver) LeaseRenew(ctx context.Context, params *storage.LeaseRenewParams) (storage.Lease, error) {
	if params == nil {
		return storage.Lease{}, fmt.Errorf("sqlite: lease renew: %w: nil params", storage.ErrInvalid)
	}
	if err := d.checkLease(params.Partition, params.Owner, params.TTL > 0); err != nil {
		return storage.Lease{}, fmt.Errorf("sqlite: lease renew: %w", err)
	}
	var l storage.Lease
	err := d.w.exec(ctx, func(tx *wtx) error {
		if err := tx.leaseHeld("renew", params.Partition, params.Owner, params.Epoch); err != nil {
			return err
		}
		var err error
		l, err = tx.leaseSet(params.Partition, params.Owner, params.Epoch, tx.now+durMicros(params.TTL))
		return err
	})
	return l, err
}

// LeaseRelease ends a lease now; its epoch stays.
func (d *Driver) LeaseRelease(ctx context.Context, params *storage.LeaseReleaseParams) error {
	if params == nil {
		return fmt.Errorf("sqlite: lease release: %w: nil params", storage.ErrInvalid)
	}
	if err := d.checkLease(params.Partition, params.Owner, true); err != nil {
		return fmt.Errorf("sqlite: lease release: %w", err)
	}
	return d.w.exec(ctx, func(tx *wtx) error {
		if err := tx.leaseHeld("release", params.Partition, params.Owner, params.Epoch); err != nil {
			return err
		}
		_, err := tx.leaseSet(params.Partition, params.Owner, params.Epoch, tx.now)
		return err
	})
}

// LeaseList returns every partition's lease.
func (d *Driver) LeaseList(ctx context.Context) ([]storage.Lease, error) {
	rows, err := d.r.leaseList.QueryContext(ctx)
	if err != nil {
		return nil, fmt.Errorf("sqlite: lease list: %w", err)
	}
	defer rows.Close()
	out := make([]storage.Lease, 0, d.info.Partitions)
	for rows.Next() {
		var l storage.Lease
		var expires int64
		if err := rows.Scan(&l.Partition, &l.Owner, &l.Epoch, &expires); err != nil {
			return nil, fmt.Errorf("sqlite: lease list: %w", err)
		}
		l.ExpiresAt = leaseTime(expires)
		out = append(out, l)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: lease list: %w", err)
	}
	return out, nil
}

func (d *Driver) checkLease(partition int, owner string, ttlOK bool) error {
	if err := storage.CheckPartition(partition, d.info.Partitions); err != nil {
		return err
	}
	if err := checkName("lease owner", owner); err != nil {
		return err
	}
	if !ttlOK {
		return fmt.Errorf("%w: lease ttl must be > 0", storage.ErrInvalid)
	}
	return nil
}

func (tx *wtx) leaseGet(partition int) (storage.Lease, int64, error) {
	l := storage.Lease{Partition: partition}
	var expires int64
	if err := tx.s.leaseGet.QueryRow(partition).Scan(&l.Owner, &l.Epoch, &expires); err != nil {
		return l, 0, fmt.Errorf("sqlite: read lease of partition %d: %w", partition, err)
	}
	l.ExpiresAt = leaseTime(expires)
	return l, expires, nil
}

// leaseHeld fails with ErrFenced unless owner holds the partition's lease,
// unexpired, at epoch.
func (tx *wtx) leaseHeld(op string, partition int, owner string, epoch int64) error {
	cur, expires, err := tx.leaseGet(partition)
	if err != nil {
		return err
	}
	if cur.Owner != owner || cur.Epoch != epoch || tx.now >= expires {
		return fmt.Errorf("sqlite: lease %s of partition %d by %q at epoch %d: %w (lease: %q at epoch %d, expired: %t)",
			op, partition, owner, epoch, storage.ErrFenced, cur.Owner, cur.Epoch, tx.now >= expires)
	}
	return nil
}

func (tx *wtx) leaseSet(partition int, owner string, epoch, expires int64) (storage.Lease, error) {
	if _, err := tx.s.leaseSet.Exec(owner, epoch, expires, partition); err != nil {
		return storage.Lease{}, fmt.Errorf("sqlite: write lease of partition %d: %w", partition, err)
	}
	tx.leaseWritten(partition, epoch, expires)
	return storage.Lease{Partition: partition, Owner: owner, Epoch: epoch, ExpiresAt: fromMicros(expires)}, nil
}

// leaseTime converts an expiry; a lease never taken has none.
func leaseTime(us int64) (t time.Time) {
	if us == 0 {
		return t
	}
	return fromMicros(us)
}
