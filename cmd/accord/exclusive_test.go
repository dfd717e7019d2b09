package main

import (
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestServerSecondOnSameDataRefused: a second server on the data directory
// of a running one exits at once with one clear line, and the first keeps
// every partition and goes on serving.
func TestServerSecondOnSameDataRefused(t *testing.T) {
	dir := t.TempDir()
	first, url := startAccordServer(t, dir)
	before := dirNames(t, dir)

	start := time.Now()
	code, stdout, errOut := runAccord(t, nil, "server", "--data", dir, "--addr", "127.0.0.1:0", "--partitions", "4")
	if code == 0 {
		t.Fatalf("second server on the same --data: exit 0; stderr %q", errOut)
	}
	lines := strings.Split(strings.TrimSpace(errOut), "\n")
	want := regexp.MustCompile(`^accord: --data .*: the store is in use by another process \(pid ` + strconv.Itoa(first.Process.Pid) + `\)`)
	if len(lines) != 1 || !want.MatchString(lines[0]) {
		t.Fatalf("stderr = %q; want one line matching %s", errOut, want)
	}
	if stdout != "" {
		t.Errorf("stdout = %q, want nothing", stdout)
	}
	if d := time.Since(start); d > 15*time.Second {
		t.Errorf("took %s to fail", d)
	}
	if after := dirNames(t, dir); after != before {
		t.Errorf("the refused server changed the data directory: %s, was %s", after, before)
	}
	// The first still holds every partition and serves.
	resp, err := http.Get(url + "/metrics")
	must(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "accord_partitions_owned 4") {
		t.Fatalf("the first server lost partitions:\n%.2000s", body)
	}
	stopAccordServer(t, first)
	// Once the first has stopped, the store is free again.
	again, _ := startAccordServer(t, dir)
	stopAccordServer(t, again)
}

// startAccordServer runs a server on dir and returns it once it listens,
// with its URL.
func startAccordServer(t *testing.T, dir string) (*exec.Cmd, string) {
	t.Helper()
	cmd := exec.Command(accordBin, "server", "--data", dir, "--addr", "127.0.0.1:0", "--partitions", "4")
	stderr, err := cmd.StderrPipe()
	must(t, err)
	must(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	return cmd, waitForURL(t, stderr)
}

// stopAccordServer stops a server with SIGTERM and checks it exits 0.
func stopAccordServer(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	must(t, cmd.Process.Signal(syscall.SIGTERM))
	if err := cmd.Wait(); err != nil {
		t.Fatalf("server exit after SIGTERM: %v", err)
	}
}

// TestServerBusyPortTouchesNoStore: a server that cannot listen fails with
// one line naming --addr before it opens, or even creates, its store.
func TestServerBusyPortTouchesNoStore(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	defer busy.Close()
	data := filepath.Join(t.TempDir(), "never")
	code, _, stderr := runAccord(t, nil, "server", "--data", data, "--addr", busy.Addr().String())
	lines := strings.Split(strings.TrimSpace(stderr), "\n")
	if code == 0 || len(lines) != 1 || !strings.HasPrefix(lines[0], "accord: --addr "+busy.Addr().String()) {
		t.Fatalf("exit %d, stderr %q; want one line starting \"accord: --addr %s\"", code, stderr, busy.Addr())
	}
	if _, err := os.Stat(data); !os.IsNotExist(err) {
		t.Fatalf("a server that could not listen created its data directory: %v", err)
	}
}

// dirNames lists a directory's entries.
func dirNames(t *testing.T, dir string) string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	must(t, err)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return strings.Join(names, ",")
}
