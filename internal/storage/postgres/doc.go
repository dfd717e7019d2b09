// Package postgres is the PostgreSQL storage backend: the store for a
// cluster of Accord nodes sharing one database.
//
// Open connects, then creates the store in Config.Schema or migrates it, in
// one transaction under an advisory lock, so that nodes starting together
// are safe. A schema that holds other tables is refused (ErrNotAStore) and
// a store written by a newer binary too (*SchemaTooNewError); neither is
// touched. Migrations are the numbered SQL files in migrations/, embedded.
//
// Every session runs with synchronous_commit=on: a commit that returned is
// durable. Every time the store records or judges — lease expiry, task
// visibility, timer due times, idempotency expiry, event and saga times —
// comes from the database's clock_timestamp(), stored as Unix microseconds,
// so nodes' clocks never matter.
//
// # Commits and fencing
//
// A commit is one transaction in two round trips. Its first statement
// advances the partition's head on condition that the given epoch is the
// partition's and its lease is unexpired; that row lock, held to the end,
// serializes the partition's writers (positions are gap-free) and makes a
// lease takeover wait for the commit in flight, so a commit that passed the
// check cannot be overtaken by a newer epoch. The rest of the commit is
// pipelined in one batch that ends with COMMIT.
//
// A Driver is safe for concurrent use; commits to different partitions run
// in parallel. Errors are the storage package's sentinels, wrapped.
package postgres
