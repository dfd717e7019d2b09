// Package guard makes a participant's saga steps take effect exactly once.
//
// Accord delivers every step of a saga at least once: an action or a
// compensation may arrive twice, a compensation may arrive for an action
// that never reached the participant, and a delayed action may arrive after
// its compensation. A participant that records each step in its own
// database, in the same transaction as the step's effect, turns those
// deliveries into exactly-once effects. Guard keeps that record: one row per
// (saga id, step) in a table of the participant's database, reached through
// database/sql, so any driver works (pgx's stdlib, lib/pq, modernc.org/sqlite,
// mattn/go-sqlite3, ...).
//
// What each delivery does, given what the row already says:
//
//	delivery       no row yet                 action ran              compensated / null compensation
//	Action         run fn, record its output  return stored output    ErrCompensated: refuse
//	Compensate     null compensation:         run fn, record it       duplicate: nothing to do
//	               record it, do not run fn
//
// A null compensation is recorded so that an action delivered after it is
// refused: the saga has given that step up, and running it now would leave
// an effect nobody will ever undo.
//
// # Transactions
//
// The caller owns the transaction: it begins it, calls Action or Compensate
// once per delivery, and commits it when the call returns no error (rolling
// back otherwise). fn runs inside that transaction and must make its effect
// through it. When fn fails, the guard records nothing and returns fn's
// error unchanged; the caller rolls back, and Accord's redelivery runs the
// step again.
//
// Deliveries of one (saga, step) are serialized by the database through the
// guard's row, so an action and a compensation racing each other settle in
// one order or the other, never in a mixture:
//
//   - PostgreSQL: the row is created with INSERT ... ON CONFLICT DO NOTHING
//     and locked with SELECT ... FOR UPDATE. Use READ COMMITTED, the
//     default. Under REPEATABLE READ or SERIALIZABLE a concurrent delivery
//     may make the transaction fail with a serialization error, which the
//     guard reports as ErrBusy.
//   - SQLite: there are no row locks; the database's single writer
//     serializes transactions. Begin the participant's transactions with
//     BEGIN IMMEDIATE and set a busy_timeout (in the DSN: modernc.org/sqlite
//     takes _txlock=immediate&_pragma=busy_timeout(5000), mattn/go-sqlite3
//     _txlock=immediate&_busy_timeout=5000), so that a transaction takes
//     the write lock when it begins and waits for it rather than failing. A deferred
//     transaction stays correct, since SQLite then refuses to commit what it
//     cannot serialize, but it fails more often under contention.
//
// ErrBusy reports a transaction the database would not serialize with a
// concurrent one (SQLite busy or locked past busy_timeout; PostgreSQL
// serialization failure, deadlock or lock_timeout): roll back and retry, or
// answer Accord with a retryable failure so that it redelivers.
//
// # Retention
//
// Purge deletes records not changed for a given time (idempotency keys
// expire, typically after 24 hours). A purged record no longer protects its step: a
// redelivered action would run again, and a late compensation would be taken
// for a null one. Keep records at least as long as Accord may still deliver
// the saga's steps — its maximum saga duration plus its redelivery horizon,
// and never less than its saga retention.
//
// # Concurrency
//
// A Guard holds no state besides its options: it is safe for concurrent use
// and may serve any number of databases of its dialect.
package guard
