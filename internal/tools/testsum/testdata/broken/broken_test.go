// Package broken is a fixture of testsum's tests: it does not compile.
package broken

import "testing"

func TestBroken(t *testing.T) { undefinedName() }
