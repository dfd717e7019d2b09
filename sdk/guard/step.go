package guard

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// Action runs fn, the step's action, inside tx — unless the step's action
// already ran, or its compensation did.
//
// On the first delivery fn runs and its output is stored with the record;
// Action returns it with ran true. On a duplicate delivery fn does not run:
// Action returns the first delivery's stored output (an empty output comes
// back as nil) with ran false, so the participant answers Accord as it did
// the first time. When the step's compensation already ran, or a
// compensation found nothing to undo, fn does not run and Action returns
// an error wrapping ErrCompensated.
//
// When fn fails, Action records nothing and returns fn's error unchanged;
// the caller rolls tx back. Errors from the database wrap ErrBusy when a
// retry may succeed.
func (g *Guard) Action(ctx context.Context, tx *sql.Tx, k Key, fn func() (output []byte, err error)) (output []byte, ran bool, err error) {
	if err := checkArgs(tx, k, fn == nil); err != nil {
		return nil, false, err
	}
	state, stored, claimed, err := g.claim(ctx, tx, k, stateDone)
	if err != nil {
		return nil, false, fmt.Errorf("guard: action %s: %w", k, err)
	}
	if !claimed {
		switch state {
		case stateDone:
			return stored, false, nil
		case stateCompensated, stateNullCompensated:
			return nil, false, fmt.Errorf("%w: %s (%s)", ErrCompensated, k, state)
		}
		return nil, false, fmt.Errorf("guard: action %s: record in unknown state %q", k, truncate(state))
	}
	out, err := fn()
	if err != nil {
		// The caller should roll back, but a caller that commits anyway
		// must not leave a record that would turn the redelivery of a
		// failed action into a success.
		if _, ferr := tx.ExecContext(ctx, g.q.forget, k.SagaID, k.Step); ferr != nil {
			return nil, false, errors.Join(err, fmt.Errorf("guard: action %s: forget the record: %w", k, g.classify(ferr)))
		}
		return nil, false, err
	}
	if len(out) > 0 {
		if _, err := tx.ExecContext(ctx, g.q.output, k.SagaID, k.Step, out); err != nil {
			return nil, false, fmt.Errorf("guard: action %s: store output: %w", k, g.classify(err))
		}
	}
	return out, true, nil
}

// Compensate runs fn, the step's compensation, inside tx — only if the
// step's action ran and was not compensated yet; it then returns ran true.
//
// When the action never ran, there is nothing to undo: Compensate records
// a null compensation, so that the action is refused if it arrives later,
// and returns ran false without running fn. A duplicate compensation does
// nothing and returns ran false. Both are successes to report to Accord.
//
// When fn fails, Compensate records nothing and returns fn's error
// unchanged; the caller rolls tx back. Errors from the database wrap
// ErrBusy when a retry may succeed.
func (g *Guard) Compensate(ctx context.Context, tx *sql.Tx, k Key, fn func() error) (ran bool, err error) {
	if err := checkArgs(tx, k, fn == nil); err != nil {
		return false, err
	}
	state, _, claimed, err := g.claim(ctx, tx, k, stateNullCompensated)
	if err != nil {
		return false, fmt.Errorf("guard: compensate %s: %w", k, err)
	}
	if claimed {
		return false, nil // a null compensation, now recorded
	}
	switch state {
	case stateCompensated, stateNullCompensated:
		return false, nil
	case stateDone:
	default:
		return false, fmt.Errorf("guard: compensate %s: record in unknown state %q", k, truncate(state))
	}
	if err := fn(); err != nil {
		return false, err
	}
	if _, err := tx.ExecContext(ctx, g.q.state, k.SagaID, k.Step, stateCompensated); err != nil {
		return false, fmt.Errorf("guard: compensate %s: record: %w", k, g.classify(err))
	}
	return true, nil
}

// String returns the key as "<saga id>/<step>".
func (k Key) String() string { return k.SagaID + "/" + k.Step }

// claimAttempts bounds how often claim retries a record that vanished
// between its insert and its lock — only a concurrent Purge does that.
const claimAttempts = 3

// claim creates k's record in state newState, or, when the record exists,
// locks it and returns its state and output. claimed reports a creation.
//
// On PostgreSQL the insert waits for a concurrent transaction that created
// the same record to end; the lock then waits for one that holds it. On
// SQLite the transaction's write lock already excludes every other writer.
func (g *Guard) claim(ctx context.Context, tx *sql.Tx, k Key, newState string) (state string, output []byte, claimed bool, err error) {
	for range claimAttempts {
		res, err := tx.ExecContext(ctx, g.q.insert, k.SagaID, k.Step, newState)
		if err != nil {
			return "", nil, false, g.classify(err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return "", nil, false, fmt.Errorf("rows affected: %w", err)
		}
		if n == 1 {
			return "", nil, true, nil
		}
		err = tx.QueryRowContext(ctx, g.q.lock, k.SagaID, k.Step).Scan(&state, &output)
		if errors.Is(err, sql.ErrNoRows) {
			continue
		}
		if err != nil {
			return "", nil, false, g.classify(err)
		}
		if len(output) == 0 {
			output = nil
		}
		return state, output, false, nil
	}
	return "", nil, false, fmt.Errorf("record deleted while in use %d times (is Purge's retention too short?)", claimAttempts)
}

func checkArgs(tx *sql.Tx, k Key, nilFn bool) error {
	if tx == nil {
		return errors.New("guard: nil transaction")
	}
	if nilFn {
		return errors.New("guard: nil function")
	}
	return k.check()
}
