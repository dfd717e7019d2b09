package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/accord-saga/accord/internal/api"
	"github.com/accord-saga/accord/internal/bus"
	"github.com/accord-saga/accord/internal/engine"
	"github.com/accord-saga/accord/internal/storage"
	"github.com/accord-saga/accord/internal/storage/sqlite"
)

// testBundle is what a test gets from setup.
type testBundle struct {
	eng     *engine.Engine
	bus     *bus.Bus
	store   storage.Driver
	handler http.Handler
	srv     *httptest.Server
}

type setupOpts struct {
	apiConfig func(*api.Config)
	// wrapStore, if set, wraps the store the engine and the API use.
	wrapStore func(storage.Driver) storage.Driver
	// stallAfter is the bus's StallAfter (default its own).
	stallAfter time.Duration
}

// opts0 returns the first options, or none.
func opts0(opts []setupOpts) setupOpts {
	if len(opts) == 0 {
		return setupOpts{}
	}
	return opts[0]
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// setup starts a real engine on a fresh SQLite store and serves the API
// over loopback; everything stops when the test ends.
func setup(t testing.TB, opts ...setupOpts) *testBundle {
	t.Helper()
	ctx := context.Background()
	db, err := sqlite.Open(ctx, sqlite.Config{Path: filepath.Join(t.TempDir(), "a.db"), Partitions: 4})
	if err != nil {
		t.Fatalf("open sqlite: %v", err)
	}
	t.Cleanup(func() { _ = db.Close() })
	var store storage.Driver = db
	for _, o := range opts {
		if o.wrapStore != nil {
			store = o.wrapStore(store)
		}
	}
	// The engine wakes the bus's waiting receivers after a publish.
	var b *bus.Bus
	eng, err := engine.New(engine.Config{
		Store: store, Logger: quietLogger(), LeaseTTL: time.Minute, // no test here is about lease expiry; a busy machine must not lose leases
		TaskPollInterval: 20 * time.Millisecond, OnPublish: func(topic string) {
			if b != nil {
				b.Notify(topic)
			}
		},
	})
	if err != nil {
		t.Fatalf("new engine: %v", err)
	}
	// A wrapped store that hides the bus's methods serves no bus.
	if busStore, ok := store.(bus.Store); ok {
		b, err = bus.New(bus.Config{Store: busStore, Publisher: eng, Sagas: eng, Logger: quietLogger(),
			PollInterval: 20 * time.Millisecond, StallAfter: opts0(opts).stallAfter})
		if err != nil {
			t.Fatalf("new bus: %v", err)
		}
	}
	if err := eng.Start(ctx); err != nil {
		t.Fatalf("start engine: %v", err)
	}
	if b != nil {
		if err := b.Start(ctx); err != nil {
			t.Fatalf("start bus: %v", err)
		}
	}
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if b != nil {
			if err := b.Stop(sctx); err != nil {
				t.Errorf("stop bus: %v", err)
			}
		}
		if err := eng.Stop(sctx); err != nil {
			t.Errorf("stop engine: %v", err)
		}
	})
	cfg := api.Config{Engine: eng, Bus: b, Store: store, Logger: quietLogger()}
	for _, o := range opts {
		if o.apiConfig != nil {
			o.apiConfig(&cfg)
		}
	}
	h := api.New(cfg)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &testBundle{eng: eng, bus: b, store: store, handler: h, srv: srv}
}

// response is a finished HTTP exchange.
type response struct {
	status int
	header http.Header
	body   []byte
}

func (r *response) json(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
}

// problem decodes a problem body and checks its content type.
func (r *response) problem(t testing.TB) api.Problem {
	t.Helper()
	if ct := r.header.Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("content type %q, want application/problem+json; body %s", ct, r.body)
	}
	var p api.Problem
	r.json(t, &p)
	if p.Status != r.status {
		t.Fatalf("problem status %d, response status %d", p.Status, r.status)
	}
	return p
}

// do sends a request to the test server. body may be nil, a string, []byte
// or a value to marshal as JSON.
func (b *testBundle) do(t testing.TB, method, path string, body any, headers ...string) *response {
	t.Helper()
	var rd io.Reader
	switch v := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(v)
	case []byte:
		rd = bytes.NewReader(v)
	default:
		data, err := json.Marshal(v)
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, b.srv.URL+path, rd)
	if err != nil {
		t.Fatalf("request: %v", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	return b.send(t, req)
}

// send sends req to the test server and reads the answer.
func (b *testBundle) send(t testing.TB, req *http.Request) *response {
	t.Helper()
	res, err := b.srv.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer res.Body.Close()
	data, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return &response{status: res.StatusCode, header: res.Header, body: data}
}

func wantStatus(t testing.TB, r *response, want int) {
	t.Helper()
	if r.status != want {
		t.Fatalf("status %d, want %d; body %s", r.status, want, r.body)
	}
}

// orderDef is a four-step saga served by pull workers.
const orderDef = `name: order
version: 1
steps:
  - name: order
    action: {queue: orders, name: create_order}
    compensation: {queue: orders, name: cancel_order}
  - name: payment
    action: {queue: payments, name: charge}
    compensation: {queue: payments, name: refund}
    retry: {max_attempts: 2, initial_interval: 10ms, non_retryable_errors: [card_declined]}
  - name: inventory
    action: {queue: inventory, name: reserve}
    compensation: {queue: inventory, name: release}
  - name: shipping
    kind: pivot
    action: {queue: shipping, name: book}
`

// registerOrder registers orderDef through the API.
func (b *testBundle) registerOrder(t testing.TB) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, b.srv.URL+"/v1/definitions", strings.NewReader(orderDef))
	req.Header.Set("Content-Type", "application/yaml")
	res, err := b.srv.Client().Do(req)
	if err != nil {
		t.Fatalf("register: %v", err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusCreated && res.StatusCode != http.StatusOK {
		data, _ := io.ReadAll(res.Body)
		t.Fatalf("register: status %d: %s", res.StatusCode, data)
	}
}
