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

// EnvBinary names an accord binary built beforehand, which the tests then
// run instead of building their own. make test builds one for the three
// packages that need it: built inside each test binary, it costs each of
// them its build (minutes on a busy machine) out of its -timeout, three
// times over.
const EnvBinary = "ACCORD_TEST_BINARY"

// Main builds cmd/accord into a temporary directory (or takes the binary
// EnvBinary names), stores its path in *bin, runs the package's tests and
// exits with their code, removing what it built first. Call it from
// TestMain.
func Main(m *testing.M, bin *string) {
	path, cleanup, err := binary()
	if err != nil {
		fmt.Fprintln(os.Stderr, "testbin:", err)
		os.Exit(1)
	}
	*bin = path
	code := m.Run()
	cleanup()
	os.Exit(code)
}

// binary returns the accord binary to run and what removes it.
func binary() (string, func(), error) {
	if path := os.Getenv(EnvBinary); path != "" {
		abs, err := filepath.Abs(path)
		if err != nil {
			return "", nil, fmt.Errorf("%s=%s: %w", EnvBinary, path, err)
		}
		if _, err := os.Stat(abs); err != nil {
			return "", nil, fmt.Errorf("%s: %w", EnvBinary, err)
		}
		return abs, func() {}, nil
	}
	dir, err := os.MkdirTemp("", "accord-bin-")
	if err != nil {
		return "", nil, err
	}
	path := filepath.Join(dir, "accord")
	build := exec.Command("go", "build", "-o", path, "github.com/accord-saga/accord/cmd/accord")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		os.RemoveAll(dir)
		return "", nil, fmt.Errorf("build accord: %w", err)
	}
	return path, func() { os.RemoveAll(dir) }, nil
}
