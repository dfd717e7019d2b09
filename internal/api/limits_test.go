package api_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/accord-saga/accord/internal/api"
	"github.com/accord-saga/accord/internal/engine"
	"github.com/accord-saga/accord/internal/storage"
	"github.com/accord-saga/accord/internal/storage/sqlite"
)

// TestStartRefusesTemplateAmplification: a 12 KB definition repeats the
// saga input a thousand times in a step's input. A start with a 250 KB
// input is refused with 422 naming the step, and the server allocates a
// few times the request, not the gigabyte rendering would take. Not
// parallel: it measures the process's allocations.
func TestStartRefusesTemplateAmplification(t *testing.T) {
	b := setup(t)
	items := strings.TrimSuffix(strings.Repeat(`"${input}",`, 1000), ",")
	def := fmt.Sprintf(`{"name":"amp","version":1,"steps":[
		{"name":"fan","action":{"queue":"q"},"compensation":{"queue":"q"},"input":[%s]},
		{"name":"fan2","action":{"queue":"q"},"compensation":{"queue":"q"},"input":[%s]}]}`, items, items)
	wantStatus(t, b.do(t, http.MethodPost, "/v1/definitions", def), http.StatusCreated)
	body := `{"definition":"amp","input":{"blob":"` + strings.Repeat("x", 250<<10) + `"}}`

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	r := b.do(t, http.MethodPost, "/v1/sagas", body)
	runtime.ReadMemStats(&after)

	p := r.problem(t)
	if p.Status != http.StatusUnprocessableEntity || !namesField(p, "body.input") || !strings.Contains(p.Detail, `"fan"`) {
		t.Fatalf("problem %+v", p)
	}
	if n, limit := after.TotalAlloc-before.TotalAlloc, uint64(32<<20); n > limit {
		t.Fatalf("the start allocated %d MB, more than %d MB", n>>20, limit>>20)
	}
	if s := snapshot(t, b.store); s.sagas != 0 || s.tasks != 0 {
		t.Fatalf("the refused start left %+v", s)
	}
}

// TestQuarantinedSaga: a saga whose stored state was damaged behind the
// store's back shows as quarantined (200, not 503), is listed by its
// status, refuses inputs with a problem that says so, and is discarded by
// an operator.
func TestQuarantinedSaga(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "q.db")
	store, err := sqlite.Open(ctx, sqlite.Config{Path: path, Partitions: 4})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })

	// A first engine starts two sagas and stops.
	e, err := engine.New(engine.Config{Store: store, Logger: quietLogger(), LeaseTTL: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.RegisterDefinition(ctx, []byte(orderDef)); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for range 2 {
		res, err := e.StartSaga(ctx, engine.StartParams{Definition: "order", Input: json.RawMessage(`{}`)})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, res.SagaID)
	}
	if err := e.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	bad, good := ids[0], ids[1]
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`UPDATE sagas SET state = ? WHERE id = ?`, []byte("\x00not json"), bad); err != nil {
		t.Fatal(err)
	}
	_ = db.Close()

	// The server recovers the store.
	b := setup(t, setupOpts{wrapStore: func(storage.Driver) storage.Driver { return store }})
	r := b.do(t, http.MethodGet, "/v1/sagas/"+bad, nil)
	wantStatus(t, r, http.StatusOK)
	var s api.Saga
	r.json(t, &s)
	if s.Status != engine.StatusQuarantined || s.Terminal || s.Quarantine == "" {
		t.Fatalf("quarantined saga: %+v", s)
	}
	r = b.do(t, http.MethodGet, "/v1/sagas?status=quarantined", nil)
	wantStatus(t, r, http.StatusOK)
	var list api.SagaList
	r.json(t, &list)
	if len(list.Items) != 1 || list.Items[0].ID != bad {
		t.Fatalf("quarantined list: %+v", list.Items)
	}
	if p := b.do(t, http.MethodPost, "/v1/sagas/"+bad+"/cancel", nil).problem(t); p.Status != http.StatusConflict || p.Type != api.TypeQuarantined {
		t.Fatalf("cancel: %+v", p)
	}
	if p := b.do(t, http.MethodPost, "/v1/sagas/"+good+"/discard", nil).problem(t); p.Status != http.StatusConflict || p.Type != api.TypeNotQuarantined {
		t.Fatalf("discard a running saga: %+v", p)
	}
	r = b.do(t, http.MethodPost, "/v1/sagas/"+bad+"/discard", nil)
	wantStatus(t, r, http.StatusOK)
	r.json(t, &s)
	if s.Status != engine.StatusDiscarded || !s.Terminal {
		t.Fatalf("discarded saga: %+v", s)
	}
	r = b.do(t, http.MethodGet, "/v1/sagas/"+good, nil)
	wantStatus(t, r, http.StatusOK)
	r.json(t, &s)
	if s.Status != "running" {
		t.Fatalf("the other saga: %+v", s)
	}
}
