package guard

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// age moves k's record back in time by d, as if it had not changed since.
func (td *testDB) age(t *testing.T, k Key, d time.Duration) {
	t.Helper()
	q := `UPDATE accord_guard SET updated_at = updated_at - $1::bigint * interval '1 millisecond' WHERE saga_id = $2 AND step = $3`
	if td.dialect == SQLite {
		q = `UPDATE accord_guard SET updated_at = updated_at - ?1 WHERE saga_id = ?2 AND step = ?3`
	}
	res, err := td.db.Exec(q, d.Milliseconds(), k.SagaID, k.Step)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		t.Fatalf("age %s: %d rows", k, n)
	}
}

func TestPurge(t *testing.T) {
	t.Parallel()
	eachDialect(t, func(t *testing.T, d *testDB) {
		ctx := context.Background()
		d.g.purgeBatch = 2 // so that a purge takes several batches
		const retention = 24 * time.Hour
		var old, young []Key
		for i := range 5 {
			old = append(old, Key{SagaID: fmt.Sprintf("old-%d", i), Step: "charge"})
		}
		for i := range 3 {
			young = append(young, Key{SagaID: fmt.Sprintf("young-%d", i), Step: "charge"})
		}
		for _, k := range append(append([]Key{}, old...), young...) {
			d.openAccount(t, k.SagaID)
			if _, _, err := d.action(ctx, k); err != nil {
				t.Fatal(err)
			}
		}
		for _, k := range old {
			d.age(t, k, retention+time.Minute)
		}
		// Just inside the retention: kept.
		d.age(t, young[0], retention-time.Minute)

		n, err := d.g.Purge(ctx, d.db, retention)
		if err != nil || n != len(old) {
			t.Fatalf("Purge = %d, %v; want %d", n, err, len(old))
		}
		for _, k := range old {
			if s := d.state(t, k); s != "" {
				t.Errorf("%s survived the purge in state %q", k, s)
			}
		}
		for _, k := range young {
			if s := d.state(t, k); s != stateDone {
				t.Errorf("%s: state %q after the purge, want %q", k, s, stateDone)
			}
		}
		if n, err := d.g.Purge(ctx, d.db, retention); err != nil || n != 0 {
			t.Fatalf("second Purge = %d, %v; want 0", n, err)
		}

		// A compensation renews its record: it is kept as long as the
		// retention after the compensation.
		d.age(t, young[1], retention+time.Minute)
		if ran, err := d.compensate(ctx, young[1]); err != nil || !ran {
			t.Fatalf("compensate: ran %v, %v", ran, err)
		}
		if n, err := d.g.Purge(ctx, d.db, retention); err != nil || n != 0 {
			t.Fatalf("Purge after a compensation = %d, %v; want 0", n, err)
		}

		// Why the retention matters: a purged step is unprotected, and
		// its late compensation is taken for a null one.
		if ran, err := d.compensate(ctx, old[0]); err != nil || ran {
			t.Fatalf("compensation of a purged step: ran %v, %v; want a null compensation", ran, err)
		}
		d.ledger(t, old[0], 90, 1, 0)

		// Age zero purges everything.
		n, err = d.g.Purge(ctx, d.db, 0)
		if err != nil || n != len(young)+1 {
			t.Fatalf("Purge(0) = %d, %v; want %d", n, err, len(young)+1)
		}
		if n := d.records(t); n != 0 {
			t.Fatalf("%d records after Purge(0)", n)
		}

		if _, err := d.g.Purge(ctx, d.db, -time.Second); err == nil {
			t.Error("Purge with a negative age succeeded")
		}
		if _, err := d.g.Purge(ctx, nil, time.Hour); err == nil {
			t.Error("Purge of a nil database succeeded")
		}
		cancelled, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := d.g.Purge(cancelled, d.db, time.Hour); err == nil {
			t.Error("Purge with a cancelled context succeeded")
		}
	})
}
