package dispatch

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
)

// traceparent returns a W3C trace context header for a call of sagaID when
// no propagator supplied one. The trace id is derived from the saga id, so
// a participant's logs group every call of one saga under one trace; the
// span id is random per call. The sampled flag is off: Accord records no
// span of its own here, so nothing downstream should wait for one.
func traceparent(sagaID string) string {
	sum := sha256.Sum256([]byte("accord-saga/" + sagaID))
	traceID := sum[:16]
	if isZero(traceID) {
		// An all-zero trace id is invalid; a hash gives one with odds of
		// 2^-128, but the header must be valid whatever happens.
		traceID[15] = 1
	}
	var span [8]byte
	for {
		_, _ = rand.Read(span[:]) // never fails (crypto/rand, Go 1.24+)
		if !isZero(span[:]) {
			break
		}
	}
	return "00-" + hex.EncodeToString(traceID) + "-" + hex.EncodeToString(span[:]) + "-00"
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
