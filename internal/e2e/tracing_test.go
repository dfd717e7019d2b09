package e2e

import (
	"compress/gzip"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/accord-saga/accord/internal/tracing"
)

// collector is a fake OTLP/HTTP collector that keeps the spans it gets.
type collector struct {
	mu       sync.Mutex
	spans    []*tracepb.Span
	services []string
}

func (c *collector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/v1/traces" {
		http.Error(w, "not an OTLP traces export", http.StatusNotFound)
		return
	}
	var body io.Reader = r.Body
	if r.Header.Get("Content-Encoding") == "gzip" {
		gz, err := gzip.NewReader(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		body = gz
	}
	data, err := io.ReadAll(body)
	var req coltracepb.ExportTraceServiceRequest
	if err == nil {
		err = proto.Unmarshal(data, &req)
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	c.mu.Lock()
	for _, rs := range req.ResourceSpans {
		for _, kv := range rs.GetResource().GetAttributes() {
			if kv.Key == "service.name" {
				c.services = append(c.services, kv.GetValue().GetStringValue())
			}
		}
		for _, ss := range rs.ScopeSpans {
			c.spans = append(c.spans, ss.Spans...)
		}
	}
	c.mu.Unlock()
	out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(out)
}

// traceparents is a push participant that records the traceparent of
// every call, and answers the first call 503 (retryable).
type traceparents struct {
	mu   sync.Mutex
	seen []string
}

func (p *traceparents) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	p.seen = append(p.seen, r.Header.Get("Accord-Task-Id")+" "+r.Header.Get("traceparent"))
	first := len(p.seen) == 1
	p.mu.Unlock()
	if first {
		http.Error(w, "busy", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte(`{"ok":true}`))
}

// TestTracingExportsOverOTLP: a server started with --otlp-endpoint
// exports the saga's spans to the collector (flushed at shutdown), and
// every push call names, as its parent, an attempt span it exported.
func TestTracingExportsOverOTLP(t *testing.T) {
	t.Parallel()
	col := &collector{}
	colURL := pushServer(t, col)
	part := &traceparents{}
	partURL := pushServer(t, part)
	srv := startServer(t, t.TempDir(), "--otlp-endpoint", colURL)
	c := srv.client(t)
	def := fmt.Sprintf(`name: e2e_traced
version: 1
steps:
  - name: reserve
    action: {http: %q, name: reserve}
    compensation: {http: %q, name: release}
    attempt_timeout: 5s
    retry: {initial_interval: 20ms, max_attempts: 3}
`, partURL, partURL)
	if _, _, err := c.RegisterDefinition(context.Background(), []byte(def), "application/yaml"); err != nil {
		t.Fatal(err)
	}
	id := startMany(t, c, "e2e_traced", 1)[0]
	waitAll(t, c, []string{id}, "completed")
	srv.stop(t) // flushes the spans

	traceID := tracing.TraceID(id)
	col.mu.Lock()
	defer col.mu.Unlock()
	byID := map[string]*tracepb.Span{}
	var names []string
	for _, s := range col.spans {
		if hex.EncodeToString(s.TraceId) != traceID.String() {
			t.Errorf("span %q in trace %x, want the saga's %s", s.Name, s.TraceId, traceID)
			continue
		}
		byID[hex.EncodeToString(s.SpanId)] = s
		names = append(names, s.Name)
	}
	if len(byID) != 3 {
		t.Fatalf("spans %v, want the saga and two attempts", names)
	}
	root := byID[tracing.SagaSpanID(id).String()]
	if root == nil || root.Name != "saga e2e_traced" || len(root.ParentSpanId) != 0 || root.StartTimeUnixNano > root.EndTimeUnixNano {
		t.Fatalf("no root saga span among %v", names)
	}
	if len(col.services) == 0 || col.services[0] != "accord" {
		t.Errorf("service.name %v, want accord", col.services)
	}
	part.mu.Lock()
	defer part.mu.Unlock()
	if len(part.seen) != 2 {
		t.Fatalf("participant saw %v, want two attempts", part.seen)
	}
	for i, seen := range part.seen {
		taskID, tp, _ := strings.Cut(seen, " ")
		if want := tracing.Traceparent(id, taskID, true); tp != want {
			t.Errorf("call %d: traceparent %q, want %q", i, tp, want)
		}
		span := byID[tracing.AttemptSpanID(taskID).String()]
		if span == nil {
			t.Errorf("call %d (%s): its parent span was not exported (spans %v)", i, taskID, names)
			continue
		}
		if span.Name != "action reserve" || hex.EncodeToString(span.ParentSpanId) != tracing.SagaSpanID(id).String() ||
			span.StartTimeUnixNano > span.EndTimeUnixNano {
			t.Errorf("call %d: span %q parent %x [%d, %d]", i, span.Name, span.ParentSpanId, span.StartTimeUnixNano, span.EndTimeUnixNano)
		}
		wantCode := tracepb.Status_STATUS_CODE_UNSET
		if i == 0 {
			wantCode = tracepb.Status_STATUS_CODE_ERROR
		}
		if span.GetStatus().GetCode() != wantCode {
			t.Errorf("call %d: span status %v, want %v", i, span.GetStatus(), wantCode)
		}
	}
}
