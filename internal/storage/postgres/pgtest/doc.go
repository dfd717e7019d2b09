// Package pgtest gives tests a PostgreSQL store of their own.
//
// The database is the one ACCORD_TEST_DATABASE_URL names, by default
// postgres://postgres@127.0.0.1:5432/test?sslmode=disable. Each store lives
// in a fresh schema (accord_test_<random>) that is dropped when the test
// ends, so tests may run in parallel against one database.
//
// When the database cannot be reached a test is skipped with a message
// saying how to run it — unless CI=true, where it fails: in CI a missing
// database is a broken setup, not a reason to pass.
package pgtest
