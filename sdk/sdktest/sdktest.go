package sdktest

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/accord-saga/accord/internal/api"
	"github.com/accord-saga/accord/internal/bus"
	"github.com/accord-saga/accord/internal/engine"
	"github.com/accord-saga/accord/internal/storage/sqlite"
	"github.com/accord-saga/accord/sdk/client"
	"github.com/accord-saga/accord/sdk/worker"
)

// NewTask returns a task carrying input (marshalled to JSON; a
// json.RawMessage is used as is), as a worker would hand it to a handler:
// queue "test", saga "test-saga", step "step", action phase, attempt 1.
// Change its fields to test other cases (Phase "compensation", Attempt 3).
func NewTask(t testing.TB, input any) *worker.Task {
	t.Helper()
	var raw json.RawMessage
	if input != nil {
		b, err := json.Marshal(input)
		if err != nil {
			t.Fatalf("sdktest: marshal task input: %v", err)
		}
		raw = b
	}
	return &worker.Task{
		ID: "test-saga/step/action/1", Queue: "test", SagaID: "test-saga", Definition: "test", DefinitionVersion: 1,
		Step: "step", Phase: "action", Operation: "step", Attempt: 1, Deliveries: 1,
		IdempotencyKey: "test-saga/step/action", Input: raw,
	}
}

// Call runs h on task as a worker does and returns what the worker would
// report: the outcome (success, failure, retryable), the output as JSON,
// the error code and message, and a recovered panic.
func Call(ctx context.Context, h worker.Handler, task *worker.Task) worker.Result {
	return worker.Call(ctx, h, task)
}

// Server is an Accord server running in the test process on a temporary
// embedded store, for tests of workers and clients end to end.
type Server struct {
	// URL is the server's base URL.
	URL string
	// Client is a client of the server.
	Client *client.Client
}

// serverPartitions keeps the test store small: every partition has a loop.
const serverPartitions = 4

// NewServer starts a server; it stops when the test ends.
func NewServer(t testing.TB) *Server {
	t.Helper()
	ctx := context.Background()
	store, err := sqlite.Open(ctx, sqlite.Config{Path: filepath.Join(t.TempDir(), "accord.db"), Partitions: serverPartitions})
	if err != nil {
		t.Fatalf("sdktest: open store: %v", err)
	}
	t.Cleanup(func() { _ = store.Close() })
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	// The engine wakes the bus's waiting receivers after a publish.
	var b *bus.Bus
	eng, err := engine.New(engine.Config{Store: store, Logger: quiet, TaskPollInterval: 20 * time.Millisecond,
		OnPublish: func(topic string) { b.Notify(topic) }})
	if err != nil {
		t.Fatalf("sdktest: engine: %v", err)
	}
	b, err = bus.New(bus.Config{Store: store, Publisher: eng, Sagas: eng, Logger: quiet, PollInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatalf("sdktest: bus: %v", err)
	}
	if err := eng.Start(ctx); err != nil {
		t.Fatalf("sdktest: start engine: %v", err)
	}
	if err := b.Start(ctx); err != nil {
		t.Fatalf("sdktest: start bus: %v", err)
	}
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := b.Stop(sctx); err != nil {
			t.Errorf("sdktest: stop bus: %v", err)
		}
		if err := eng.Stop(sctx); err != nil {
			t.Errorf("sdktest: stop engine: %v", err)
		}
	})
	srv := httptest.NewServer(api.New(api.Config{Engine: eng, Bus: b, Store: store, Logger: quiet}))
	t.Cleanup(srv.Close)
	c, err := client.New(srv.URL, client.WithHTTPClient(srv.Client()))
	if err != nil {
		t.Fatalf("sdktest: client: %v", err)
	}
	return &Server{URL: srv.URL, Client: c}
}

// Register registers a definition (JSON or YAML) and fails the test if the
// server refuses it.
func (s *Server) Register(t testing.TB, doc string) {
	t.Helper()
	if _, _, err := s.Client.RegisterDefinition(context.Background(), []byte(doc), ""); err != nil {
		t.Fatalf("sdktest: register definition: %v", err)
	}
}
