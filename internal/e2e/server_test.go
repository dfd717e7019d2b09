package e2e

import (
	"bufio"
	"io"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/accord-saga/accord/internal/testbin"
	"github.com/accord-saga/accord/sdk/client"
)

// accordBin is the binary under test, built once by TestMain.
var accordBin string

func TestMain(m *testing.M) { testbin.Main(m, &accordBin) }

// server is a running accord server process.
type server struct {
	url    string
	cmd    *exec.Cmd
	mu     sync.Mutex
	stderr strings.Builder
}

var listening = regexp.MustCompile(`url=(http://\S+)`)

// startServer runs accord server on an embedded store in a temporary
// directory, with extra flags, and stops it with SIGTERM at cleanup.
func startServer(t *testing.T, dataDir string, flags ...string) *server {
	t.Helper()
	return startServerArgs(t, append([]string{"--data", dataDir, "--addr", "127.0.0.1:0", "--partitions", "4",
		"--push-allow", "http://127.0.0.1:*"}, flags...)...)
}

// startServerArgs runs accord server with exactly these flags and stops it
// with SIGTERM at cleanup.
func startServerArgs(t *testing.T, flags ...string) *server {
	t.Helper()
	s := &server{cmd: exec.Command(accordBin, append([]string{"server"}, flags...)...)}
	pipe, err := s.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pipe)
		for sc.Scan() {
			line := sc.Text()
			s.mu.Lock()
			s.stderr.WriteString(line + "\n")
			s.mu.Unlock()
			if m := listening.FindStringSubmatch(line); m != nil {
				select {
				case found <- m[1]:
				default:
				}
			}
		}
		_, _ = io.Copy(io.Discard, pipe)
	}()
	select {
	case s.url = <-found:
	case <-time.After(30 * time.Second):
		_ = s.cmd.Process.Kill()
		t.Fatalf("server did not start:\n%s", s.log())
	}
	t.Cleanup(func() { s.stop(t) })
	return s
}

func (s *server) log() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stderr.String()
}

// stop ends the server gracefully (safe twice).
func (s *server) stop(t *testing.T) {
	if s.cmd.ProcessState != nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- s.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("server exit: %v\n%s", err, s.log())
		}
	case <-time.After(30 * time.Second):
		_ = s.cmd.Process.Kill()
		<-done
		t.Errorf("server did not stop after SIGTERM")
	}
}

func (s *server) client(t *testing.T) *client.Client {
	t.Helper()
	c, err := client.New(s.url)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
