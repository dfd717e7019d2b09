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
// Commits are grouped: the commits queued when one of the Driver's
// coalescer workers is free run in one transaction, with one COMMIT and
// one flush of the write-ahead log, in two round trips. The first locks the rows of the group's
// partitions, in ascending order, and reads the clock; a partition's row
// lock, held to the end, serializes the partition's writers (positions are
// gap-free) and makes a lease takeover wait for the commits in flight, so a
// commit that passed the epoch check cannot be overtaken by a newer epoch.
// Each commit is then checked in Go, in the group's order, and a commit
// refused (fenced, conflicting, invalid) writes nothing and leaves the
// others of its group unaffected. The second round trip writes the rest
// and ends with COMMIT. See group.go.
//
// # The bus
//
// A commit's Publishes take the partition's message positions (a counter of
// their own on the partition row) and fan out, in the same transaction, to
// one delivery per group of their topic; GroupCreate takes SHARE on the
// messages table so that it is ordered entirely before or after every
// publishing commit. Per-key order is a blocked flag on deliveries, kept
// true under advisory locks on topic, partition and key; claims use FOR
// UPDATE SKIP LOCKED. See bus.go.
//
// A Driver is safe for concurrent use; groups of different workers run in
// parallel. Errors are the storage package's sentinels, wrapped.
package postgres
