package storagetest

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/accord-saga/accord/internal/storage"
)

func exerciseLeases(t *testing.T, h Harness) {
	acquire := func(t *testing.T, d storage.Driver, p int, owner string, ttl time.Duration) (storage.Lease, error) {
		t.Helper()
		return d.LeaseAcquire(t.Context(), &storage.LeaseAcquireParams{Partition: p, Owner: owner, TTL: ttl})
	}
	commitAt := func(t *testing.T, d storage.Driver, p int, epoch int64, stream string) error {
		t.Helper()
		_, err := d.Commit(t.Context(), &storage.CommitParams{Partition: p, Epoch: epoch, Appends: []storage.StreamAppend{{
			Stream: stream, ExpectedVersion: storage.AnyVersion, Events: events(stream, 0, 1),
		}}})
		return err
	}

	t.Run("AcquireAndList", func(t *testing.T) {
		t.Parallel()
		d := h.Open(t, 3)
		ls, err := d.LeaseList(t.Context())
		if err != nil || len(ls) != 3 {
			t.Fatalf("LeaseList on a new store = %+v, %v; want 3 leases", ls, err)
		}
		for p, l := range ls {
			if l.Partition != p || l.Owner != "" || l.Epoch != 0 {
				t.Fatalf("new store lease %d = %+v, want no owner and epoch 0", p, l)
			}
		}
		before, _ := d.Now(t.Context())
		l, err := acquire(t, d, 1, "node-1", longTTL)
		if err != nil {
			t.Fatalf("LeaseAcquire: %v", err)
		}
		if l.Partition != 1 || l.Owner != "node-1" || l.Epoch != 1 || l.ExpiresAt.Before(before.Add(longTTL)) {
			t.Fatalf("lease = %+v, want node-1 at epoch 1 expiring after %v", l, before.Add(longTTL))
		}
		ls, err = d.LeaseList(t.Context())
		if err != nil || len(ls) != 3 || ls[1].Owner != "node-1" || ls[1].Epoch != 1 || !ls[1].ExpiresAt.Equal(l.ExpiresAt) || ls[0].Owner != "" || ls[2].Owner != "" {
			t.Fatalf("LeaseList = %+v, %v; want only partition 1 held by node-1", ls, err)
		}
	})

	t.Run("TakeoverFences", func(t *testing.T) {
		t.Parallel()
		d := h.Open(t, 2)
		old, err := acquire(t, d, 0, "node-1", longTTL)
		if err != nil {
			t.Fatal(err)
		}
		if err := commitAt(t, d, 0, old.Epoch, "s"); err != nil {
			t.Fatalf("commit at the current epoch: %v", err)
		}
		_, err = acquire(t, d, 0, "node-2", longTTL)
		wantErr(t, "acquire of a lease another owner holds", err, storage.ErrLeaseHeld)

		// The same owner takes its own lease over: a restarted node.
		cur, err := acquire(t, d, 0, "node-1", longTTL)
		if err != nil || cur.Epoch != old.Epoch+1 {
			t.Fatalf("re-acquire by the same owner = %+v, %v; want epoch %d", cur, err, old.Epoch+1)
		}
		wantErr(t, "commit at the old epoch", commitAt(t, d, 0, old.Epoch, "s"), storage.ErrFenced)
		_, err = d.LeaseRenew(t.Context(), &storage.LeaseRenewParams{Partition: 0, Owner: "node-1", Epoch: old.Epoch, TTL: longTTL})
		wantErr(t, "renew at the old epoch", err, storage.ErrFenced)
		err = d.LeaseRelease(t.Context(), &storage.LeaseReleaseParams{Partition: 0, Owner: "node-1", Epoch: old.Epoch})
		wantErr(t, "release at the old epoch", err, storage.ErrFenced)
		_, err = d.LeaseRenew(t.Context(), &storage.LeaseRenewParams{Partition: 0, Owner: "node-2", Epoch: cur.Epoch, TTL: longTTL})
		wantErr(t, "renew by another owner", err, storage.ErrFenced)
		if evs, _ := d.StreamRead(t.Context(), &storage.StreamReadParams{Stream: "s"}); len(evs) != 1 {
			t.Fatalf("stream holds %d events, want the 1 committed before the takeover", len(evs))
		}

		if err := commitAt(t, d, 0, cur.Epoch, "s"); err != nil {
			t.Fatalf("commit at the new epoch: %v", err)
		}
		renewed, err := d.LeaseRenew(t.Context(), &storage.LeaseRenewParams{Partition: 0, Owner: "node-1", Epoch: cur.Epoch, TTL: 2 * longTTL})
		if err != nil || renewed.Epoch != cur.Epoch || renewed.Owner != "node-1" || !renewed.ExpiresAt.After(cur.ExpiresAt) {
			t.Fatalf("renew = %+v, %v; want the same epoch expiring after %v", renewed, err, cur.ExpiresAt)
		}
		if err := d.LeaseRelease(t.Context(), &storage.LeaseReleaseParams{Partition: 0, Owner: "node-1", Epoch: cur.Epoch}); err != nil {
			t.Fatalf("release: %v", err)
		}
		wantErr(t, "commit after release", commitAt(t, d, 0, cur.Epoch, "s"), storage.ErrFenced)
		_, err = d.LeaseRenew(t.Context(), &storage.LeaseRenewParams{Partition: 0, Owner: "node-1", Epoch: cur.Epoch, TTL: longTTL})
		wantErr(t, "renew after release", err, storage.ErrFenced)

		// Released: another owner takes it at once.
		next, err := acquire(t, d, 0, "node-2", longTTL)
		if err != nil || next.Epoch != cur.Epoch+1 || next.Owner != "node-2" {
			t.Fatalf("acquire after release = %+v, %v; want node-2 at epoch %d", next, err, cur.Epoch+1)
		}
		if err := commitAt(t, d, 0, next.Epoch, "s"); err != nil {
			t.Fatalf("commit by the new owner: %v", err)
		}
		if evs, _ := d.StreamRead(t.Context(), &storage.StreamReadParams{Stream: "s"}); len(evs) != 3 {
			t.Fatalf("stream holds %d events, want 3", len(evs))
		}
		// The other partition was never touched.
		wantErr(t, "commit to a never-leased partition", commitAt(t, d, 1, 1, "t"), storage.ErrFenced)
	})

	t.Run("ExpiryByDatabaseTime", func(t *testing.T) {
		t.Parallel()
		d := h.Open(t, 1)
		a, err := acquire(t, d, 0, "node-1", shortTTL)
		if err != nil {
			t.Fatal(err)
		}
		_, err = acquire(t, d, 0, "node-2", longTTL)
		wantErr(t, "acquire before expiry", err, storage.ErrLeaseHeld)
		waitPast(t, d, a.ExpiresAt)
		b, err := acquire(t, d, 0, "node-2", longTTL)
		if err != nil || b.Epoch != a.Epoch+1 || b.Owner != "node-2" {
			t.Fatalf("acquire after expiry = %+v, %v; want node-2 at epoch %d", b, err, a.Epoch+1)
		}
		wantErr(t, "commit by the expired owner", commitAt(t, d, 0, a.Epoch, "s"), storage.ErrFenced)
		_, err = d.LeaseRenew(t.Context(), &storage.LeaseRenewParams{Partition: 0, Owner: "node-1", Epoch: a.Epoch, TTL: longTTL})
		wantErr(t, "renew by the expired owner", err, storage.ErrFenced)
		if err := commitAt(t, d, 0, b.Epoch, "s"); err != nil {
			t.Fatalf("commit by the new owner: %v", err)
		}
	})

	t.Run("CommitAfterExpiryWithoutTakeover", func(t *testing.T) {
		t.Parallel()
		d := h.Open(t, 1)
		a, err := acquire(t, d, 0, "node-1", shortTTL)
		if err != nil {
			t.Fatal(err)
		}
		waitPast(t, d, a.ExpiresAt)
		wantErr(t, "commit after expiry", commitAt(t, d, 0, a.Epoch, "s"), storage.ErrFenced)
		_, err = d.LeaseRenew(t.Context(), &storage.LeaseRenewParams{Partition: 0, Owner: "node-1", Epoch: a.Epoch, TTL: longTTL})
		wantErr(t, "renew after expiry", err, storage.ErrFenced)
		if h, _ := d.PartitionHead(t.Context(), 0); h != 0 {
			t.Fatalf("head = %d after a fenced commit, want 0", h)
		}
		b, err := acquire(t, d, 0, "node-1", longTTL)
		if err != nil || b.Epoch != a.Epoch+1 {
			t.Fatalf("re-acquire after expiry = %+v, %v; want epoch %d", b, err, a.Epoch+1)
		}
		if err := commitAt(t, d, 0, b.Epoch, "s"); err != nil {
			t.Fatalf("commit after re-acquiring: %v", err)
		}
	})

	t.Run("RenewKeepsLeaseAlive", func(t *testing.T) {
		t.Parallel()
		d := h.Open(t, 1)
		a, err := acquire(t, d, 0, "node-1", shortTTL)
		if err != nil {
			t.Fatal(err)
		}
		r, err := d.LeaseRenew(t.Context(), &storage.LeaseRenewParams{Partition: 0, Owner: "node-1", Epoch: a.Epoch, TTL: longTTL})
		if err != nil {
			t.Fatalf("renew: %v", err)
		}
		waitPast(t, d, a.ExpiresAt)
		_, err = acquire(t, d, 0, "node-2", longTTL)
		wantErr(t, "acquire of a renewed lease past its first expiry", err, storage.ErrLeaseHeld)
		if err := commitAt(t, d, 0, r.Epoch, "s"); err != nil {
			t.Fatalf("commit on a renewed lease: %v", err)
		}
	})

	t.Run("ConcurrentAcquire", func(t *testing.T) {
		t.Parallel()
		d := h.Open(t, 1)
		const nodes = 8
		errs := make([]error, nodes)
		leases := make([]storage.Lease, nodes)
		var wg sync.WaitGroup
		for i := range nodes {
			wg.Go(func() {
				leases[i], errs[i] = d.LeaseAcquire(t.Context(), &storage.LeaseAcquireParams{Partition: 0, Owner: fmt.Sprintf("node-%d", i), TTL: longTTL})
			})
		}
		wg.Wait()
		winner := -1
		for i, err := range errs {
			switch {
			case err == nil && winner < 0:
				winner = i
			case err == nil:
				t.Fatalf("nodes %d and %d both acquired the lease", winner, i)
			case !errors.Is(err, storage.ErrLeaseHeld):
				t.Fatalf("node %d: %v, want ErrLeaseHeld", i, err)
			}
		}
		if winner < 0 || leases[winner].Epoch != 1 {
			t.Fatalf("winner %d with lease %+v, want one winner at epoch 1", winner, leases)
		}
	})
}
