package guard

import (
	"errors"
	"fmt"
	"strings"
)

var (
	// ErrCompensated is returned by Action for a step whose compensation
	// already ran, or was recorded as a null compensation. The action must
	// not run: the participant answers Accord with a business
	// (non-retryable) failure.
	ErrCompensated = errors.New("guard: step already compensated")

	// ErrBadKey reports a malformed saga id, step or phase. It comes from
	// input, so a participant answers it with a client error.
	ErrBadKey = errors.New("guard: bad key")

	// ErrBusy reports a transaction that the database would not serialize
	// with a concurrent one. Roll back and retry, or answer Accord with a
	// retryable failure.
	ErrBusy = errors.New("guard: database busy")
)

// SQLite result codes (the primary code is the low byte of an extended one).
const (
	sqliteBusy   = 5
	sqliteLocked = 6
)

// isBusy reports whether err is the database declining to serialize a
// transaction with a concurrent one. It reads drivers' errors through the
// methods they expose, so that the guard imports no driver.
func isBusy(err error) bool {
	var pg interface{ SQLState() string } // pgx's *pgconn.PgError, lib/pq's *pq.Error
	if errors.As(err, &pg) {
		switch pg.SQLState() {
		case "40001", // serialization_failure
			"40P01", // deadlock_detected
			"55P03": // lock_not_available (lock_timeout)
			return true
		}
		return false
	}
	var lite interface{ Code() int } // modernc.org/sqlite's *sqlite.Error
	if errors.As(err, &lite) {
		code := lite.Code() & 0xff
		return code == sqliteBusy || code == sqliteLocked
	}
	// Drivers that expose no code (mattn/go-sqlite3 has fields, not
	// methods) still say it in SQLite's own words.
	msg := err.Error()
	return strings.Contains(msg, "database is locked") ||
		strings.Contains(msg, "database table is locked") ||
		strings.Contains(msg, "SQLITE_BUSY")
}

// classify marks a database error that asks for a retry with ErrBusy.
func (g *Guard) classify(err error) error {
	if !isBusy(err) {
		return err
	}
	if g.dialect == SQLite {
		return fmt.Errorf("%w (begin transactions with BEGIN IMMEDIATE and set a busy_timeout): %w", ErrBusy, err)
	}
	return fmt.Errorf("%w: %w", ErrBusy, err)
}
