// Package sqlite is Accord's embedded storage backend: one SQLite database
// file, through the pure-Go modernc.org/sqlite driver, so the binary stays
// static.
//
// # Durability
//
// The database runs in WAL mode with synchronous=FULL by default: Commit
// returns only after the write-ahead log is fsynced, so an acknowledged
// commit survives kill -9 and power loss. Config.Synchronous "normal" is a
// weaker, explicit opt-in.
//
// # One writer, group commit
//
// SQLite allows one writer at a time. The Driver owns a single writer
// connection and a goroutine that runs every write (commits, task claims,
// lease operations, definitions, retention) in batches: everything queued
// goes into one transaction, each write inside its own savepoint so that
// one failure rolls back only that write, and one COMMIT makes the whole
// batch durable. Callers each get their own result. Reads use a separate
// pool of connections and see every acknowledged write.
//
// # Time
//
// The store's clock (Driver.Now) is the host's wall clock at microsecond
// precision, held from going backwards. Every write reads it once, inside
// its transaction; all times are stored as Unix microseconds.
//
// # Opening
//
// Open creates a new store when the file is missing or empty and applies
// the embedded, numbered migrations (migrations/NNN_name.sql) in one
// transaction. A file that is not an SQLite database, or an SQLite database
// without Accord's metadata, is refused with storage.ErrNotAStore; a store
// written by a newer binary with *storage.SchemaTooNewError. In both cases
// the file is left untouched: it is inspected read-only before anything
// writes to it. The directory of the file must exist.
//
// One Driver at a time: Open takes an exclusive lock (flock) on the file
// Path+"-lock" before it looks at the store, and Close gives it up. A
// second Open of the same store, from this process or another, fails at
// once with *InUseError and touches nothing. Two processes writing one
// store would each run every partition and take each other's leases.
//
// The Driver keeps the storage.Driver contract and passes the conformance
// suite in package storagetest.
package sqlite
