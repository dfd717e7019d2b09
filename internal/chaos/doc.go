// Package chaos is Accord's fault-injection harness: real server
// processes, real faults, and an invariant check at the end of each
// scenario.
//
// Its parts:
//
//   - Participant, an HTTP push participant on loopback with configurable
//     error rate, latency and down windows, that keeps a durable ledger (its
//     own SQLite file) of every call it receives and applies its effects
//     through the SDK's idempotency guard;
//   - Proxy, a TCP proxy for loopback links that can add latency,
//     blackhole, reset or cut connections;
//   - Check, the invariant checker over the participant's ledger and the
//     saga log read through the API.
//
// The scenarios are tests of this package: T1 (crash loop), T6 (failing
// participant), T6-link (faults on the participant's link), T3 (commits
// cut on the link to PostgreSQL), T7 (timers across restarts, and a
// deleted task row repaired by the reconciler) and T8 (PostgreSQL stopped
// under load; SQLite on a full disk). Each runs a short version in every
// `go test` and a full version when ACCORD_CHAOS_FULL=1 is set; each prints
// one figure line with the seed that replays it (ACCORD_CHAOS_SEED).
// docs/reliability.md lists them with their figures.
package chaos
