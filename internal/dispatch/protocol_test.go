package dispatch

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/accord-saga/accord/internal/engine"
	"github.com/accord-saga/accord/internal/tracing"
)

func TestResponseProtocol(t *testing.T) {
	t.Parallel()
	big := `{"pad":"` + strings.Repeat("x", 200) + `"}`
	tests := []struct {
		name    string
		status  int
		header  map[string]string
		body    string
		outcome string
		code    string
		output  string // expected output; "" means none (null)
		message string // substring of the message
	}{
		{name: "200 json", status: 200, body: `{"reservation":"r-1"}`, outcome: OutcomeSuccess, output: `{"reservation":"r-1"}`},
		{name: "201 json", status: 201, body: ` [1,2,3] `, outcome: OutcomeSuccess, output: `[1,2,3]`},
		{name: "200 empty", status: 200, outcome: OutcomeSuccess},
		{name: "204", status: 204, outcome: OutcomeSuccess},
		{name: "200 not json", status: 200, body: `<html>ok</html>`, outcome: OutcomeRetryable, code: CodeInvalidResponse, message: "not JSON"},
		{name: "200 too large", status: 200, body: big, outcome: OutcomeRetryable, code: CodeResponseTooLarge},
		{name: "409 problem with code", status: 409, header: map[string]string{"Content-Type": "application/problem+json"},
			body:    `{"title":"Out of stock","detail":"sku a-1 has 0 left","code":"out_of_stock"}`,
			outcome: OutcomeFailure, code: "out_of_stock", message: "Out of stock: sku a-1 has 0 left"},
		{name: "409 no body", status: 409, outcome: OutcomeFailure, code: "http_409", message: "409 Conflict"},
		{name: "422 problem without code", status: 422, body: `{"title":"Invalid","detail":"qty must be positive"}`,
			outcome: OutcomeFailure, code: "http_422", message: "qty must be positive"},
		{name: "422 code of wrong type", status: 422, body: `{"code":42,"detail":"d"}`, outcome: OutcomeFailure, code: "http_422", message: "d"},
		{name: "422 code with spaces", status: 422, body: `{"code":"a b","title":"t"}`, outcome: OutcomeFailure, code: "http_422", message: "t"},
		{name: "429", status: 429, header: map[string]string{"Retry-After": "3"}, outcome: OutcomeRetryable, code: "http_429"},
		{name: "408", status: 408, outcome: OutcomeRetryable, code: "http_408"},
		{name: "500 with problem", status: 500, body: `{"title":"Boom","detail":"db down"}`, outcome: OutcomeRetryable, code: "http_500", message: "Boom: db down"},
		{name: "503 text", status: 503, body: "try later", outcome: OutcomeRetryable, code: "http_503", message: "try later"},
		{name: "503 large body is quoted, not refused", status: 503, body: big, outcome: OutcomeRetryable, code: "http_503"},
		{name: "400", status: 400, outcome: OutcomeFailure, code: "http_400"},
		{name: "404", status: 404, outcome: OutcomeFailure, code: "http_404"},
		{name: "410", status: 410, outcome: OutcomeFailure, code: "http_410"},
		{name: "304", status: 304, outcome: OutcomeFailure, code: "http_304", message: "redirect not followed"},
	}
	var mu sync.Mutex
	byPath := map[string]int{}
	s, _ := server(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		i := byPath[r.URL.Path]
		mu.Unlock()
		tc := tests[i]
		for k, v := range tc.header {
			w.Header().Set(k, v)
		}
		w.WriteHeader(tc.status)
		_, _ = io.WriteString(w, tc.body)
	})
	b := setup(t, func(c *Config) { c.MaxResponseBytes = 100 })
	for i := range tests {
		path := fmt.Sprintf("/case/%d", i)
		mu.Lock()
		byPath[path] = i
		mu.Unlock()
		// No attempt timeout: unknown outcomes (a 2xx not JSON or over the
		// cap) are then reported as retryable, so the table sees them.
		task := newTask(fmt.Sprintf("t%d", i), s.URL+path)
		task.AttemptTimeoutMS = 0
		b.push.Dispatch(task)
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := b.done.wait(t, fmt.Sprintf("t%d", i))
			if r.Outcome != tc.outcome || r.ErrorCode != tc.code {
				t.Fatalf("got outcome %q code %q (%s), want %q %q", r.Outcome, r.ErrorCode, r.ErrorMessage, tc.outcome, tc.code)
			}
			if string(r.Output) != tc.output {
				t.Errorf("output %q, want %q", r.Output, tc.output)
			}
			if !strings.Contains(r.ErrorMessage, tc.message) {
				t.Errorf("message %q does not contain %q", r.ErrorMessage, tc.message)
			}
			if r.ClaimToken != "claim-"+r.TaskID {
				t.Errorf("claim token %q", r.ClaimToken)
			}
			if tc.outcome == OutcomeSuccess && (r.ErrorCode != "" || r.ErrorMessage != "") {
				t.Errorf("success carries an error: %q %q", r.ErrorCode, r.ErrorMessage)
			}
		})
	}
}

var traceparentRE = regexp.MustCompile(`^00-([0-9a-f]{32})-([0-9a-f]{16})-0[01]$`)

func TestHeadersAndBody(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var got []*http.Request
	var bodies []map[string]any
	s, _ := server(t, func(w http.ResponseWriter, r *http.Request) {
		var body map[string]any
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			t.Errorf("decode body: %v", err)
		}
		mu.Lock()
		got = append(got, r)
		bodies = append(bodies, body)
		mu.Unlock()
		writeJSON(w, 503, `{}`)
	})
	b := setup(t, nil)
	first := newTask("a1", s.URL+"/reserve?x=1")
	first.IdempotencyKey = "saga-1/reserve/action"
	b.push.Dispatch(first)
	b.done.wait(t, "a1")
	second := first
	second.ID, second.ClaimToken, second.Attempt = "a2", "claim-a2", 2
	b.push.Dispatch(second)
	b.done.wait(t, "a2")

	mu.Lock()
	defer mu.Unlock()
	if len(got) != 2 {
		t.Fatalf("%d requests, want 2", len(got))
	}
	var traceIDs []string
	for i, r := range got {
		attempt := fmt.Sprint(i + 1)
		want := map[string]string{
			"Idempotency-Key": "saga-1/reserve/action",
			"Accord-Saga-Id":  "saga-1",
			"Accord-Step":     "reserve",
			"Accord-Phase":    "action",
			"Accord-Attempt":  attempt,
			"Accord-Epoch":    "7",
			"Accord-Task-Id":  "a" + attempt,
			"Content-Type":    "application/json",
			"User-Agent":      "accord/test",
		}
		for k, v := range want {
			if r.Header.Get(k) != v {
				t.Errorf("request %d: %s = %q, want %q", i, k, r.Header.Get(k), v)
			}
		}
		if r.Method != http.MethodPost || r.URL.Path != "/reserve" || r.URL.RawQuery != "x=1" {
			t.Errorf("request %d: %s %s", i, r.Method, r.URL)
		}
		deadline, err := time.Parse(time.RFC3339Nano, r.Header.Get("Accord-Deadline"))
		if err != nil || time.Until(deadline) > 5*time.Second || time.Until(deadline) < -waitTimeout {
			t.Errorf("request %d: Accord-Deadline %q (%v), want about 5s after the call", i, r.Header.Get("Accord-Deadline"), err)
		}
		if bodies[i]["deadline"] != r.Header.Get("Accord-Deadline") {
			t.Errorf("request %d: body deadline %v differs from the header", i, bodies[i]["deadline"])
		}
		m := traceparentRE.FindStringSubmatch(r.Header.Get("traceparent"))
		if m == nil {
			t.Fatalf("request %d: traceparent %q", i, r.Header.Get("traceparent"))
		}
		traceIDs = append(traceIDs, m[1])
		if want := tracing.Traceparent("saga-1", "a"+attempt, false); m[0] != want {
			t.Errorf("request %d: traceparent %q, want %q (the saga's trace id, the attempt's span, not sampled)", i, m[0], want)
		}
		body := bodies[i]
		wantBody := map[string]any{
			"task_id": "a" + attempt, "saga_id": "saga-1", "definition": "order", "definition_version": 2.0,
			"step": "reserve", "phase": "action", "attempt": float64(i + 1), "operation": "",
			"idempotency_key": "saga-1/reserve/action",
		}
		for k, v := range wantBody {
			if body[k] != v {
				t.Errorf("request %d: body %s = %v, want %v", i, k, body[k], v)
			}
		}
		if in, _ := body["input"].(map[string]any); in["sku"] != "a-1" {
			t.Errorf("request %d: body input %v", i, body["input"])
		}
	}
	if traceIDs[0] != traceIDs[1] {
		t.Errorf("trace ids of one saga differ: %v", traceIDs)
	}
	if got[0].Header.Get("traceparent") == got[1].Header.Get("traceparent") {
		t.Error("two calls share a span id")
	}
}

// TestTaskTraceparent: a task that carries a traceparent (the engine's
// tracer set it) is called with it.
func TestTaskTraceparent(t *testing.T) {
	t.Parallel()
	const tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	var seen atomic.Value
	s, _ := server(t, func(w http.ResponseWriter, r *http.Request) {
		seen.Store(r.Header.Get("traceparent"))
		w.WriteHeader(204)
	})
	b := setup(t, nil)
	task := newTask("t1", s.URL)
	task.Traceparent = tp
	b.push.Dispatch(task)
	if r := b.done.wait(t, "t1"); r.Outcome != OutcomeSuccess {
		t.Fatalf("outcome %q", r.Outcome)
	}
	if got := seen.Load(); got != tp {
		t.Errorf("participant saw traceparent %q, want the task's %q", got, tp)
	}
}

func TestPropagatorHook(t *testing.T) {
	t.Parallel()
	const tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	var seen atomic.Value
	s, _ := server(t, func(w http.ResponseWriter, r *http.Request) {
		seen.Store(r.Header.Get("traceparent") + "|" + r.Header.Get("tracestate"))
		w.WriteHeader(204)
	})
	b := setup(t, func(c *Config) {
		c.Propagate = func(_ context.Context, _ engine.Task, h http.Header) {
			h.Set("traceparent", tp)
			h.Set("tracestate", "k=v")
		}
	})
	b.push.Dispatch(newTask("p1", s.URL))
	if r := b.done.wait(t, "p1"); r.Outcome != OutcomeSuccess {
		t.Fatalf("outcome %q", r.Outcome)
	}
	if got := seen.Load(); got != tp+"|k=v" {
		t.Errorf("participant saw %q", got)
	}
}

func TestNullInputAndNoDeadline(t *testing.T) {
	t.Parallel()
	var input, deadline atomic.Value
	s, _ := server(t, func(w http.ResponseWriter, r *http.Request) {
		var body map[string]json.RawMessage
		_ = json.NewDecoder(r.Body).Decode(&body)
		input.Store(string(body["input"]))
		deadline.Store(string(body["deadline"]) + r.Header.Get("Accord-Deadline"))
		w.WriteHeader(204)
	})
	b := setup(t, nil)
	task := newTask("n1", s.URL)
	task.Input = nil
	task.AttemptTimeoutMS = 0 // no attempt timeout: no deadline is announced
	b.push.Dispatch(task)
	b.done.wait(t, "n1")
	if got := input.Load(); got != "null" {
		t.Errorf("input %q, want null", got)
	}
	if got := deadline.Load(); got != "" {
		t.Errorf("deadline %q announced for a task without attempt timeout", got)
	}
}

func TestAcceptedThenOK(t *testing.T) {
	t.Parallel()
	var calls atomic.Int64
	var keys sync.Map
	s, _ := server(t, func(w http.ResponseWriter, r *http.Request) {
		keys.Store(r.Header.Get("Idempotency-Key")+"/"+r.Header.Get("Accord-Attempt"), true)
		if calls.Add(1) < 3 {
			w.Header().Set("Retry-After", "0")
			w.WriteHeader(http.StatusAccepted)
			return
		}
		writeJSON(w, 200, `{"done":true}`)
	})
	b := setup(t, nil)
	b.push.Dispatch(newTask("w1", s.URL))
	r := b.done.wait(t, "w1")
	if r.Outcome != OutcomeSuccess || string(r.Output) != `{"done":true}` {
		t.Fatalf("result %+v", r)
	}
	if calls.Load() != 3 {
		t.Errorf("%d calls, want 3", calls.Load())
	}
	n := 0
	keys.Range(func(k, _ any) bool {
		n++
		if k != "idem-w1/1" {
			t.Errorf("call with key/attempt %v", k)
		}
		return true
	})
	if n != 1 {
		t.Errorf("%d distinct key/attempt pairs, want 1", n)
	}
	if st := b.push.Stats(); st.Requests != 3 || st.Success != 1 {
		t.Errorf("stats %+v", st)
	}
}

func TestAcceptedPastAttemptTimeoutReportsNothing(t *testing.T) {
	t.Parallel()
	s, hits := server(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusAccepted)
	})
	observed := make(chan string, 4)
	b := setup(t, func(c *Config) {
		c.Observe = func(_, outcome string, _ time.Duration) { observed <- outcome }
	})
	task := newTask("w2", s.URL)
	task.AttemptTimeoutMS = 300 // shorter than Retry-After: no second call fits
	b.push.Dispatch(task)
	select {
	case o := <-observed:
		if o != OutcomeAbandoned {
			t.Fatalf("observed %q, want abandoned", o)
		}
	case <-time.After(waitTimeout):
		t.Fatal("no observation")
	}
	if n := b.done.count(); n != 0 {
		t.Errorf("%d results reported, want none: the engine's attempt timeout decides", n)
	}
	if hits.Load() != 1 {
		t.Errorf("%d hits, want 1", hits.Load())
	}
	if st := b.push.Stats(); st.Abandoned != 1 {
		t.Errorf("abandoned %d", st.Abandoned)
	}
}

func TestRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	pt := pollTiming{def: time.Second, max: 30 * time.Second}
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"", time.Second},
		{"2", 2 * time.Second},
		{" 5 ", 5 * time.Second},
		{"0", MinPollInterval},
		{"-4", time.Second},
		{"99999999999999999", 30 * time.Second},
		{"abc", time.Second},
		{now.Add(10 * time.Second).Format(http.TimeFormat), 10 * time.Second},
		{now.Add(-time.Hour).Format(http.TimeFormat), MinPollInterval},
		{now.Add(time.Hour).Format(http.TimeFormat), 30 * time.Second},
	}
	for _, tc := range tests {
		if got := retryAfter(tc.in, pt, now); got != tc.want {
			t.Errorf("retryAfter(%q) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

func FuzzClassify(f *testing.F) {
	f.Add(200, "", []byte(`{"a":1}`), false)
	f.Add(409, "", []byte(`{"code":"x","title":"t","detail":"d"}`), false)
	f.Add(202, "Thu, 01 Jan 1970 00:00:00 GMT", []byte(nil), false)
	f.Add(503, "7", []byte("\xff\xfe\x00bad"), true)
	f.Add(999, "-1", []byte(`{"code":{"x":[1]}}`), false)
	f.Fuzz(func(t *testing.T, status int, ra string, body []byte, truncated bool) {
		h := http.Header{}
		h.Set("Retry-After", ra)
		h.Set("Location", ra)
		v := classify(status, h, body, truncated, pollTiming{def: time.Second, max: 30 * time.Second}, time.Unix(0, 0))
		if v.again {
			if v.retryAfter < MinPollInterval || v.retryAfter > 30*time.Second {
				t.Fatalf("retry after %s out of bounds", v.retryAfter)
			}
			return
		}
		switch v.outcome {
		case OutcomeSuccess:
			if len(v.output) > 0 && !json.Valid(v.output) {
				t.Fatalf("invalid output %q", v.output)
			}
		case OutcomeFailure, OutcomeRetryable:
			if v.code == "" {
				t.Fatal("failure without a code")
			}
			if len(v.code) > maxCodeLen || len(v.message) > maxMessageLen+64 {
				t.Fatalf("code or message too long: %d %d", len(v.code), len(v.message))
			}
		default:
			t.Fatalf("outcome %q", v.outcome)
		}
	})
}
