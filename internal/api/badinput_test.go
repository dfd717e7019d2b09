package api_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/accord-saga/accord/internal/api"
	"github.com/accord-saga/accord/internal/saga"
	"github.com/accord-saga/accord/internal/storage"
)

// TestBadInput sends requests that are wrong in every way a client gets
// them wrong. Each must be a 4xx problem whose errors name the field, and
// none may change the store.
func TestBadInput(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.registerOrder(t)
	before := snapshot(t, b.store)

	big := strings.Repeat("x", api.DefaultMaxBodyBytes+1)
	bigInput := `{"definition": "order", "input": "` + strings.Repeat("x", 300<<10) + `"}`
	bigDef := "name: big\nversion: 1\ndescription: " + strings.Repeat("x", 300<<10) + "\nsteps: []\n"
	cyclic := `{"name": "cyc", "version": 1, "steps": [
	  {"name": "a", "after": ["b"], "action": {"queue": "q"}, "compensation": {"queue": "q"}},
	  {"name": "b", "after": ["a"], "action": {"queue": "q"}, "compensation": {"queue": "q"}}]}`
	unknownStep := `{"name": "unk", "version": 1, "steps": [
	  {"name": "a", "action": {"queue": "q"}, "compensation": {"queue": "q"}},
	  {"name": "b", "after": ["paymnt"], "action": {"queue": "q"}, "compensation": {"queue": "q"}}]}`

	cases := []struct {
		name        string
		method      string
		path        string
		contentType string
		body        string
		headers     []string
		status      int
		typ         string
		field       string // must appear in an error's location or message
	}{
		{"start: malformed JSON", "POST", "/v1/sagas", "application/json", `{"definition":`, nil, 400, api.TypeBadRequest, "body"},
		{"start: empty body", "POST", "/v1/sagas", "application/json", ``, nil, 400, api.TypeBadRequest, ""},
		{"start: unknown field", "POST", "/v1/sagas", "application/json", `{"definition": "order", "inputs": {}}`, nil, 422, api.TypeValidation, "body.inputs"},
		{"start: missing definition", "POST", "/v1/sagas", "application/json", `{"input": {}}`, nil, 422, api.TypeValidation, "definition"},
		{"start: definition of the wrong type", "POST", "/v1/sagas", "application/json", `{"definition": 5}`, nil, 422, api.TypeValidation, "body.definition"},
		{"start: version of the wrong type", "POST", "/v1/sagas", "application/json", `{"definition": "order", "version": "1"}`, nil, 422, api.TypeValidation, "body.version"},
		{"start: negative version", "POST", "/v1/sagas", "application/json", `{"definition": "order", "version": -1}`, nil, 422, api.TypeValidation, "body.version"},
		{"start: body over the cap", "POST", "/v1/sagas", "application/json", big, nil, 413, api.TypePayloadTooLarge, ""},
		{"start: input over its limit", "POST", "/v1/sagas", "application/json", bigInput, nil, 413, api.TypePayloadTooLarge, "body.input"},
		// What the API accepts must be storable, readable and recoverable:
		// nesting stops at saga.MaxJSONDepth, far below every decoder's.
		{"start: input nested one level too deep", "POST", "/v1/sagas", "application/json", deepStart(saga.MaxJSONDepth + 1), nil, 422, api.TypeValidation, "body.input"},
		{"start: input nested 9,999 deep", "POST", "/v1/sagas", "application/json", deepStart(9999), nil, 422, api.TypeValidation, "body.input"},
		{"start: idempotency key too long", "POST", "/v1/sagas", "application/json", `{"definition": "order"}`,
			[]string{"Idempotency-Key", strings.Repeat("k", 513)}, 422, api.TypeValidation, "header.Idempotency-Key"},
		{"start: a body that is not JSON", "POST", "/v1/sagas", "text/plain", `definition=order`, nil, 415, api.TypeUnsupportedMediaType, ""},
		// PostgreSQL's text columns take neither NUL nor bytes that are not
		// UTF-8: such names are bad input, not a storage failure.
		{"start: NUL in the definition name", "POST", "/v1/sagas", "application/json", `{"definition": "ord\u0000er"}`, nil, 422, api.TypeValidation, "definition"},
		{"start: idempotency key not UTF-8", "POST", "/v1/sagas", "application/json", `{"definition": "order"}`,
			[]string{"Idempotency-Key", "k\xff"}, 422, api.TypeValidation, "header.Idempotency-Key"},
		{"get: NUL in the saga id", "GET", "/v1/sagas/ab%00c", "", "", nil, 422, api.TypeValidation, "path"},
		{"get: saga id not UTF-8", "GET", "/v1/sagas/%ff%fe", "", "", nil, 422, api.TypeValidation, "path"},
		// Ids and names travel in headers and logs: every control
		// character (C0, DEL, C1) is refused, not only NUL.
		{"start: LF in the definition name", "POST", "/v1/sagas", "application/json", `{"definition": "ord\ner"}`, nil, 422, api.TypeValidation, "definition"},
		{"start: tab in the idempotency key", "POST", "/v1/sagas", "application/json", `{"definition": "order"}`,
			[]string{"Idempotency-Key", "k\tk"}, 422, api.TypeValidation, "header.Idempotency-Key"},
		{"start: C1 in the idempotency key", "POST", "/v1/sagas", "application/json", `{"definition": "order"}`,
			[]string{"Idempotency-Key", "k\u0085k"}, 422, api.TypeValidation, "header.Idempotency-Key"},
		{"get: CR LF in the saga id", "GET", "/v1/sagas/ab%0D%0Ac", "", "", nil, 422, api.TypeValidation, "path"},
		{"list: DEL in a filter", "GET", "/v1/sagas?definition=a%7Fb", "", "", nil, 422, api.TypeValidation, "query"},
		{"poll: LF in the queue", "POST", "/v1/queues/or%0Aders/tasks:poll", "application/json", `{}`, nil, 422, api.TypeValidation, "path"},
		{"complete: LF in the claim token", "POST", "/v1/tasks/t1/complete", "application/json", `{"claim_token": "c\nc", "outcome": "success"}`, nil, 422, api.TypeValidation, "claim token"},
		{"list: NUL in a filter", "GET", "/v1/sagas?definition=a%00b", "", "", nil, 422, api.TypeValidation, "query"},

		{"definition: unknown step", "POST", "/v1/definitions", "application/json", unknownStep, nil, 422, api.TypeValidation, "body.steps[1].after[0]"},
		{"definition: cyclic", "POST", "/v1/definitions", "application/json", cyclic, nil, 422, api.TypeValidation, "after"},
		{"definition: missing steps", "POST", "/v1/definitions", "application/yaml", "name: x\nversion: 1\n", nil, 422, api.TypeValidation, "steps"},
		{"definition: unknown field", "POST", "/v1/definitions", "application/yaml", "name: x\nversion: 1\nstepz: []\n", nil, 422, api.TypeValidation, "stepz"},
		{"definition: malformed YAML", "POST", "/v1/definitions", "application/yaml", "name: [x\n", nil, 422, api.TypeValidation, "body"},
		{"definition: YAML sent as JSON", "POST", "/v1/definitions", "application/json", "name: x\n", nil, 400, api.TypeBadRequest, "body"},
		{"definition: unsupported media type", "POST", "/v1/definitions", "text/plain", orderDef, nil, 415, api.TypeUnsupportedMediaType, "header.Content-Type"},
		{"definition: too large", "POST", "/v1/definitions", "application/yaml", bigDef, nil, 413, api.TypePayloadTooLarge, "body"},
		{"definition: empty", "POST", "/v1/definitions", "application/yaml", "", nil, 400, api.TypeBadRequest, ""},

		{"list: bad cursor", "GET", "/v1/sagas?cursor=AAAA", "", "", nil, 422, api.TypeValidation, "query.cursor"},
		{"list: bad time", "GET", "/v1/sagas?created_after=yesterday", "", "", nil, 422, api.TypeValidation, "query.created_after"},
		{"list: bad end time", "GET", "/v1/sagas?created_before=2024-13-01T00:00:00Z", "", "", nil, 422, api.TypeValidation, "query.created_before"},
		{"list: negative limit", "GET", "/v1/sagas?limit=-5", "", "", nil, 422, api.TypeValidation, "query.limit"},
		{"list: limit over the max", "GET", "/v1/sagas?limit=501", "", "", nil, 422, api.TypeValidation, "query.limit"},
		{"list: limit not a number", "GET", "/v1/sagas?limit=ten", "", "", nil, 422, api.TypeValidation, "query.limit"},
		{"list: unknown status", "GET", "/v1/sagas?status=running,bogus", "", "", nil, 422, api.TypeValidation, "query.status"},
		{"definitions: negative limit", "GET", "/v1/definitions?limit=-1", "", "", nil, 422, api.TypeValidation, "query.limit"},
		{"events: bad cursor", "GET", "/v1/sagas/x/events?cursor=!!!", "", "", nil, 422, api.TypeValidation, "query.cursor"},
		{"events: zero limit", "GET", "/v1/sagas/x/events?limit=0", "", "", nil, 422, api.TypeValidation, "query.limit"},
		{"wait: bad timeout", "GET", "/v1/sagas/x/wait?timeout=forever", "", "", nil, 422, api.TypeValidation, "query.timeout"},
		{"wait: timeout over the max", "GET", "/v1/sagas/x/wait?timeout=2m", "", "", nil, 422, api.TypeValidation, "query.timeout"},

		{"poll: zero max", "POST", "/v1/queues/orders/tasks:poll", "application/json", `{"max": 0}`, nil, 422, api.TypeValidation, "body.max"},
		{"poll: max over the limit", "POST", "/v1/queues/orders/tasks:poll", "application/json", `{"max": 1001}`, nil, 422, api.TypeValidation, "body.max"},
		{"poll: bad visibility", "POST", "/v1/queues/orders/tasks:poll", "application/json", `{"visibility": "soon"}`, nil, 422, api.TypeValidation, "body.visibility"},
		{"poll: visibility twice", "POST", "/v1/queues/orders/tasks:poll", "application/json", `{"visibility": "1s", "visibility_ms": 1000}`, nil, 422, api.TypeValidation, "body.visibility"},
		{"poll: negative visibility", "POST", "/v1/queues/orders/tasks:poll", "application/json", `{"visibility": "-1s"}`, nil, 422, api.TypeValidation, "body.visibility"},
		{"poll: wait over the max", "POST", "/v1/queues/orders/tasks:poll", "application/json", `{"wait": "61s"}`, nil, 422, api.TypeValidation, "body.wait"},
		{"poll: negative wait_ms", "POST", "/v1/queues/orders/tasks:poll", "application/json", `{"wait_ms": -1}`, nil, 422, api.TypeValidation, "body.wait_ms"},
		{"poll: the push queue", "POST", "/v1/queues/_push/tasks:poll", "application/json", `{}`, nil, 422, api.TypeValidation, "path.queue"},
		{"poll: unknown field", "POST", "/v1/queues/orders/tasks:poll", "application/json", `{"maximum": 3}`, nil, 422, api.TypeValidation, "body.maximum"},

		{"complete: missing claim token", "POST", "/v1/tasks/t1/complete", "application/json", `{"outcome": "success"}`, nil, 422, api.TypeValidation, "claim_token"},
		{"complete: unknown outcome", "POST", "/v1/tasks/t1/complete", "application/json", `{"claim_token": "c", "outcome": "maybe"}`, nil, 422, api.TypeValidation, "body.outcome"},
		{"complete: malformed", "POST", "/v1/tasks/t1/complete", "application/json", `{"claim_token": "c",,}`, nil, 400, api.TypeBadRequest, "body"},
		{"complete batch: no results", "POST", "/v1/tasks:complete", "application/json", `{"results": []}`, nil, 422, api.TypeValidation, "body.results"},
		{"complete batch: bad item", "POST", "/v1/tasks:complete", "application/json",
			`{"results": [{"task_id": "t", "claim_token": "c", "outcome": "nope"}]}`, nil, 422, api.TypeValidation, "body.results[0].outcome"},
		{"heartbeat: visibility over the max", "POST", "/v1/tasks/t1/heartbeat", "application/json", `{"claim_token": "c", "visibility": "2h"}`, nil, 422, api.TypeValidation, "body.visibility"},
		{"cancel: reason too long", "POST", "/v1/sagas/x/cancel", "application/json", `{"reason": "` + strings.Repeat("r", 1025) + `"}`, nil, 422, api.TypeValidation, "body.reason"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			headers := c.headers
			if c.contentType != "" {
				headers = append([]string{"Content-Type", c.contentType}, headers...)
			}
			var body any
			if c.method == http.MethodPost {
				body = []byte(c.body)
			}
			r := b.do(t, c.method, c.path, body, headers...)
			if r.status != c.status {
				t.Fatalf("status %d, want %d: %s", r.status, c.status, r.body)
			}
			p := r.problem(t)
			if p.Type != c.typ {
				t.Fatalf("type %q, want %q: %s", p.Type, c.typ, r.body)
			}
			if p.Detail == "" {
				t.Fatalf("no detail: %s", r.body)
			}
			if c.field != "" && !namesField(p, c.field) {
				t.Fatalf("no error names %q: %s", c.field, r.body)
			}
		})
	}
	if after := snapshot(t, b.store); after != before {
		t.Fatalf("bad input changed the store: before %+v, after %+v", before, after)
	}
}

func namesField(p api.Problem, field string) bool {
	for _, e := range p.Errors {
		if strings.Contains(e.Location, field) || strings.Contains(e.Message, field) {
			return true
		}
	}
	return false
}

// storeSnapshot counts what client requests could create.
type storeSnapshot struct {
	sagas, definitions, tasks int
}

func snapshot(t testing.TB, store storage.Driver) storeSnapshot {
	t.Helper()
	ctx := context.Background()
	sagas, err := store.SagaList(ctx, &storage.SagaListParams{Limit: 10000})
	if err != nil {
		t.Fatalf("list sagas: %v", err)
	}
	queues, err := store.TaskQueueStats(ctx)
	if err != nil {
		t.Fatalf("queue stats: %v", err)
	}
	tasks := 0
	for _, q := range queues {
		tasks += q.Visible + q.InFlight + q.Delayed
	}
	return storeSnapshot{sagas: len(sagas), definitions: countDefinitions(t, store), tasks: tasks}
}

// deepStart is a start whose input nests depth levels deep.
func deepStart(depth int) string {
	return `{"definition": "order", "input": ` + strings.Repeat(`[`, depth) + strings.Repeat(`]`, depth) + `}`
}
