package tracing

import (
	"crypto/sha256"
	"encoding/hex"

	"go.opentelemetry.io/otel/trace"
)

// TraceID is the trace id of every span and call of a saga: the first 16
// bytes of sha256("accord-trace:" + sagaID).
func TraceID(sagaID string) trace.TraceID {
	sum := sha256.Sum256([]byte("accord-trace:" + sagaID))
	var id trace.TraceID
	copy(id[:], sum[:16])
	if !id.IsValid() {
		// An all-zero id is invalid; a hash gives one with odds of 2^-128,
		// but the id must be valid whatever happens.
		id[15] = 1
	}
	return id
}

// SagaSpanID is the span id of a saga's root span: the first 8 bytes of
// sha256("accord-span:" + sagaID).
func SagaSpanID(sagaID string) trace.SpanID { return spanID("accord-span:" + sagaID) }

// AttemptSpanID is the span id of one attempt of a step phase, named by its
// task id (saga/step/phase/attempt): the first 8 bytes of
// sha256("accord-span:" + taskID).
func AttemptSpanID(taskID string) trace.SpanID { return spanID("accord-span:" + taskID) }

func spanID(s string) trace.SpanID {
	sum := sha256.Sum256([]byte(s))
	var id trace.SpanID
	copy(id[:], sum[:8])
	if !id.IsValid() {
		id[7] = 1
	}
	return id
}

// Traceparent returns the W3C traceparent header value of an attempt: the
// saga's trace id, the attempt's span id as the parent, and the sampled
// flag.
func Traceparent(sagaID, taskID string, sampled bool) string {
	tid, sid := TraceID(sagaID), AttemptSpanID(taskID)
	var b [55]byte // 00-<32 hex>-<16 hex>-<2 hex>
	copy(b[:], "00-")
	hex.Encode(b[3:35], tid[:])
	b[35] = '-'
	hex.Encode(b[36:52], sid[:])
	copy(b[52:], "-00")
	if sampled {
		b[54] = '1'
	}
	return string(b[:])
}
