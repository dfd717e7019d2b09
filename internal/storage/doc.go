// Package storage defines the contract between Accord and its durable
// backends, and the types that cross it.
//
// A backend (a Driver) keeps one append-only log split into P partitions, P
// fixed when the store is created. Every event belongs to a stream and to a
// partition; inside its partition it gets a gap-free, strictly increasing
// position. Beside the log a backend keeps the tables that hold pending work —
// tasks, timers, idempotency keys, consumer positions — and every change to
// them that an event causes is written by the same Commit, in one
// transaction, as that event (the transactional outbox: no dual writes).
//
// # Fencing
//
// Each partition has at most one writer at a time: the holder of its lease.
// A lease carries an epoch that grows by one at every acquisition. Commit is
// conditional on the epoch it is given being the partition's current epoch
// and on the lease not having expired by the database's clock; otherwise it
// fails with ErrFenced and writes nothing. Lease expiry is always computed
// with the database's clock (Driver.Now), never with the caller's.
//
// # Errors
//
// Drivers return the sentinel errors of this package, wrapped with context;
// callers test them with errors.Is. A *VersionConflictError carries the
// stream's actual version, an *IdempotencyKeyExistsError the stored result.
//
// # Concurrency
//
// A Driver is safe for concurrent use. Commits to one partition are
// serialized by the backend; commits to different partitions may run in
// parallel (PostgreSQL) or one after the other (SQLite, one writer).
//
// Every backend must pass the conformance suite in package storagetest.
package storage
