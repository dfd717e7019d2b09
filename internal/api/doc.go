// Package api is Accord's HTTP interface: handlers decode a request, call
// the engine or the store, and encode the answer. No business logic lives
// here. Errors are RFC 9457 problem details with a stable type; client
// input never produces a 5xx or a panic.
package api
