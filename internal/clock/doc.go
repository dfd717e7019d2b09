// Package clock is the engine's source of time: the current time, timers
// and tickers. Real is the host's clock; Manual is a clock a test drives,
// so that what the engine does at a given time is an input of the test, as
// raft's Tick and TigerBeetle's simulated clock make it.
//
// A Manual clock stands still until Advance or Set moves it. Moving it
// fires every timer and ticker that falls due, in deadline order, before
// the call returns; a timer fires by a non-blocking send on its channel
// (capacity one), as time.Timer does, so a slow reader misses ticks rather
// than blocking the clock. Timers armed for a time already passed fire at
// once. Skip moves the clock without firing anything, as time passes for a
// process that does not run; what fell due fires at the next move. All methods of both clocks are safe for concurrent use.
package clock
