// Package crashtest proves that the SQLite store keeps every acknowledged
// commit through kill -9.
//
// Its test re-executes the test binary as a child process (TestMain
// switches to child mode when ACCORD_CRASHTEST_CHILD names a store). The
// child leases every partition — on a restart the same owner takes its
// leases back at once with a bumped epoch — and commits from several
// goroutines in a loop: single- and multi-event appends across streams and
// partitions, each commit with a task in its outbox. It prints one line per
// event only after Commit has returned. The parent kills the child with
// SIGKILL at random moments, restarts it, and after every kill opens the
// store itself and checks that every acknowledged event is present, intact
// and in order, that positions are gap-free and stream versions contiguous,
// that the acknowledged tasks exist, and that SQLite's integrity check
// passes. It prints one summary line:
//
//	crashtest: seed=S kills=K acknowledged=A verified=V lost=L
//
// ACCORD_CRASHTEST_SEED replays the kill schedule and payloads of a run
// (timing on a real machine still varies); ACCORD_CRASHTEST_KILLS sets the
// number of kills (default 50).
package crashtest
