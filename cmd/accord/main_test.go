package main

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	_ "modernc.org/sqlite"

	"github.com/accord-saga/accord/internal/storage/sqlite"
	"github.com/accord-saga/accord/internal/testbin"
)

// accordBin is the binary under test, built once by TestMain.
var accordBin string

func TestMain(m *testing.M) { testbin.Main(m, &accordBin) }

// runAccord runs the binary to its end and returns its exit code, stdout
// and stderr.
func runAccord(t *testing.T, env []string, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, accordBin, args...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run accord: %v", err)
	}
	return code, stdout.String(), stderr.String()
}

// TestServerBadInput: each bad store location is one clear error line and
// a non-zero exit, and nothing is created or overwritten.
func TestServerBadInput(t *testing.T) {
	dir := t.TempDir()

	notDir := filepath.Join(dir, "a-file")
	must(t, os.WriteFile(notDir, []byte("hello"), 0o600))

	garbageDir := filepath.Join(dir, "garbage")
	must(t, os.MkdirAll(garbageDir, 0o750))
	garbage := bytes.Repeat([]byte("not a database "), 100)
	must(t, os.WriteFile(filepath.Join(garbageDir, "accord.db"), garbage, 0o600))

	foreignDir := filepath.Join(dir, "foreign")
	must(t, os.MkdirAll(foreignDir, 0o750))
	foreign := filepath.Join(foreignDir, "accord.db")
	execSQL(t, foreign, `CREATE TABLE customers(id INTEGER PRIMARY KEY, name TEXT)`)

	newerDir := filepath.Join(dir, "newer")
	newer := filepath.Join(newerDir, "accord.db")
	// Create a real store, then make it look written by a newer binary.
	must(t, os.MkdirAll(newerDir, 0o750))
	store, err := sqlite.Open(context.Background(), sqlite.Config{Path: newer, Partitions: 4})
	must(t, err)
	must(t, store.Close())
	execSQL(t, newer, `UPDATE accord_meta SET value = value + 1 WHERE key = 'schema_version'`)

	cases := []struct {
		name  string
		args  []string
		want  string
		file  string // must be unchanged
		bytes []byte
	}{
		{"data is a file", []string{"--data", notDir}, "not a directory", notDir, []byte("hello")},
		{"not a database", []string{"--data", garbageDir}, "not an accord store", filepath.Join(garbageDir, "accord.db"), garbage},
		{"foreign database", []string{"--data", foreignDir}, "not an accord store", foreign, nil},
		{"newer schema", []string{"--data", newerDir}, "newer than this binary", newer, nil},
		{"unreachable database", []string{"--database-url", "postgres://postgres@127.0.0.1:1/test?sslmode=disable"}, "127.0.0.1:1", "", nil},
		{"bad partitions", []string{"--data", filepath.Join(dir, "never"), "--partitions", "0"}, "--partitions", "", nil},
		{"bad durability", []string{"--data", filepath.Join(dir, "never"), "--durability", "sometimes"}, "--durability", "", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var before []byte
			if c.file != "" {
				before = readFile(t, c.file)
			}
			start := time.Now()
			code, stdout, stderr := runAccord(t, nil, append([]string{"server", "--addr", "127.0.0.1:0"}, c.args...)...)
			if code == 0 {
				t.Fatalf("exit 0, want an error; stderr %q", stderr)
			}
			lines := strings.Split(strings.TrimSpace(stderr), "\n")
			if len(lines) != 1 || !strings.HasPrefix(lines[0], "accord: ") || !strings.Contains(lines[0], c.want) {
				t.Fatalf("stderr = %q; want one line starting \"accord: \" that mentions %q", stderr, c.want)
			}
			if stdout != "" {
				t.Errorf("stdout = %q, want nothing", stdout)
			}
			if time.Since(start) > 15*time.Second {
				t.Errorf("took %s to fail", time.Since(start))
			}
			if c.file != "" && !bytes.Equal(before, readFile(t, c.file)) {
				t.Errorf("%s was changed", c.file)
			}
			if c.bytes != nil && !bytes.Equal(c.bytes, readFile(t, c.file)) {
				t.Errorf("%s lost its content", c.file)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(dir, "never")); !os.IsNotExist(err) {
		t.Errorf("a rejected configuration created its data directory: %v", err)
	}
	for _, d := range []string{garbageDir, foreignDir} {
		entries, _ := os.ReadDir(d)
		if len(entries) != 1 {
			t.Errorf("%s holds %d entries after a refused open, want only accord.db", d, len(entries))
		}
	}
}

// TestServerRunsAndStops starts the server on embedded storage, checks it is
// ready, and stops it with SIGTERM.
func TestServerRunsAndStops(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(accordBin, "server", "--data", dir, "--addr", "127.0.0.1:0", "--partitions", "4")
	stderr, err := cmd.StderrPipe()
	must(t, err)
	must(t, cmd.Start())
	defer cmd.Process.Kill()
	url := waitForURL(t, stderr)
	resp, err := http.Get(url + "/readyz")
	must(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"partitions":"ok"`) {
		t.Fatalf("readyz: %d %s", resp.StatusCode, body)
	}
	resp, err = http.Get(url + "/metrics")
	must(t, err)
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "accord_partitions_owned 4") {
		t.Fatalf("metrics lack accord_partitions_owned 4:\n%.2000s", body)
	}
	must(t, cmd.Process.Signal(syscall.SIGTERM))
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("server exit after SIGTERM: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("server did not stop after SIGTERM")
	}
}

var urlLine = regexp.MustCompile(`url=(http://\S+)`)

func waitForURL(t *testing.T, r io.Reader) string {
	t.Helper()
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			if m := urlLine.FindStringSubmatch(sc.Text()); m != nil {
				found <- m[1]
				break
			}
		}
		_, _ = io.Copy(io.Discard, r)
	}()
	select {
	case u := <-found:
		return u
	case <-time.After(20 * time.Second):
		t.Fatal("server never said where it listens")
		return ""
	}
}

func execSQL(t *testing.T, path, stmt string) {
	t.Helper()
	must(t, os.MkdirAll(filepath.Dir(path), 0o750))
	db, err := sql.Open("sqlite", "file:"+path)
	must(t, err)
	defer db.Close()
	if _, err := db.Exec(stmt); err != nil {
		t.Fatalf("%s: %v", stmt, err)
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	must(t, err)
	return b
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
