// Package engine runs the pure saga core (package saga) against a store.
//
// For every partition it holds the lease of, the engine runs one loop
// goroutine. The loop takes a batch of inputs — saga starts, step results,
// fired timers, cancels — steps each saga through the core, and writes every
// resulting event, task, timer and saga record of the whole batch in one
// storage Commit (group commit; the batch is whatever is queued, so its size
// follows the load). Only after that commit returns does the loop act on the
// core's commands: hand tasks to dispatchers, arm timers, answer callers.
// Persist before send, always.
//
// What a step costs durably is its events and its saga record (a snapshot
// of the saga's state, written with them). Everything else is derived from
// that state: the state records every armed timer (retries, attempt, step
// and saga timeouts) and every attempt in flight. Timers are therefore kept
// in memory only, and push attempts (HTTP participants) are handed to the
// dispatcher without a row. Pull tasks are rows, since workers outside the
// process claim them from the task table.
//
// Active sagas live in memory, keyed by partition; a saga leaves memory when
// it ends. When the engine takes a partition (at start, or after another
// node lost it) it reloads that partition's unfinished sagas from their
// snapshots, re-arms their timers and dispatches their push attempts in
// flight again (delivery is at least once). A reconciler re-creates any
// pull task row that has gone missing. A saga whose snapshot cannot be
// decoded is quarantined rather than retried (quarantine.go): the rest of
// its partition runs, inputs for it are ErrQuarantined, and Discard ends
// it.
//
// Database time: the core is given the engine's estimate of the database's clock
// (local clock plus the offset seen at the last commit), so every deadline
// it records is in database time. The estimate errs early by at most one
// commit's duration, which makes timers fire at or after their deadlines by
// the database's clock, never before.
//
// Fencing: every commit carries the partition's lease epoch. A loop whose
// commit is fenced stops at once and drops its memory; the lease manager
// may take the partition again later, with a new epoch, from the store.
// Callers waiting on a fenced loop get ErrNotOwner; ErrStopped means the
// engine itself is stopping. On a store one process alone has open
// (storage.Info.Exclusive, the embedded SQLite store) no other node can
// take a partition, so leases are taken "until released": a renewal that
// comes late never fences the node off its own partitions, and at Start
// the leases a dead process left are taken over.
//
// Time: every timer, ticker and poll deadline follows Config.Clock, so a
// test can drive the engine's time with a clock.Manual (and the SQLite
// store's with the same clock).
//
// Ownership: Engine.Start starts the lease manager, the loops and the
// retention sweeper; Engine.Quiesce makes it hand out no new work (no push
// dispatch, no task to a poll) while results are still recorded, the
// first step of a graceful shutdown; Engine.Stop quiesces, stops intake,
// lets each loop finish its batch, releases the leases and waits for every
// goroutine.
package engine
