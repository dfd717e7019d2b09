// Command relayproc is an outbox relay that stops where it is told, for
// the end-to-end tests that kill it there with SIGKILL: it publishes the
// outbox's unsent rows and, when it reaches its stage — "before" (rows
// read, not published) or "after" (published, not marked sent) — prints
// "relay: stopped <stage>" and waits to be killed.
//
//	relayproc -dialect sqlite|postgres -dsn DSN -server URL -stage before|after
package main
