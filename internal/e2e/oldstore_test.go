package e2e

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/accord-saga/accord/sdk/client"
	"github.com/accord-saga/accord/sdk/worker"
)

// updateStores writes a store made by this build into testdata/stores, to
// be kept when a release is cut: go test ./internal/e2e -run
// TestOpenStoresOfEarlierReleases -update-stores.
var updateStores = flag.Bool("update-stores", false, "write a store made by this build to testdata/stores")

const (
	legacyDefinition = `name: legacy
version: 1
steps:
  - name: reserve
    action: {queue: legacy, name: do_reserve}
    compensation: {queue: legacy, name: undo_reserve}
  - name: charge
    kind: pivot
    action: {queue: legacy, name: do_charge}
`
	legacyTopic = "legacy"
)

// storedStore names the sagas a kept store holds: one completed, one
// waiting for its first step, and a bus message.
type storedStore struct {
	Release   string `json:"release"`
	Schema    int    `json:"schema_version"`
	Completed string `json:"completed_saga"`
	Waiting   string `json:"waiting_saga"`
	MessageID string `json:"message_id"`
}

func legacyWorker(c *client.Client) *worker.Worker {
	w := worker.New(c, worker.Options{Concurrency: 2, PollWait: time.Second})
	for _, op := range []string{"do_reserve", "undo_reserve", "do_charge"} {
		w.Handle("legacy", op, func(context.Context, *worker.Task) (any, error) { return map[string]bool{"ok": true}, nil })
	}
	return w
}

// runWorker runs w until the test ends.
func runWorker(t *testing.T, w *worker.Worker) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = w.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

// TestOpenStoresOfEarlierReleases opens every store kept in
// testdata/stores — each made by a release of Accord — with this build:
// the store is upgraded in place, keeps its finished saga and its bus
// message, and a saga left waiting runs on to its end.
func TestOpenStoresOfEarlierReleases(t *testing.T) {
	if *updateStores {
		writeStore(t)
	}
	kept, err := filepath.Glob(filepath.Join("testdata", "stores", "*.db"))
	if err != nil || len(kept) == 0 {
		t.Fatalf("no stores in testdata/stores (%v)", err)
	}
	for _, db := range kept {
		t.Run(filepath.Base(db), func(t *testing.T) {
			t.Parallel()
			var want storedStore
			manifest, err := os.ReadFile(strings.TrimSuffix(db, ".db") + ".json")
			if err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(manifest, &want); err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			content, err := os.ReadFile(db)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "accord.db"), content, 0o600); err != nil {
				t.Fatal(err)
			}
			srv := startServer(t, dir)
			c := srv.client(t)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()

			done, err := c.GetSaga(ctx, want.Completed)
			if err != nil || done.Status != client.StatusCompleted {
				t.Fatalf("completed saga of %s: %+v, %v", want.Release, done, err)
			}
			runWorker(t, legacyWorker(c))
			waited, err := c.WaitSaga(ctx, want.Waiting)
			if err != nil || waited.Status != client.StatusCompleted {
				t.Fatalf("waiting saga of %s: %+v, %v", want.Release, waited, err)
			}
			if !hasMessage(ctx, t, c, want.MessageID) {
				t.Errorf("bus message %s of %s is gone", want.MessageID, want.Release)
			}
		})
	}
}

func hasMessage(ctx context.Context, t *testing.T, c *client.Client, id string) bool {
	for p := range 4 {
		msgs, err := c.ReadMessages(ctx, legacyTopic, p, 0, 100)
		if err != nil {
			t.Fatalf("read partition %d: %v", p, err)
		}
		for _, m := range msgs {
			if m.ID == id {
				return true
			}
		}
	}
	return false
}

// writeStore makes a store with this build and keeps it, with its
// manifest, in testdata/stores, named by its schema version.
func writeStore(t *testing.T) {
	dir := t.TempDir()
	srv := startServer(t, dir)
	c := srv.client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var sys struct {
		Build struct{ Version, Commit string }
		Store struct {
			SchemaVersion int `json:"schema_version"`
		}
	}
	getJSON(t, srv.url+"/v1/system", &sys)
	if _, _, err := c.RegisterDefinition(ctx, []byte(legacyDefinition), "application/yaml"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.PutTopic(ctx, legacyTopic, client.TopicConfig{KeepForever: true}); err != nil {
		t.Fatal(err)
	}
	pub, err := c.Publish(ctx, legacyTopic, client.Message{Key: "k", ID: "kept-message", Payload: map[string]int{"n": 1}})
	if err != nil {
		t.Fatal(err)
	}
	m := storedStore{Release: sys.Build.Version + " " + sys.Build.Commit, Schema: sys.Store.SchemaVersion, MessageID: pub[0].ID}

	wctx, stopWorker := context.WithCancel(ctx)
	wdone := make(chan struct{})
	go func() { defer close(wdone); _ = legacyWorker(c).Run(wctx) }()
	started, err := c.StartSaga(ctx, client.StartRequest{Definition: "legacy"})
	if err != nil {
		t.Fatal(err)
	}
	if s, err := c.WaitSaga(ctx, started.ID); err != nil || s.Status != client.StatusCompleted {
		t.Fatalf("saga %+v, %v", s, err)
	}
	m.Completed = started.ID
	stopWorker()
	<-wdone
	waiting, err := c.StartSaga(ctx, client.StartRequest{Definition: "legacy"})
	if err != nil {
		t.Fatal(err)
	}
	m.Waiting = waiting.ID
	srv.stop(t)
	if st, err := os.Stat(filepath.Join(dir, "accord.db-wal")); err == nil && st.Size() > 0 {
		t.Fatalf("the stopped server left %d bytes in its WAL: the kept file would miss them", st.Size())
	}

	base := filepath.Join("testdata", "stores", fmt.Sprintf("sqlite-schema%d", m.Schema))
	content, err := os.ReadFile(filepath.Join(dir, "accord.db"))
	if err != nil {
		t.Fatal(err)
	}
	manifest, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(base), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(base+".db", content, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(base+".json", append(manifest, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
}
