package guard

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestKeyFromRequest(t *testing.T) {
	t.Parallel()
	req := func(h map[string]string) *http.Request {
		r := httptest.NewRequest(http.MethodPost, "/charge", nil)
		for k, v := range h {
			r.Header.Set(k, v)
		}
		return r
	}
	ok := map[string]string{
		HeaderSagaID: "order/2024/1", HeaderStep: "charge", HeaderPhase: "compensation",
		HeaderIdempotencyKey: "order/2024/1/charge/compensation",
	}
	k, phase, err := KeyFromRequest(req(ok))
	if err != nil || k != (Key{SagaID: "order/2024/1", Step: "charge"}) || phase != PhaseCompensation {
		t.Fatalf("KeyFromRequest = %+v, %q, %v", k, phase, err)
	}
	if k.String() != "order/2024/1/charge" {
		t.Errorf("String() = %q", k.String())
	}
	noIdem := map[string]string{HeaderSagaID: "s", HeaderStep: "a", HeaderPhase: "action"}
	if k, phase, err := KeyFromRequest(req(noIdem)); err != nil || k != (Key{"s", "a"}) || phase != PhaseAction {
		t.Fatalf("without Idempotency-Key: %+v, %q, %v", k, phase, err)
	}

	with := func(name, value string) map[string]string {
		h := map[string]string{}
		for k, v := range ok {
			h[k] = v
		}
		if value == "" {
			delete(h, name)
		} else {
			h[name] = value
		}
		return h
	}
	for name, h := range map[string]map[string]string{
		"no saga id":              with(HeaderSagaID, ""),
		"no step":                 with(HeaderStep, ""),
		"no phase":                with(HeaderPhase, ""),
		"unknown phase":           with(HeaderPhase, "undo"),
		"phase in capitals":       with(HeaderPhase, "ACTION"),
		"step with a slash":       with(HeaderStep, "a/b"),
		"idempotency key differs": with(HeaderIdempotencyKey, "order/2024/1/charge/action"),
		"saga id too long":        with(HeaderSagaID, strings.Repeat("s", MaxSagaIDLength+1)),
		"step too long":           with(HeaderStep, strings.Repeat("a", MaxStepLength+1)),
		"saga id not UTF-8":       with(HeaderSagaID, "\xff"),
		"control in saga id":      with(HeaderSagaID, "a\tb"),
	} {
		if _, _, err := KeyFromRequest(req(h)); !errors.Is(err, ErrBadKey) {
			t.Errorf("%s: %v; want ErrBadKey", name, err)
		}
	}
	twice := req(ok)
	twice.Header.Add(HeaderIdempotencyKey, "other")
	if _, _, err := KeyFromRequest(twice); !errors.Is(err, ErrBadKey) {
		t.Errorf("two idempotency keys: %v; want ErrBadKey", err)
	}
	if _, _, err := KeyFromRequest(nil); !errors.Is(err, ErrBadKey) {
		t.Errorf("nil request: %v; want ErrBadKey", err)
	}
}

func TestKeyFromTaskLimits(t *testing.T) {
	t.Parallel()
	saga, step := strings.Repeat("é", MaxSagaIDLength/2), strings.Repeat("a", MaxStepLength)
	if _, _, err := KeyFromTask(saga, step, "action"); err != nil {
		t.Errorf("keys at the limits: %v", err)
	}
	_, _, err := KeyFromTask("s", "a", strings.Repeat("é", 100))
	if !errors.Is(err, ErrBadKey) || len(err.Error()) > 200 {
		t.Errorf("long bad phase: %v; want a short ErrBadKey", err)
	}
}

// FuzzKeyFromTask: any input gives a valid key or ErrBadKey, never a panic,
// and a valid key's idempotency key reads back to it.
func FuzzKeyFromTask(f *testing.F) {
	f.Add("order-1", "charge", "action")
	f.Add("a/b/c", "x", "compensation")
	f.Add("", "", "")
	f.Add("s\x00", "a/", "\xff")
	f.Fuzz(func(t *testing.T, saga, step, phase string) {
		k, p, err := KeyFromTask(saga, step, phase)
		if err != nil {
			if !errors.Is(err, ErrBadKey) {
				t.Fatalf("error %v does not wrap ErrBadKey", err)
			}
			return
		}
		r := httptest.NewRequest(http.MethodPost, "/", nil)
		r.Header[HeaderSagaID] = []string{saga}
		r.Header[HeaderStep] = []string{step}
		r.Header[HeaderPhase] = []string{phase}
		r.Header[HeaderIdempotencyKey] = []string{saga + "/" + step + "/" + phase}
		k2, p2, err := KeyFromRequest(r)
		if err != nil || k2 != k || p2 != p {
			t.Fatalf("KeyFromRequest = %+v, %q, %v; KeyFromTask gave %+v, %q", k2, p2, err, k, p)
		}
	})
}
