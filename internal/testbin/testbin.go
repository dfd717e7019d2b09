// Package testbin builds the accord binary once for the tests of a package
// that run it as a real process (the CLI tests, the end-to-end tests and the
// fault-injection scenarios). It is for tests only.
package testbin

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Main builds cmd/accord into a temporary directory, stores its path in
// *bin, runs the package's tests and exits with their code, removing the
// binary first. Call it from TestMain.
func Main(m *testing.M, bin *string) {
	dir, err := os.MkdirTemp("", "accord-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "testbin:", err)
		os.Exit(1)
	}
	*bin = filepath.Join(dir, "accord")
	build := exec.Command("go", "build", "-o", *bin, "github.com/accord-saga/accord/cmd/accord")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "testbin: build accord:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}
