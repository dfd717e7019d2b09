package engine

import (
	"context"
	"errors"
	"time"

	"github.com/accord-saga/accord/internal/storage"
)

// exclusiveLeaseTTL is the lease lifetime on a store this process alone has
// open (storage.Info.Exclusive). No other node can take a partition there,
// so a lease must not run out because renewals came late (a starved CPU, a
// paused process): that would only fence this node off its own partitions
// and throw away results it already holds. A hundred years is "until
// released"; Stop releases, and the next start after a crash takes over.
const exclusiveLeaseTTL = 100 * 365 * 24 * time.Hour

// leaseTTL is the lifetime of the leases this node takes and renews.
func (e *Engine) leaseTTL() time.Duration {
	if e.exclusive {
		return exclusiveLeaseTTL
	}
	return e.cfg.LeaseTTL
}

// acquireFree takes every partition lease that is free, expired or already
// this node's, and starts a loop for each partition taken. With takeOver,
// on an exclusive store, a lease another owner holds is ended first: only
// a process that is gone can hold it (see exclusiveLeaseTTL).
func (e *Engine) acquireFree(ctx context.Context, takeOver bool) {
	leases, err := e.store.LeaseList(ctx)
	if err != nil {
		e.log.Warn("list leases", "err", err)
		return
	}
	now, err := e.store.Now(ctx)
	if err != nil {
		e.log.Warn("database clock", "err", err)
		return
	}
	for _, l := range leases {
		e.mu.RLock()
		_, running := e.owned[l.Partition]
		stopping := e.stopping
		e.mu.RUnlock()
		if running || stopping {
			continue
		}
		if l.Owner != "" && l.Owner != e.cfg.NodeID && l.ExpiresAt.After(now) {
			if !takeOver || !e.exclusive {
				continue
			}
			err := e.store.LeaseRelease(ctx, &storage.LeaseReleaseParams{Partition: l.Partition, Owner: l.Owner, Epoch: l.Epoch})
			if err != nil && !errors.Is(err, storage.ErrFenced) {
				e.log.Warn("end lease of a previous process", "partition", l.Partition, "owner", l.Owner, "err", err)
				continue
			}
		}
		lease, err := e.store.LeaseAcquire(ctx, &storage.LeaseAcquireParams{Partition: l.Partition, Owner: e.cfg.NodeID, TTL: e.leaseTTL()})
		if errors.Is(err, storage.ErrLeaseHeld) {
			continue
		}
		if err != nil {
			e.log.Warn("acquire lease", "partition", l.Partition, "err", err)
			continue
		}
		if _, err := e.startPartition(ctx, lease); err != nil {
			e.log.Warn("take over partition", "partition", l.Partition, "err", err)
			_ = e.store.LeaseRelease(ctx, &storage.LeaseReleaseParams{Partition: lease.Partition, Owner: e.cfg.NodeID, Epoch: lease.Epoch})
			continue
		}
	}
}

// leaseLoop renews held leases every third of the TTL and picks up free
// partitions. A partition whose renewal is fenced is stopped at once.
func (e *Engine) leaseLoop(ctx context.Context) {
	t := e.clock.NewTicker(e.cfg.LeaseTTL / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		}
		for _, p := range e.running() {
			_, err := e.store.LeaseRenew(ctx, &storage.LeaseRenewParams{Partition: p.id, Owner: e.cfg.NodeID, Epoch: p.epoch, TTL: e.leaseTTL()})
			if errors.Is(err, storage.ErrFenced) {
				e.log.Warn("lease lost", "partition", p.id, "epoch", p.epoch)
				e.dropPartition(p)
				continue
			}
			if err != nil && ctx.Err() == nil {
				// The store may be down; the commit fencing keeps us safe,
				// and the next tick tries again.
				e.log.Warn("renew lease", "partition", p.id, "err", err)
			}
		}
		e.acquireFree(ctx, false)
	}
}

// running returns the partition loops this node runs now.
func (e *Engine) running() []*partition {
	e.mu.RLock()
	defer e.mu.RUnlock()
	parts := make([]*partition, 0, len(e.owned))
	for _, p := range e.owned {
		parts = append(parts, p)
	}
	return parts
}

// dropPartition stops a partition's loop and forgets it, after its lease
// was lost. Its sagas stay durable for whoever takes it next.
func (e *Engine) dropPartition(p *partition) {
	e.mu.Lock()
	if e.owned[p.id] == p {
		delete(e.owned, p.id)
	}
	e.mu.Unlock()
	e.pushes.forgetPartition(p.id)
	p.halt(errNotOwner(p.id))
	<-p.done
}
