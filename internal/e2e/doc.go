// Package e2e tests Accord as its users run it: the accord binary as a real
// server process on loopback, participants that own their data (an SQLite
// database with the SDK's idempotency guard), pull workers on the Go SDK and
// push participants over HTTP. It has no code of its own outside its tests,
// but for relayproc, an outbox relay process that they kill.
package e2e
