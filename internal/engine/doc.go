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
// Active sagas live in memory, keyed by partition; a saga leaves memory when
// it ends. When the engine takes a partition (at start, or after another
// node lost it) it reloads that partition's unfinished sagas from their
// snapshots and its timers from the timer table; the tasks those sagas wait
// on are already durable in the task table.
//
// Fencing: every commit carries the partition's lease epoch. A loop whose
// commit is fenced stops at once and drops its memory; the lease manager
// may take the partition again later, with a new epoch, from the store.
//
// Ownership: Engine.Start starts the lease manager, the loops and the
// retention sweeper; Engine.Stop stops intake, lets each loop finish its
// batch, releases the leases and waits for every goroutine.
package engine
