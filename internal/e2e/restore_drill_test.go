package e2e

import (
	"context"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/accord-saga/accord/sdk/client"
	"github.com/accord-saga/accord/sdk/worker"
)

const drillDefinition = `name: drill
version: 1
steps:
  - name: work
    kind: pivot
    action: {queue: drill, name: work}
`

// acked is a saga start the server acknowledged, and when.
type acked struct {
	id string
	at time.Time
}

// TestRestoreDrill backs the embedded store up under load, kills the
// server with SIGKILL, restores the backup into a new directory, starts a
// server on it, and checks that every saga acknowledged before the backup
// began is there and runs to its end. It logs the recovery time (kill to
// ready) and what was lost (the sagas acknowledged after the backup began:
// the data-loss window is the time since the last backup), the figures of
// docs/operations.md.
func TestRestoreDrill(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	srv := startServer(t, filepath.Join(dir, "live"))
	c := srv.client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if _, _, err := c.RegisterDefinition(ctx, []byte(drillDefinition), "application/yaml"); err != nil {
		t.Fatal(err)
	}
	work := func(c *client.Client) *worker.Worker {
		w := worker.New(c, worker.Options{Concurrency: 4, PollWait: time.Second})
		w.Handle("drill", "work", func(context.Context, *worker.Task) (any, error) { return nil, nil })
		return w
	}
	wctx, stopWorker := context.WithCancel(ctx)
	wdone := make(chan struct{})
	go func() { defer close(wdone); _ = work(c).Run(wctx) }()

	// Load: two clients start sagas back to back until the server dies.
	var (
		mu    sync.Mutex
		acks  []acked
		grown = make(chan struct{}, 1)
	)
	lctx, stopLoad := context.WithCancel(ctx)
	var load sync.WaitGroup
	for range 2 {
		load.Add(1)
		go func() {
			defer load.Done()
			for lctx.Err() == nil {
				s, err := c.StartSaga(lctx, client.StartRequest{Definition: "drill"})
				if err != nil {
					continue // the server is being killed, or the load stopped
				}
				mu.Lock()
				acks = append(acks, acked{s.ID, time.Now()})
				mu.Unlock()
				select {
				case grown <- struct{}{}:
				default:
				}
			}
		}()
	}
	countAcks := func() int { mu.Lock(); defer mu.Unlock(); return len(acks) }
	waitAcks := func(n int) {
		for countAcks() < n {
			select {
			case <-grown:
			case <-ctx.Done():
				t.Fatalf("only %d sagas acknowledged, waiting for %d", countAcks(), n)
			}
		}
	}

	waitAcks(100)
	backup := filepath.Join(dir, "accord-backup.db")
	backupStart := time.Now()
	out, err := exec.CommandContext(ctx, accordBin, "backup", "--data", filepath.Join(dir, "live"), "--out", backup).CombinedOutput()
	if err != nil {
		t.Fatalf("backup under load: %v\n%s", err, out)
	}
	backupTook := time.Since(backupStart)
	afterBackup := countAcks()
	waitAcks(afterBackup + 50) // acknowledged after the backup: these are lost

	_ = srv.cmd.Process.Kill()
	killed := time.Now()
	_ = srv.cmd.Wait()
	stopLoad()
	load.Wait()
	stopWorker()
	<-wdone

	restored := filepath.Join(dir, "restored")
	if out, err := exec.CommandContext(ctx, accordBin, "restore", "--from", backup, "--data", restored).CombinedOutput(); err != nil {
		t.Fatalf("restore: %v\n%s", err, out)
	}
	restoreTook := time.Since(killed)
	srv2 := startServer(t, restored)
	waitReady(ctx, t, srv2.url)
	rto := time.Since(killed)

	c2 := srv2.client(t)
	runWorker(t, work(c2))
	var before, lostAfter, keptAfter int
	for _, a := range acks {
		if a.at.Before(backupStart) {
			before++
			s, err := c2.WaitSaga(ctx, a.id)
			if err != nil || s.Status != client.StatusCompleted {
				t.Errorf("saga %s acknowledged before the backup: %+v, %v", a.id, s, err)
			}
			continue
		}
		if _, err := c2.GetSaga(ctx, a.id); err != nil {
			lostAfter++
		} else {
			keptAfter++
		}
	}
	if before < 100 {
		t.Fatalf("only %d sagas before the backup", before)
	}
	t.Logf("restore drill: %d sagas acknowledged before the backup, all restored and completed; "+
		"backup under load took %s; killed %s after the backup began; "+
		"%d acknowledged since then lost, %d kept (taken during the backup's read); "+
		"restored %s after the kill, ready (RTO) %s after it",
		before, backupTook.Round(time.Millisecond), killed.Sub(backupStart).Round(time.Millisecond),
		lostAfter, keptAfter, restoreTook.Round(time.Millisecond), rto.Round(time.Millisecond))

	// A restore never replaces a store: not the restored one (now live),
	// not one that is merely not empty.
	for _, target := range []string{restored, filepath.Join(dir, "live")} {
		cmd := exec.CommandContext(ctx, accordBin, "restore", "--from", backup, "--data", target)
		out, err := cmd.CombinedOutput()
		if cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != 2 || !strings.Contains(string(out), "not empty") {
			t.Errorf("restore over %s: %v\n%s", target, err, out)
		}
	}
	// And a backup never overwrites a file.
	cmd := exec.CommandContext(ctx, accordBin, "backup", "--data", restored, "--out", backup)
	if out, _ := cmd.CombinedOutput(); cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != 2 {
		t.Errorf("backup over an existing file: %s", out)
	}
}

// waitReady waits until the server's /readyz answers 200.
func waitReady(ctx context.Context, t *testing.T, url string) {
	t.Helper()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url+"/readyz", nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s never became ready", url)
		case <-time.After(20 * time.Millisecond):
		}
	}
}
