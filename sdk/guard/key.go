package guard

import (
	"fmt"
	"net/http"
	"strings"
	"unicode/utf8"
)

// Headers Accord sets on every pushed step delivery.
const (
	HeaderSagaID         = "Accord-Saga-Id"
	HeaderStep           = "Accord-Step"
	HeaderPhase          = "Accord-Phase"
	HeaderIdempotencyKey = "Idempotency-Key" // "<saga id>/<step>/<phase>"
)

// Limits on a key, the same as Accord's own: a key that Accord sends always
// fits.
const (
	MaxSagaIDLength = 200 // bytes
	MaxStepLength   = 128 // bytes
)

// Key names a step of a saga: the unit the guard records.
type Key struct {
	SagaID string
	Step   string
}

// Phase says which half of a step a delivery runs.
type Phase string

const (
	PhaseAction       Phase = "action"
	PhaseCompensation Phase = "compensation"
)

// KeyFromRequest reads the key and phase of a step that Accord pushed over
// HTTP, from the Accord-Saga-Id, Accord-Step and Accord-Phase headers. When
// the request also carries an Idempotency-Key it must agree with them.
// Malformed or missing headers give an error wrapping ErrBadKey.
func KeyFromRequest(r *http.Request) (Key, Phase, error) {
	if r == nil {
		return Key{}, "", fmt.Errorf("%w: no request", ErrBadKey)
	}
	k, phase, err := KeyFromTask(r.Header.Get(HeaderSagaID), r.Header.Get(HeaderStep), r.Header.Get(HeaderPhase))
	if err != nil {
		return Key{}, "", err
	}
	if vals := r.Header.Values(HeaderIdempotencyKey); len(vals) > 0 {
		want := k.SagaID + "/" + k.Step + "/" + string(phase)
		if len(vals) > 1 || vals[0] != want {
			return Key{}, "", fmt.Errorf("%w: %s does not match %s, %s and %s", ErrBadKey,
				HeaderIdempotencyKey, HeaderSagaID, HeaderStep, HeaderPhase)
		}
	}
	return k, phase, nil
}

// KeyFromTask builds the key and phase of a step from the fields of a task
// that a worker pulled from Accord. Malformed fields give an error wrapping
// ErrBadKey.
func KeyFromTask(sagaID, step, phase string) (Key, Phase, error) {
	k := Key{SagaID: sagaID, Step: step}
	if err := k.check(); err != nil {
		return Key{}, "", err
	}
	p := Phase(phase)
	if p != PhaseAction && p != PhaseCompensation {
		return Key{}, "", fmt.Errorf("%w: phase %q is neither %q nor %q", ErrBadKey,
			truncate(phase), PhaseAction, PhaseCompensation)
	}
	return k, p, nil
}

// check validates a key; its errors wrap ErrBadKey.
func (k Key) check() error {
	if err := checkPart("saga id", k.SagaID, MaxSagaIDLength, false); err != nil {
		return err
	}
	return checkPart("step", k.Step, MaxStepLength, true)
}

func checkPart(what, s string, limit int, noSlash bool) error {
	switch {
	case s == "":
		return fmt.Errorf("%w: %s is required", ErrBadKey, what)
	case len(s) > limit:
		return fmt.Errorf("%w: %s is %d bytes; the limit is %d", ErrBadKey, what, len(s), limit)
	case !utf8.ValidString(s):
		return fmt.Errorf("%w: %s is not valid UTF-8", ErrBadKey, what)
	case noSlash && strings.Contains(s, "/"):
		// Steps never contain '/', which is what lets Accord's
		// idempotency keys be read back from the right.
		return fmt.Errorf("%w: %s %q contains '/'", ErrBadKey, what, s)
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("%w: %s contains a control character", ErrBadKey, what)
		}
	}
	return nil
}

// truncate keeps an echoed input short in an error message.
func truncate(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	for i := max; i > 0; i-- {
		if utf8.RuneStart(s[i]) {
			return s[:i] + "…"
		}
	}
	return ""
}
