// Package flow holds what the choreography examples share: setting up
// topics and groups, opening a service's SQLite database, and waiting for a
// flow to finish.
package flow
