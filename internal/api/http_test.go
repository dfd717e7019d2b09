package api_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/accord-saga/accord/internal/api"
	"github.com/accord-saga/accord/internal/storage"
)

// TestTruncatedBody sends fewer bytes than Content-Length promises and
// closes its side: a client fault, so a 400, never a 5xx.
func TestTruncatedBody(t *testing.T) {
	t.Parallel()
	b := setup(t)
	conn, err := net.Dial("tcp", strings.TrimPrefix(b.srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /v1/sagas HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"definition\":")
	if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusBadRequest {
		t.Fatalf("status %d", res.StatusCode)
	}
}

func TestBodyCap(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{apiConfig: func(c *api.Config) { c.MaxBodyBytes = 64 }})
	if _, _, err := b.eng.RegisterDefinition(context.Background(), []byte(orderDef)); err != nil {
		t.Fatal(err)
	}
	body := `{"definition": "order", "input": {"pad": "` + strings.Repeat("p", 16) + `"}}`
	if len(body) > 64 {
		t.Fatalf("test body is %d bytes", len(body))
	}
	wantStatus(t, b.do(t, http.MethodPost, "/v1/sagas", body+strings.Repeat(" ", 64-len(body))), http.StatusCreated)
	p := b.do(t, http.MethodPost, "/v1/sagas", body+strings.Repeat(" ", 65-len(body))).problem(t)
	if p.Status != http.StatusRequestEntityTooLarge || p.Type != api.TypePayloadTooLarge {
		t.Fatalf("problem %+v", p)
	}
}

func TestNoRoute(t *testing.T) {
	t.Parallel()
	b := setup(t)
	p := b.do(t, http.MethodGet, "/v1/nothing/here", nil).problem(t)
	if p.Status != http.StatusNotFound || p.Type != api.TypeNotFound || p.Instance != "/v1/nothing/here" {
		t.Fatalf("problem %+v", p)
	}
	r := b.do(t, http.MethodDelete, "/v1/sagas", nil)
	p = r.problem(t)
	if p.Status != http.StatusMethodNotAllowed || p.Type != api.TypeMethodNotAllowed || r.header.Get("Allow") == "" {
		t.Fatalf("problem %+v, Allow %q", p, r.header.Get("Allow"))
	}
	wantStatus(t, b.do(t, http.MethodGet, "/healthz", nil), http.StatusOK)
	wantStatus(t, b.do(t, http.MethodGet, "/metrics", nil), http.StatusOK)
}

func TestBreakers(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{apiConfig: func(c *api.Config) {
		c.Breakers = func() any { return map[string]string{"https://shipping.example": "open"} }
	}})
	r := b.do(t, http.MethodGet, "/v1/breakers", nil)
	wantStatus(t, r, http.StatusOK)
	if got := strings.TrimSpace(string(r.body)); got != `{"https://shipping.example":"open"}` {
		t.Fatalf("body %s", got)
	}
	// Without a snapshot function the route does not exist.
	wantStatus(t, setup(t).do(t, http.MethodGet, "/v1/breakers", nil), http.StatusNotFound)
}

// TestSystem: GET /v1/system names the running build and its store.
func TestSystem(t *testing.T) {
	t.Parallel()
	b := setup(t)
	r := b.do(t, http.MethodGet, "/v1/system", nil)
	wantStatus(t, r, http.StatusOK)
	var got struct {
		Build struct {
			Version   string `json:"version"`
			Commit    string `json:"commit"`
			GoVersion string `json:"go_version"`
		} `json:"build"`
		Store struct {
			Backend       string `json:"backend"`
			Partitions    int    `json:"partitions"`
			SchemaVersion int    `json:"schema_version"`
		} `json:"store"`
	}
	r.json(t, &got)
	info := b.store.Info()
	if got.Build.Version == "" || got.Build.Commit == "" || got.Build.GoVersion != runtime.Version() ||
		got.Store.Backend != info.Backend || got.Store.Partitions != info.Partitions || got.Store.SchemaVersion != info.SchemaVersion {
		t.Errorf("system %s, store %+v", r.body, info)
	}
}

// TestStorageOutage: when the store cannot serve, requests answer 503
// unavailable with Retry-After, and the detail does not leak driver errors.
func TestStorageOutage(t *testing.T) {
	t.Parallel()
	var down atomic.Bool
	b := setup(t, setupOpts{wrapStore: func(d storage.Driver) storage.Driver { return &flakyStore{Driver: d, down: &down} }})
	b.registerOrder(t)
	id := b.start(t, "order", nil).ID
	down.Store(true)
	for _, path := range []string{"/v1/sagas", "/v1/definitions", "/v1/definitions/order", "/v1/sagas/" + id,
		"/v1/sagas/" + id + "/events", "/v1/queues"} {
		r := b.do(t, http.MethodGet, path, nil)
		p := r.problem(t)
		if p.Status != http.StatusServiceUnavailable || p.Type != api.TypeUnavailable || r.header.Get("Retry-After") == "" {
			t.Fatalf("%s: %+v, Retry-After %q", path, p, r.header.Get("Retry-After"))
		}
		if strings.Contains(p.Detail, "disk") {
			t.Fatalf("%s: detail leaks the driver error: %s", path, p.Detail)
		}
	}
	down.Store(false)
	wantStatus(t, b.do(t, http.MethodGet, "/v1/sagas/"+id, nil), http.StatusOK)
}

// flakyStore fails the reads the API makes while down is set, as a broken
// disk or an unreachable database would.
type flakyStore struct {
	storage.Driver
	down *atomic.Bool
}

var errDisk = errors.New("disk I/O error: /var/lib/accord/accord.db")

func (f *flakyStore) DefinitionGet(ctx context.Context, name string, version int) (storage.Definition, error) {
	if f.down.Load() {
		return storage.Definition{}, errDisk
	}
	return f.Driver.DefinitionGet(ctx, name, version)
}

func (f *flakyStore) DefinitionList(ctx context.Context, p *storage.DefinitionListParams) ([]storage.Definition, error) {
	if f.down.Load() {
		return nil, errDisk
	}
	return f.Driver.DefinitionList(ctx, p)
}

func (f *flakyStore) StreamRead(ctx context.Context, p *storage.StreamReadParams) ([]storage.Event, error) {
	if f.down.Load() {
		return nil, errDisk
	}
	return f.Driver.StreamRead(ctx, p)
}

func (f *flakyStore) SagaGet(ctx context.Context, id string) (storage.Saga, error) {
	if f.down.Load() {
		return storage.Saga{}, errDisk
	}
	return f.Driver.SagaGet(ctx, id)
}

func (f *flakyStore) SagaList(ctx context.Context, p *storage.SagaListParams) ([]storage.Saga, error) {
	if f.down.Load() {
		return nil, errDisk
	}
	return f.Driver.SagaList(ctx, p)
}

func (f *flakyStore) TaskQueueStats(ctx context.Context) ([]storage.QueueStats, error) {
	if f.down.Load() {
		return nil, errDisk
	}
	return f.Driver.TaskQueueStats(ctx)
}

// slowSender starts a request whose body never finishes arriving, and
// returns once the server has begun to read that body (it asked for it with
// 100 Continue).
func slowSender(t *testing.T, b *testBundle) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(b.srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	fmt.Fprintf(conn, "POST /v1/sagas HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\nExpect: 100-continue\r\n\r\n")
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != http.StatusContinue {
		t.Fatalf("status %d, want 100 Continue", res.StatusCode)
	}
	fmt.Fprintf(conn, `{"definition":`)
	return conn
}

// TestSlowBodiesHoldNoSlot checks that requests whose bodies are still
// arriving do not hold the in-flight slots: with more slow senders than
// slots, other requests are still served.
func TestSlowBodiesHoldNoSlot(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{apiConfig: func(c *api.Config) { c.MaxInFlight = 2 }})
	if _, _, err := b.eng.RegisterDefinition(context.Background(), []byte(orderDef)); err != nil {
		t.Fatal(err)
	}
	for range 6 {
		slowSender(t, b)
	}
	wantStatus(t, b.do(t, http.MethodGet, "/v1/sagas", nil), http.StatusOK)
	wantStatus(t, b.do(t, http.MethodPost, "/v1/sagas", map[string]any{"definition": "order", "input": map[string]any{}}), http.StatusCreated)
}

// TestSlowBodyTimesOut checks that a body that does not arrive within the
// body timeout is answered with 408.
func TestSlowBodyTimesOut(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{apiConfig: func(c *api.Config) { c.BodyTimeout = 50 * time.Millisecond }})
	conn := slowSender(t, b)
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusRequestTimeout {
		t.Fatalf("status %d, want 408", res.StatusCode)
	}
}
