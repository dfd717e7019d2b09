// Package saga is Accord's pure saga core: saga definitions (parse,
// validate, canonical form) and the saga state machine.
//
// Nothing in this package does IO, starts goroutines, reads the clock or
// draws global randomness; a test enforces it. Time arrives as the Now field
// of each input, and the only randomness (retry jitter) comes from a
// generator whose state lives in the saga's State, seeded by StartInput.Seed.
// The same definition and the same inputs therefore always give
// byte-identical events and commands — which is what lets the engine be
// tested by scripts and by simulation, as etcd-io/raft's core is.
//
// # Contract
//
// Start and Step return the new State, the Events to append to the saga's
// log, and the Commands to carry out. The caller must:
//
//  1. persist the events durably, in one transaction with whatever the
//     commands imply that cannot be derived from the State (the engine
//     writes pull task rows; timers and push attempts it re-derives from
//     the State's snapshot, via State.Timers and State.Tasks);
//  2. only then carry out the commands (dispatch tasks, arm and disarm
//     timers) — persist before send;
//  3. feed every step result and fired timer back through Step, each with
//     the current time.
//
// Commands are values of the types DispatchStep (send one attempt),
// SetTimer and CancelTimer (arm and disarm a retry, attempt, step or saga
// timer), CancelTask (withdraw an attempt that timed out) and Finished (the
// saga reached a terminal status). Inputs are step results, fired timers,
// cancels and operator retries (see Input).
//
// Step never modifies the State it is given; on error it returns that
// State's saga unchanged and no events or commands. Replay folds a saga's
// log back into the State Step produced, so the caller may keep States in
// memory, snapshot them (State is plain JSON), or rebuild them from the log
// after a crash. Task and timer ids are pure functions of (saga, step,
// phase, attempt, kind), so a recovering engine can recompute them; see
// State.Timers and State.Tasks.
//
// Results and timers that no longer apply (a late or duplicate result, a
// result for an attempt that is not the current one, a timer for an attempt
// that already ended) are expected in an at-least-once system: Step returns
// no events, no commands and no error for them. Input that cannot apply to
// this saga at all (an unknown step, a malformed outcome) is an error
// wrapping ErrBadInput. Cancelling a saga whose pivot has started fails with
// ErrPastPivot, cancelling one that ended with ErrTerminal; a definition
// other than the saga's fails with ErrDefinitionMismatch; a log Replay
// cannot fold fails with ErrCorruptLog. ParseDefinition fails with a
// *ValidationError (ErrInvalidDefinition) listing every problem.
//
// # Semantics
//
// docs/sagas.md describes the definition format, the input templates, step
// kinds and pivot rules, retries and timeouts, and the order in which
// compensations run, with the saga and step state diagrams.
//
// # Concurrency
//
// A *Definition is immutable and may be shared. A *State is a value: Step
// returns a new one and never mutates its argument, so a State may be read
// concurrently as long as no one writes to it.
package saga
