// Package exampletest runs an Accord server inside an example's test (on an
// embedded store, with push and webhook calls to loopback allowed) and reads
// bus traces, so that every example is tested against a real server.
package exampletest
