package tracing

import (
	"crypto/sha256"
	"encoding/hex"
	"regexp"
	"testing"
)

var traceparentRE = regexp.MustCompile(`^00-([0-9a-f]{32})-([0-9a-f]{16})-(0[01])$`)

func TestIDsFollowTheDocumentedDerivation(t *testing.T) {
	t.Parallel()
	const sagaID, taskID = "01JABCDEFGHJKMNPQRSTVWXYZ0", "01JABCDEFGHJKMNPQRSTVWXYZ0/charge/action/2"
	sum := func(s string, n int) string {
		h := sha256.Sum256([]byte(s))
		return hex.EncodeToString(h[:n])
	}
	if got, want := TraceID(sagaID).String(), sum("accord-trace:"+sagaID, 16); got != want {
		t.Errorf("TraceID = %s, want %s", got, want)
	}
	if got, want := SagaSpanID(sagaID).String(), sum("accord-span:"+sagaID, 8); got != want {
		t.Errorf("SagaSpanID = %s, want %s", got, want)
	}
	if got, want := AttemptSpanID(taskID).String(), sum("accord-span:"+taskID, 8); got != want {
		t.Errorf("AttemptSpanID = %s, want %s", got, want)
	}
	if TraceID("other") == TraceID(sagaID) || AttemptSpanID(taskID) == SagaSpanID(sagaID) {
		t.Error("distinct inputs share an id")
	}
}

func TestTraceparent(t *testing.T) {
	t.Parallel()
	const sagaID, taskID = "s1", "s1/a/action/1"
	for _, sampled := range []bool{false, true} {
		tp := Traceparent(sagaID, taskID, sampled)
		m := traceparentRE.FindStringSubmatch(tp)
		if m == nil {
			t.Fatalf("Traceparent(%v) = %q: not a W3C traceparent", sampled, tp)
		}
		wantFlags := map[bool]string{false: "00", true: "01"}[sampled]
		if m[1] != TraceID(sagaID).String() || m[2] != AttemptSpanID(taskID).String() || m[3] != wantFlags {
			t.Errorf("Traceparent(%v) = %q, want trace %s, parent %s, flags %s", sampled, tp, TraceID(sagaID), AttemptSpanID(taskID), wantFlags)
		}
	}
}
