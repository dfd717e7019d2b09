package e2e

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestHelloExample runs examples/hello, the README's first example, against
// a real server and checks what it prints.
func TestHelloExample(t *testing.T) {
	t.Parallel()
	srv := startServer(t, t.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "run", "../../examples/hello", "-server", srv.url).CombinedOutput()
	if err != nil {
		t.Fatalf("go run ./examples/hello: %v\n%s", err, out)
	}
	for _, want := range []string{
		"bank: debit          alice     100  -> ok",
		"bank: credit         closed    100  -> declined (account closed)",
		"bank: refund         alice     100  -> ok",
		"ended completed",
		"ended compensated",
		"log: compensation.succeeded   debit",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

// TestExamplesOnQuickStartServer runs the README's examples against a
// server started as the quick start starts it — no flags but where its
// data goes and a free loopback port — one after the other, as a reader
// would. Those with HTTP participants or webhooks need no --push-allow: a
// server on a loopback address allows loopback targets by default.
func TestExamplesOnQuickStartServer(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	bin := t.TempDir()
	examples := []struct {
		pkg  string
		want string // in the output of a run that went as it should
	}{
		{"order", "ended completed"},
		{"video", "ended completed"},
		{"onboarding", "ended completed"},
		{"choreography/approval", "accord trace"},
		{"choreography/triage", "accord trace"},
		{"choreography/fanout", "accord trace"},
	}
	build := []string{"build", "-o", bin + string(filepath.Separator)}
	for _, ex := range examples {
		build = append(build, "../../examples/"+ex.pkg)
	}
	if out, err := exec.CommandContext(ctx, "go", build...).CombinedOutput(); err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(build, " "), err, out)
	}
	srv := startServerArgs(t, "--data", filepath.Join(t.TempDir(), "accord-data"), "--addr", "127.0.0.1:0")
	if !strings.Contains(srv.log(), "push targets allowed: loopback only") {
		t.Errorf("the startup log does not say what push targets are allowed:\n%s", srv.log())
	}
	for _, ex := range examples {
		args := []string{"-server", srv.url}
		if ex.pkg == "order" {
			args = append(args, "-data", t.TempDir())
		}
		cmd := exec.CommandContext(ctx, filepath.Join(bin, filepath.Base(ex.pkg)), args...)
		cmd.Dir = t.TempDir() // where an example keeps its services' files
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), ex.want) {
			t.Errorf("examples/%s against the quick-start server: %v; want output with %q:\n%s", ex.pkg, err, ex.want, out)
		}
		if strings.Contains(string(out), "allowlist") || strings.Contains(string(out), "target_not_allowed") {
			t.Errorf("examples/%s: a push target was refused:\n%s", ex.pkg, out)
		}
	}
}
