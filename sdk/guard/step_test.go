package guard

import (
	"context"
	"database/sql"
	"errors"
	"testing"
)

func TestDuplicateActionReturnsFirstOutput(t *testing.T) {
	t.Parallel()
	eachDialect(t, func(t *testing.T, d *testDB) {
		ctx := context.Background()
		k := Key{SagaID: "order-1", Step: "charge"}
		d.openAccount(t, k.SagaID)

		out, ran, err := d.action(ctx, k)
		if err != nil || !ran || string(out) != "balance 90" {
			t.Fatalf("first action = %q, ran %v, %v; want \"balance 90\", ran, no error", out, ran, err)
		}
		for range 2 {
			out, ran, err = d.action(ctx, k)
			if err != nil || ran || string(out) != "balance 90" {
				t.Fatalf("duplicate action = %q, ran %v, %v; want the first output, not ran, no error", out, ran, err)
			}
		}
		d.ledger(t, k, 90, 1, 0)
		if s := d.state(t, k); s != stateDone {
			t.Errorf("state %q, want %q", s, stateDone)
		}
	})
}

func TestCompensationOfActionThatNeverRan(t *testing.T) {
	t.Parallel()
	eachDialect(t, func(t *testing.T, d *testDB) {
		ctx := context.Background()
		k := Key{SagaID: "order-1", Step: "charge"}
		d.openAccount(t, k.SagaID)

		ran, err := d.compensate(ctx, k)
		if err != nil || ran {
			t.Fatalf("null compensation: ran %v, %v; want not ran, no error", ran, err)
		}
		if s := d.state(t, k); s != stateNullCompensated {
			t.Fatalf("state %q, want %q", s, stateNullCompensated)
		}
		// The lost action now arrives, late: it must not run.
		out, ran, err := d.action(ctx, k)
		if !errors.Is(err, ErrCompensated) || ran || out != nil {
			t.Fatalf("action after null compensation = %q, ran %v, %v; want ErrCompensated", out, ran, err)
		}
		// And a duplicate of the compensation is still a no-op.
		if ran, err := d.compensate(ctx, k); err != nil || ran {
			t.Fatalf("duplicate null compensation: ran %v, %v", ran, err)
		}
		d.ledger(t, k, openingBalance, 0, 0)
	})
}

func TestActionAfterItsCompensationIsRefused(t *testing.T) {
	t.Parallel()
	eachDialect(t, func(t *testing.T, d *testDB) {
		ctx := context.Background()
		k := Key{SagaID: "order-1", Step: "charge"}
		d.openAccount(t, k.SagaID)

		if _, ran, err := d.action(ctx, k); err != nil || !ran {
			t.Fatalf("action: ran %v, %v", ran, err)
		}
		if ran, err := d.compensate(ctx, k); err != nil || !ran {
			t.Fatalf("compensation: ran %v, %v; want ran", ran, err)
		}
		// A delayed copy of the action arrives after the compensation.
		out, ran, err := d.action(ctx, k)
		if !errors.Is(err, ErrCompensated) || ran || out != nil {
			t.Fatalf("delayed action = %q, ran %v, %v; want ErrCompensated", out, ran, err)
		}
		d.ledger(t, k, openingBalance, 1, 1)
		if s := d.state(t, k); s != stateCompensated {
			t.Errorf("state %q, want %q", s, stateCompensated)
		}
	})
}

func TestDuplicateCompensationIsNoop(t *testing.T) {
	t.Parallel()
	eachDialect(t, func(t *testing.T, d *testDB) {
		ctx := context.Background()
		k := Key{SagaID: "order-1", Step: "charge"}
		d.openAccount(t, k.SagaID)

		if _, _, err := d.action(ctx, k); err != nil {
			t.Fatal(err)
		}
		if ran, err := d.compensate(ctx, k); err != nil || !ran {
			t.Fatalf("compensation: ran %v, %v; want ran", ran, err)
		}
		for range 2 {
			if ran, err := d.compensate(ctx, k); err != nil || ran {
				t.Fatalf("duplicate compensation: ran %v, %v; want not ran, no error", ran, err)
			}
		}
		d.ledger(t, k, openingBalance, 1, 1)
	})
}

func TestStepsAreIndependent(t *testing.T) {
	t.Parallel()
	eachDialect(t, func(t *testing.T, d *testDB) {
		ctx := context.Background()
		charge := Key{SagaID: "order-1", Step: "charge"}
		fee := Key{SagaID: "order-1", Step: "fee"}
		other := Key{SagaID: "order-2", Step: "charge"}
		d.openAccount(t, "order-1")
		d.openAccount(t, "order-2")

		if ran, err := d.compensate(ctx, fee); err != nil || ran {
			t.Fatalf("null compensation of fee: ran %v, %v", ran, err)
		}
		for _, k := range []Key{charge, other} {
			if _, ran, err := d.action(ctx, k); err != nil || !ran {
				t.Fatalf("action %s: ran %v, %v; another step's record must not stop it", k, ran, err)
			}
		}
		if _, _, err := d.action(ctx, fee); !errors.Is(err, ErrCompensated) {
			t.Fatalf("action fee: %v; want ErrCompensated", err)
		}
		d.ledger(t, charge, 90, 1, 0)
		d.ledger(t, other, 90, 1, 0)
	})
}

func TestRollbackLeavesNoRecord(t *testing.T) {
	t.Parallel()
	eachDialect(t, func(t *testing.T, d *testDB) {
		ctx := context.Background()
		k := Key{SagaID: "order-1", Step: "charge"}
		d.openAccount(t, k.SagaID)
		errLater := errors.New("participant fails after the step")

		// The action runs, then the participant's transaction fails.
		err := d.inTx(ctx, func(tx *sql.Tx) error {
			_, ran, err := d.g.Action(ctx, tx, k, func() ([]byte, error) { return d.debit(ctx, tx, k) })
			if err != nil || !ran {
				t.Fatalf("action in the rolled back transaction: ran %v, %v", ran, err)
			}
			return errLater
		})
		if !errors.Is(err, errLater) {
			t.Fatal(err)
		}
		if n := d.records(t); n != 0 {
			t.Fatalf("%d records after rollback, want 0", n)
		}
		d.ledger(t, k, openingBalance, 0, 0)

		// The redelivery runs the action for real.
		if _, ran, err := d.action(ctx, k); err != nil || !ran {
			t.Fatalf("redelivered action: ran %v, %v; want ran", ran, err)
		}

		// Same for a compensation whose transaction rolls back.
		err = d.inTx(ctx, func(tx *sql.Tx) error {
			ran, err := d.g.Compensate(ctx, tx, k, func() error { return d.credit(ctx, tx, k) })
			if err != nil || !ran {
				t.Fatalf("compensation in the rolled back transaction: ran %v, %v", ran, err)
			}
			return errLater
		})
		if !errors.Is(err, errLater) {
			t.Fatal(err)
		}
		if s := d.state(t, k); s != stateDone {
			t.Fatalf("state after a rolled back compensation %q, want %q", s, stateDone)
		}
		if ran, err := d.compensate(ctx, k); err != nil || !ran {
			t.Fatalf("redelivered compensation: ran %v, %v; want ran", ran, err)
		}
		d.ledger(t, k, openingBalance, 1, 1)

		// A null compensation rolled back is forgotten too.
		k2 := Key{SagaID: "order-1", Step: "ship"}
		err = d.inTx(ctx, func(tx *sql.Tx) error {
			if _, err := d.g.Compensate(ctx, tx, k2, func() error { return nil }); err != nil {
				t.Fatal(err)
			}
			return errLater
		})
		if !errors.Is(err, errLater) {
			t.Fatal(err)
		}
		if s := d.state(t, k2); s != "" {
			t.Fatalf("state after a rolled back null compensation %q, want none", s)
		}
	})
}

func TestFailedStepRecordsNothing(t *testing.T) {
	t.Parallel()
	eachDialect(t, func(t *testing.T, d *testDB) {
		ctx := context.Background()
		k := Key{SagaID: "order-1", Step: "charge"}
		d.openAccount(t, k.SagaID)
		errDeclined := errors.New("card declined")

		// A participant that commits even though the action failed must
		// not find the failure recorded as a success.
		tx, err := d.db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		out, ran, err := d.g.Action(ctx, tx, k, func() ([]byte, error) { return []byte("partial"), errDeclined })
		if err != errDeclined || ran || out != nil {
			t.Fatalf("failed action = %q, ran %v, %v; want fn's error itself", out, ran, err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		if n := d.records(t); n != 0 {
			t.Fatalf("%d records after a failed action, want 0", n)
		}
		if _, ran, err := d.action(ctx, k); err != nil || !ran {
			t.Fatalf("action after a failed one: ran %v, %v; want ran", ran, err)
		}

		tx, err = d.db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		ran, err = d.g.Compensate(ctx, tx, k, func() error { return errDeclined })
		if err != errDeclined || ran {
			t.Fatalf("failed compensation: ran %v, %v; want fn's error itself", ran, err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		if s := d.state(t, k); s != stateDone {
			t.Fatalf("state after a failed compensation %q, want %q", s, stateDone)
		}
		if ran, err := d.compensate(ctx, k); err != nil || !ran {
			t.Fatalf("compensation after a failed one: ran %v, %v; want ran", ran, err)
		}
		d.ledger(t, k, openingBalance, 1, 1)
	})
}

func TestEmptyOutput(t *testing.T) {
	t.Parallel()
	eachDialect(t, func(t *testing.T, d *testDB) {
		ctx := context.Background()
		k := Key{SagaID: "order-1", Step: "notify"}
		for i, want := range []bool{true, false} {
			err := d.inTx(ctx, func(tx *sql.Tx) error {
				out, ran, err := d.g.Action(ctx, tx, k, func() ([]byte, error) { return nil, nil })
				if err != nil || ran != want || out != nil {
					t.Errorf("delivery %d = %q, ran %v, %v; want nil output, ran %v", i, out, ran, err, want)
				}
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
		}
	})
}

func TestBothPhasesInOneTransaction(t *testing.T) {
	t.Parallel()
	eachDialect(t, func(t *testing.T, d *testDB) {
		ctx := context.Background()
		k := Key{SagaID: "order-1", Step: "charge"}
		d.openAccount(t, k.SagaID)
		err := d.inTx(ctx, func(tx *sql.Tx) error {
			if _, ran, err := d.g.Action(ctx, tx, k, func() ([]byte, error) { return d.debit(ctx, tx, k) }); err != nil || !ran {
				t.Fatalf("action: ran %v, %v", ran, err)
			}
			if ran, err := d.g.Compensate(ctx, tx, k, func() error { return d.credit(ctx, tx, k) }); err != nil || !ran {
				t.Fatalf("compensation: ran %v, %v", ran, err)
			}
			_, _, err := d.g.Action(ctx, tx, k, func() ([]byte, error) { return d.debit(ctx, tx, k) })
			if !errors.Is(err, ErrCompensated) {
				t.Fatalf("action after compensation in the same transaction: %v; want ErrCompensated", err)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		d.ledger(t, k, openingBalance, 1, 1)
	})
}

func TestBadArguments(t *testing.T) {
	t.Parallel()
	eachDialect(t, func(t *testing.T, d *testDB) {
		ctx := context.Background()
		okFn := func() ([]byte, error) { t.Error("fn ran"); return nil, nil }
		okComp := func() error { t.Error("fn ran"); return nil }
		good := Key{SagaID: "s", Step: "a"}
		for _, k := range []Key{
			{},
			{SagaID: "s"},
			{Step: "a"},
			{SagaID: "s\x00", Step: "a"},
			{SagaID: "s", Step: "a/b"},
			{SagaID: "s", Step: "\xff"},
		} {
			err := d.inTx(ctx, func(tx *sql.Tx) error {
				_, _, err := d.g.Action(ctx, tx, k, okFn)
				if !errors.Is(err, ErrBadKey) {
					t.Errorf("Action(%q): %v; want ErrBadKey", k, err)
				}
				_, err = d.g.Compensate(ctx, tx, k, okComp)
				if !errors.Is(err, ErrBadKey) {
					t.Errorf("Compensate(%q): %v; want ErrBadKey", k, err)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		if _, _, err := d.g.Action(ctx, nil, good, okFn); err == nil {
			t.Error("Action with a nil transaction succeeded")
		}
		if _, err := d.g.Compensate(ctx, nil, good, okComp); err == nil {
			t.Error("Compensate with a nil transaction succeeded")
		}
		err := d.inTx(ctx, func(tx *sql.Tx) error {
			if _, _, err := d.g.Action(ctx, tx, good, nil); err == nil {
				t.Error("Action with a nil fn succeeded")
			}
			if _, err := d.g.Compensate(ctx, tx, good, nil); err == nil {
				t.Error("Compensate with a nil fn succeeded")
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if n := d.records(t); n != 0 {
			t.Errorf("%d records after bad calls, want 0", n)
		}
	})
}

// TestFailedStatementInStep: when fn's own SQL fails (PostgreSQL then
// refuses every further statement of the transaction), the caller still
// gets fn's error, and rolling back leaves nothing behind.
func TestFailedStatementInStep(t *testing.T) {
	t.Parallel()
	eachDialect(t, func(t *testing.T, d *testDB) {
		ctx := context.Background()
		k := Key{SagaID: "order-1", Step: "charge"}
		d.openAccount(t, k.SagaID)
		var fnErr error
		err := d.inTx(ctx, func(tx *sql.Tx) error {
			_, ran, err := d.g.Action(ctx, tx, k, func() ([]byte, error) {
				// A duplicate primary key: the participant's own constraint.
				_, fnErr = tx.ExecContext(ctx, d.sql(`INSERT INTO accounts (id, balance) VALUES ($1, 0)`), k.SagaID)
				return nil, fnErr
			})
			if fnErr == nil || ran || !errors.Is(err, fnErr) {
				t.Fatalf("Action = ran %v, %v; want fn's error %v", ran, err, fnErr)
			}
			return err
		})
		if !errors.Is(err, fnErr) {
			t.Fatal(err)
		}
		if n := d.records(t); n != 0 {
			t.Fatalf("%d records, want 0", n)
		}
		if _, ran, err := d.action(ctx, k); err != nil || !ran {
			t.Fatalf("redelivered action: ran %v, %v; want ran", ran, err)
		}
		d.ledger(t, k, 90, 1, 0)
	})
}
