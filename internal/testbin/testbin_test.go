package testbin

import (
	"os"
	"path/filepath"
	"testing"
)

// A binary named in the environment is used as it is: nothing is built,
// and nothing is removed at the end.
func TestBinaryFromEnvironment(t *testing.T) {
	path := filepath.Join(t.TempDir(), "accord")
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv(EnvBinary, path)
	got, cleanup, err := binary()
	if err != nil || got != path {
		t.Fatalf("binary() = %q, %v; want %q", got, err, path)
	}
	cleanup()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("the binary from the environment was removed: %v", err)
	}
}

func TestBinaryFromEnvironmentMissing(t *testing.T) {
	t.Setenv(EnvBinary, filepath.Join(t.TempDir(), "nothing"))
	if _, _, err := binary(); err == nil {
		t.Fatal("a missing binary was accepted")
	}
}
