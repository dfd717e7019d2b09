// Package release holds the checks that guard what Accord ships rather than
// how it runs: the licences of the modules compiled into it and the
// NOTICE that credits them. It has no code of its own; its tests are the
// checks, and `make licenses` prints what they find.
package release
