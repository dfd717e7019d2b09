package e2e

import (
	"context"
	"os/exec"
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
