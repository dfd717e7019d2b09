package e2e

import (
	"bufio"
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// relayStopped is what relayproc prints when it reaches its stage.
const relayStopped = "relay: stopped "

// relaySpec says what a relay process relays, and where it stops.
type relaySpec struct {
	Dialect string // "sqlite" or "postgres"
	DSN     string
	Server  string
	Stage   string // "before" or "after" the publish
}

// buildRelayProc builds internal/e2e/relayproc into a directory of the
// test's and returns its path.
func buildRelayProc(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "relayproc")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/accord-saga/accord/internal/e2e/relayproc").CombinedOutput()
	if err != nil {
		t.Fatalf("build relayproc: %v\n%s", err, out)
	}
	return bin
}

// killRelayProcess runs relayproc and sends it SIGKILL once it reaches its
// stage.
func killRelayProcess(t *testing.T, ctx context.Context, bin string, spec relaySpec) {
	t.Helper()
	cmd := exec.Command(bin, "-dialect", spec.Dialect, "-dsn", spec.DSN, "-server", spec.Server, "-stage", spec.Stage)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	reached := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if sc.Text() == relayStopped+spec.Stage {
				reached <- true
				return
			}
		}
		reached <- false
	}()
	kill := func() {
		_ = cmd.Process.Kill() // SIGKILL
		_ = cmd.Wait()
	}
	timeout := time.NewTimer(60 * time.Second)
	defer timeout.Stop()
	select {
	case ok := <-reached:
		kill()
		if !ok {
			t.Fatalf("the relay process ended before its stage %q: %s", spec.Stage, stderr.String())
		}
	case <-timeout.C:
		kill()
		t.Fatalf("the relay process did not reach its stage %q in 60s: %s", spec.Stage, stderr.String())
	case <-ctx.Done():
		kill()
		t.Fatal(ctx.Err())
	}
}
