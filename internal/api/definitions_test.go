package api_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/accord-saga/accord/internal/api"
	"github.com/accord-saga/accord/internal/engine"
	"github.com/accord-saga/accord/internal/storage"
)

const twoStepJSON = `{"name": "pay", "version": %d, "steps": [
  {"name": "charge", "action": {"queue": "payments"}, "compensation": {"queue": "payments", "name": "refund"}},
  {"name": "ship", "kind": "pivot", "action": {"queue": "shipping"}}
]}`

func (b *testBundle) postDefinition(t *testing.T, contentType, doc string, headers ...string) *response {
	t.Helper()
	return b.do(t, http.MethodPost, "/v1/definitions", []byte(doc), append([]string{"Content-Type", contentType}, headers...)...)
}

func TestRegisterDefinition(t *testing.T) {
	t.Parallel()
	b := setup(t)

	r := b.postDefinition(t, "application/json", fmt.Sprintf(twoStepJSON, 1))
	wantStatus(t, r, http.StatusCreated)
	var d api.Definition
	r.json(t, &d)
	if d.Name != "pay" || d.Version != 1 || d.Hash == "" || d.CreatedAt.IsZero() || len(d.Definition) == 0 {
		t.Fatalf("definition %+v", d)
	}
	if got := r.header.Get("ETag"); got != `"`+d.Hash+`"` {
		t.Fatalf("ETag %q, want the quoted hash", got)
	}
	if got := r.header.Get("Location"); got != "/v1/definitions/pay/versions/1" {
		t.Fatalf("Location %q", got)
	}

	t.Run("identical content again is 200", func(t *testing.T) {
		r := b.postDefinition(t, "application/json", fmt.Sprintf(twoStepJSON, 1))
		wantStatus(t, r, http.StatusOK)
	})
	t.Run("different content under the same version is 409", func(t *testing.T) {
		doc := strings.Replace(fmt.Sprintf(twoStepJSON, 1), `"refund"`, `"refund_all"`, 1)
		p := b.postDefinition(t, "application/json", doc).problem(t)
		if p.Status != http.StatusConflict || p.Type != api.TypeConflict {
			t.Fatalf("problem %+v", p)
		}
	})
	t.Run("YAML", func(t *testing.T) {
		wantStatus(t, b.postDefinition(t, "application/yaml", orderDef), http.StatusCreated)
		wantStatus(t, b.postDefinition(t, "text/yaml; charset=utf-8", orderDef), http.StatusOK)
	})
}

func TestDefinitionIfMatch(t *testing.T) {
	t.Parallel()
	b := setup(t)
	first := b.postDefinition(t, "application/json", fmt.Sprintf(twoStepJSON, 1))
	wantStatus(t, first, http.StatusCreated)
	v1Tag := first.header.Get("ETag")

	// v2 is registered by someone who read v1 last: it goes in.
	r := b.postDefinition(t, "application/json", fmt.Sprintf(twoStepJSON, 2), "If-Match", v1Tag)
	wantStatus(t, r, http.StatusCreated)
	v2Tag := r.header.Get("ETag")

	// v3 by someone who also read v1 last: the latest is v2 now.
	p := b.postDefinition(t, "application/json", fmt.Sprintf(twoStepJSON, 3), "If-Match", v1Tag).problem(t)
	if p.Status != http.StatusPreconditionFailed || p.Type != api.TypePreconditionFailed {
		t.Fatalf("problem %+v", p)
	}
	if len(p.Errors) == 0 || p.Errors[0].Location != "header.If-Match" {
		t.Fatalf("errors %+v do not name If-Match", p.Errors)
	}
	if _, err := b.store.DefinitionGet(context.Background(), "pay", 3); err == nil {
		t.Fatal("v3 was stored despite the failed precondition")
	}
	// After rereading, it goes in.
	wantStatus(t, b.postDefinition(t, "application/json", fmt.Sprintf(twoStepJSON, 3), "If-Match", v2Tag), http.StatusCreated)

	// If-Match for a name without versions fails too.
	doc := strings.Replace(fmt.Sprintf(twoStepJSON, 1), `"pay"`, `"fresh"`, 1)
	p = b.postDefinition(t, "application/json", doc, "If-Match", v1Tag).problem(t)
	if p.Status != http.StatusPreconditionFailed {
		t.Fatalf("problem %+v", p)
	}
}

func TestGetDefinition(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for v := 1; v <= 2; v++ {
		wantStatus(t, b.postDefinition(t, "application/json", fmt.Sprintf(twoStepJSON, v)), http.StatusCreated)
	}
	latest := b.do(t, http.MethodGet, "/v1/definitions/pay", nil)
	wantStatus(t, latest, http.StatusOK)
	var d api.Definition
	latest.json(t, &d)
	if d.Version != 2 {
		t.Fatalf("latest is version %d, want 2", d.Version)
	}
	tag := latest.header.Get("ETag")
	if tag != `"`+d.Hash+`"` {
		t.Fatalf("ETag %q", tag)
	}
	r := b.do(t, http.MethodGet, "/v1/definitions/pay", nil, "If-None-Match", tag)
	wantStatus(t, r, http.StatusNotModified)
	if len(r.body) != 0 {
		t.Fatalf("304 with a body: %s", r.body)
	}

	v1 := b.do(t, http.MethodGet, "/v1/definitions/pay/versions/1", nil)
	wantStatus(t, v1, http.StatusOK)
	v1.json(t, &d)
	if d.Version != 1 {
		t.Fatalf("version %d", d.Version)
	}
	wantStatus(t, b.do(t, http.MethodGet, "/v1/definitions/pay/versions/1", nil, "If-None-Match", `W/`+v1.header.Get("ETag")), http.StatusNotModified)
	wantStatus(t, b.do(t, http.MethodGet, "/v1/definitions/pay/versions/1", nil, "If-None-Match", tag), http.StatusOK)

	for _, path := range []string{"/v1/definitions/nope", "/v1/definitions/pay/versions/9"} {
		p := b.do(t, http.MethodGet, path, nil).problem(t)
		if p.Status != http.StatusNotFound || p.Type != api.TypeNotFound {
			t.Fatalf("%s: problem %+v", path, p)
		}
	}
	p := b.do(t, http.MethodGet, "/v1/definitions/pay/versions/0", nil).problem(t)
	if p.Status != http.StatusUnprocessableEntity || p.Errors[0].Location != "path.version" {
		t.Fatalf("problem %+v", p)
	}
}

func TestListDefinitions(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for v := 1; v <= 5; v++ {
		wantStatus(t, b.postDefinition(t, "application/json", fmt.Sprintf(twoStepJSON, v)), http.StatusCreated)
	}
	wantStatus(t, b.postDefinition(t, "application/yaml", orderDef), http.StatusCreated)

	var all []string
	cursor := ""
	for pages := 0; ; pages++ {
		if pages > 10 {
			t.Fatal("pagination does not end")
		}
		r := b.do(t, http.MethodGet, "/v1/definitions?limit=2&cursor="+cursor, nil)
		wantStatus(t, r, http.StatusOK)
		var page api.DefinitionList
		r.json(t, &page)
		for _, d := range page.Items {
			all = append(all, fmt.Sprintf("%s@%d", d.Name, d.Version))
		}
		if page.NextCursor == "" {
			break
		}
		cursor = page.NextCursor
	}
	want := "order@1 pay@1 pay@2 pay@3 pay@4 pay@5"
	if got := strings.Join(all, " "); got != want {
		t.Fatalf("pages: %s, want %s", got, want)
	}

	r := b.do(t, http.MethodGet, "/v1/definitions?name=order", nil)
	var page api.DefinitionList
	r.json(t, &page)
	if len(page.Items) != 1 || page.Items[0].Name != "order" || page.NextCursor != "" {
		t.Fatalf("filtered page %+v", page)
	}

	// A cursor of another list is refused.
	sagaCursor := b.sagaCursor(t)
	p := b.do(t, http.MethodGet, "/v1/definitions?cursor="+sagaCursor, nil).problem(t)
	if p.Status != http.StatusUnprocessableEntity || p.Errors[0].Location != "query.cursor" {
		t.Fatalf("problem %+v", p)
	}
}

// sagaCursor returns a valid cursor of the saga list.
func (b *testBundle) sagaCursor(t *testing.T) string {
	t.Helper()
	b.registerOrder(t)
	for range 2 {
		wantStatus(t, b.do(t, http.MethodPost, "/v1/sagas", map[string]any{"definition": "order"}), http.StatusCreated)
	}
	var page api.SagaList
	b.do(t, http.MethodGet, "/v1/sagas?limit=1", nil).json(t, &page)
	if page.NextCursor == "" {
		t.Fatal("no cursor")
	}
	return page.NextCursor
}

// countDefinitions counts every stored definition version.
func countDefinitions(t testing.TB, store storage.Driver) int {
	t.Helper()
	defs, err := store.DefinitionList(context.Background(), &storage.DefinitionListParams{Limit: 1000})
	if err != nil {
		t.Fatalf("list definitions: %v", err)
	}
	return len(defs)
}

// TestDefinitionTooLargeWhenCanonical: a definition whose document fits
// but whose canonical form (every default written out) does not is refused
// at registration, naming the limit, rather than registered and then
// impossible to start.
func TestDefinitionTooLargeWhenCanonical(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var doc strings.Builder
	doc.WriteString("name: big\nversion: 1\nsteps:\n")
	for i := range 1000 {
		fmt.Fprintf(&doc, "- {name: s%d, action: {queue: q}, compensation: {queue: q}}\n", i)
	}
	p := b.postDefinition(t, "application/yaml", doc.String()).problem(t)
	if p.Status != http.StatusUnprocessableEntity || p.Type != api.TypeValidation || !strings.Contains(p.Detail, "the limit is 262144") {
		t.Fatalf("problem %+v, want 422 naming the limit", p)
	}
	wantStatus(t, b.do(t, http.MethodGet, "/v1/definitions/big", nil), http.StatusNotFound)
}

// TestDefinitionVersionLifecycle: the highest version there is, once
// registered, can be disabled and deleted, and "latest" goes back to the
// newest enabled version; a disabled version refuses starts that name it,
// and a version a running saga uses refuses deletion.
func TestDefinitionVersionLifecycle(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const top = "2147483647"
	oneStep := `{"name": "pin", "version": %s, "steps": [{"name": "only", "kind": "pivot", "action": {"queue": "pinq"}}]}`
	for _, v := range []string{"1", top} {
		wantStatus(t, b.postDefinition(t, "application/json", fmt.Sprintf(oneStep, v)), http.StatusCreated)
	}
	latest := func(want int) {
		t.Helper()
		r := b.do(t, http.MethodGet, "/v1/definitions/pin", nil)
		wantStatus(t, r, http.StatusOK)
		var d api.Definition
		r.json(t, &d)
		if d.Version != want || !d.Enabled {
			t.Fatalf("latest = version %d (enabled %t), want %d", d.Version, d.Enabled, want)
		}
	}
	start := func(version string) *response {
		t.Helper()
		return b.do(t, http.MethodPost, "/v1/sagas", []byte(`{"definition": "pin", "version": `+version+`}`))
	}
	latest(2147483647)
	r := start("0")
	wantStatus(t, r, http.StatusCreated)
	var started api.StartedSaga
	r.json(t, &started)

	p := b.do(t, http.MethodDelete, "/v1/definitions/pin/versions/"+top, nil).problem(t)
	if p.Status != http.StatusConflict || p.Type != api.TypeDefinitionInUse || len(p.Errors) != 1 || fmt.Sprint(p.Errors[0].Value) != "1" ||
		!strings.Contains(p.Detail, "used by 1 unfinished sagas") {
		t.Fatalf("delete while a saga runs on it: %+v", p)
	}

	r = b.do(t, http.MethodPost, "/v1/definitions/pin/versions/"+top+"/disable", nil)
	wantStatus(t, r, http.StatusOK)
	var d api.Definition
	r.json(t, &d)
	if d.Version != 2147483647 || d.Enabled {
		t.Fatalf("disabled = %+v", d)
	}
	latest(1)
	r = b.do(t, http.MethodGet, "/v1/definitions?name=pin", nil)
	wantStatus(t, r, http.StatusOK)
	var list api.DefinitionList
	r.json(t, &list)
	if len(list.Items) != 2 || !list.Items[0].Enabled || list.Items[1].Enabled {
		t.Fatalf("list = %+v, want version 1 enabled and the top one not", list.Items)
	}
	p = start(top).problem(t)
	if p.Status != http.StatusConflict || p.Type != api.TypeDefinitionDisabled {
		t.Fatalf("start of the disabled version: %+v", p)
	}
	r = start("0")
	wantStatus(t, r, http.StatusCreated)
	var onLatest api.StartedSaga
	r.json(t, &onLatest)

	// The saga on the disabled version runs to its end.
	ctx := context.Background()
	for done := 0; done < 2; {
		tasks, err := b.eng.PollTasks(ctx, engine.PollParams{Queue: "pinq", Max: 2, Visibility: time.Minute, Wait: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		for _, task := range tasks {
			if err := b.eng.CompleteTask(ctx, engine.Result{TaskID: task.ID, ClaimToken: task.ClaimToken, Outcome: "success"}); err != nil {
				t.Fatal(err)
			}
			done++
		}
	}
	for _, id := range []string{started.ID, onLatest.ID} {
		r = b.do(t, http.MethodGet, "/v1/sagas/"+id+"/wait?timeout=20s", nil)
		wantStatus(t, r, http.StatusOK)
	}
	wantStatus(t, b.do(t, http.MethodDelete, "/v1/definitions/pin/versions/"+top, nil), http.StatusNoContent)
	wantStatus(t, b.do(t, http.MethodGet, "/v1/definitions/pin/versions/"+top, nil), http.StatusNotFound)
	latest(1)
	r = b.do(t, http.MethodGet, "/v1/sagas/"+started.ID, nil)
	wantStatus(t, r, http.StatusOK)
	var ended api.Saga
	r.json(t, &ended)
	if ended.Status != "completed" || ended.DefinitionVersion != 2147483647 {
		t.Fatalf("the ended saga of the deleted version: %+v", ended)
	}
	if p := start(top).problem(t); p.Status != http.StatusNotFound {
		t.Fatalf("start of the deleted version: %+v", p)
	}
	if p := b.do(t, http.MethodPost, "/v1/definitions/pin/versions/"+top+"/enable", nil).problem(t); p.Status != http.StatusNotFound ||
		p.Detail != "definition pin version 2147483647 is not registered" {
		t.Fatalf("enable of the deleted version: %+v", p)
	}
	if p := b.do(t, http.MethodDelete, "/v1/definitions/pin/versions/0", nil).problem(t); p.Status != http.StatusUnprocessableEntity {
		t.Fatalf("delete of version 0: %+v", p)
	}
}
