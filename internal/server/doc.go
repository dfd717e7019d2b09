// Package server wires a store, the engine and the HTTP API into one
// running Accord server, and owns their lifecycle: start in order, stop in
// reverse order on context cancellation, within Config.ShutdownTimeout.
package server
