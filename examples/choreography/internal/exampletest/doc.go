// Package exampletest runs an Accord server inside a test of a
// choreography example, and reads a flow's trace as the HTTP API shows
// it. It is for the examples' tests only.
package exampletest
