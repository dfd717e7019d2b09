// Package mixed is a fixture of testsum's tests: tests that pass, fail and
// skip. It is under testdata, so ./... leaves it out.
package mixed

import "testing"

func TestPass(t *testing.T) {}

func TestSkip(t *testing.T) { t.Skip("skipped on purpose") }

func TestFail(t *testing.T) {
	t.Log("the detail of the failure")
	t.Fail()
}

func TestSub(t *testing.T) {
	t.Run("a", func(t *testing.T) {})
	t.Run("b", func(t *testing.T) { t.Error("subtest b broke") })
}
