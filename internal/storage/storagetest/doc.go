// Package storagetest is the conformance suite that every storage backend
// runs unchanged: a backend's own test calls Exercise with a Harness that
// opens fresh stores, and the suite checks the whole storage.Driver
// contract against it — streams and positions, fencing, idempotency keys,
// tasks, timers, consumer positions, definitions, saga records, invalid
// input and durability across a reopen.
//
// The suite is backend-agnostic: it judges time only by Driver.Now (the
// database's clock), waits on conditions with deadlines rather than
// sleeping for fixed durations, and compares times at the microsecond
// precision every backend stores. Most subtests run in parallel, each on a
// store of its own, so Harness.Open must be safe for concurrent use.
package storagetest
