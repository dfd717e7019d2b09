package dispatch

import (
	"github.com/accord-saga/accord/internal/engine"
	"github.com/accord-saga/accord/internal/tracing"
)

// traceparent returns the W3C trace context header of a call when no
// propagator supplied one: the task's own (set by the engine's tracer),
// else one with the same derived ids, not sampled. The trace id comes
// from the saga id, so a participant's logs group every call of one saga
// under one trace; the parent span id is the attempt's (package tracing).
func traceparent(t *engine.Task) string {
	if t.Traceparent != "" {
		return t.Traceparent
	}
	return tracing.Traceparent(t.SagaID, t.ID, false)
}
