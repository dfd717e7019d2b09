package tracing_test

import (
	"context"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/accord-saga/accord/internal/api"
	"github.com/accord-saga/accord/internal/tracing"
	"github.com/accord-saga/accord/sdk/client"
	"github.com/accord-saga/accord/sdk/worker"
)

const pullDef = `
name: pulled
version: 1
steps:
  - name: ship
    action: {queue: shipping, name: book}
    compensation: {queue: shipping, name: cancel}
`

// TestWorkerSpansNestUnderTheAttempt: a pull worker gets the attempt's
// traceparent through the API and the SDK; a span the participant starts
// from it (with its own tracer, as a participant would) is a child of the
// attempt span Accord emits.
func TestWorkerSpansNestUnderTheAttempt(t *testing.T) {
	t.Parallel()
	tr, exp := newTracer(t, tracing.Config{})
	store, _ := openStore(t)
	e, _ := newEngine(t, store, tr, nil)
	if _, _, err := e.RegisterDefinition(context.Background(), []byte(pullDef)); err != nil {
		t.Fatalf("register: %v", err)
	}
	srv := httptest.NewServer(api.New(api.Config{Engine: e, Store: store, Logger: quietLogger()}))
	t.Cleanup(srv.Close)
	c, err := client.New(srv.URL, client.WithHTTPClient(srv.Client()))
	if err != nil {
		t.Fatal(err)
	}

	// The participant's own tracing: another provider, another exporter.
	partExp := tracetest.NewInMemoryExporter()
	part := sdktrace.NewTracerProvider(sdktrace.WithSyncer(partExp))
	t.Cleanup(func() { _ = part.Shutdown(context.Background()) })
	var mu sync.Mutex
	var seen []string
	w := worker.New(c, worker.Options{Concurrency: 1, PollWait: time.Second, Logger: quietLogger()})
	w.Handle("shipping", "book", func(ctx context.Context, task *worker.Task) (any, error) {
		mu.Lock()
		seen = append(seen, task.ID+" "+task.Traceparent)
		mu.Unlock()
		ctx = propagation.TraceContext{}.Extract(ctx, propagation.MapCarrier{"traceparent": task.Traceparent})
		_, span := part.Tracer("participant").Start(ctx, "book shipment")
		span.End()
		return map[string]bool{"booked": true}, nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("worker: %v", err)
		}
	})

	res, err := e.StartSaga(context.Background(), engineStart("pulled"))
	if err != nil {
		t.Fatal(err)
	}
	id := res.SagaID
	if s := waitEnd(t, e, id); s.Status != "completed" {
		t.Fatalf("saga %s", s.Status)
	}
	taskID := id + "/ship/action/1"
	mu.Lock()
	if want := taskID + " " + tracing.Traceparent(id, taskID, true); len(seen) != 1 || seen[0] != want {
		t.Errorf("worker saw %q, want [%q]", seen, want)
	}
	mu.Unlock()

	ps := partExp.GetSpans()
	if len(ps) != 1 {
		t.Fatalf("participant spans %v", names(ps))
	}
	got := byName(t, spans(t, tr, exp))
	attempt, ok := got["action ship #1"]
	if !ok {
		t.Fatalf("no attempt span among %v", names(exp.GetSpans()))
	}
	if ps[0].SpanContext.TraceID() != tracing.TraceID(id) || ps[0].Parent.SpanID() != attempt.SpanContext.SpanID() {
		t.Errorf("participant span %s parent %s, want trace %s under the attempt span %s",
			ps[0].SpanContext.TraceID(), ps[0].Parent.SpanID(), tracing.TraceID(id), attempt.SpanContext.SpanID())
	}
}
