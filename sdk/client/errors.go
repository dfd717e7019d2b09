package client

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// Problem types the server sends (the type field of a problem document).
// They are stable: branch on them, not on titles or details.
const (
	ProblemBadRequest           = "urn:accord:problem:bad-request"
	ProblemValidation           = "urn:accord:problem:validation"
	ProblemNotFound             = "urn:accord:problem:not-found"
	ProblemMethodNotAllowed     = "urn:accord:problem:method-not-allowed"
	ProblemConflict             = "urn:accord:problem:conflict"
	ProblemSagaEnded            = "urn:accord:problem:saga-ended"
	ProblemPastPivot            = "urn:accord:problem:past-pivot"
	ProblemNotNeedsOperator     = "urn:accord:problem:not-needs-operator"
	ProblemClaimLost            = "urn:accord:problem:claim-lost"
	ProblemPreconditionFailed   = "urn:accord:problem:precondition-failed"
	ProblemPayloadTooLarge      = "urn:accord:problem:payload-too-large"
	ProblemUnsupportedMediaType = "urn:accord:problem:unsupported-media-type"
	ProblemIdempotencyMismatch  = "urn:accord:problem:idempotency-mismatch"
	ProblemOverloaded           = "urn:accord:problem:overloaded"
	ProblemNotOwner             = "urn:accord:problem:not-owner"
	ProblemUnavailable          = "urn:accord:problem:unavailable"
	ProblemInternal             = "urn:accord:problem:internal"
	ProblemTopicNotFound        = "urn:accord:problem:topic-not-found"
	ProblemGroupNotFound        = "urn:accord:problem:group-not-found"
	ProblemGroupExists          = "urn:accord:problem:group-exists"
	ProblemReceiptLost          = "urn:accord:problem:receipt-lost"
	ProblemDefinitionDisabled   = "urn:accord:problem:definition-disabled"
	ProblemDefinitionInUse      = "urn:accord:problem:definition-in-use"
)

// Error is an error answer of the server: its RFC 9457 problem document.
// Test for kinds with errors.Is against the Err* sentinels, or with the
// Is* helpers.
type Error struct {
	Status   int           `json:"status"`
	Type     string        `json:"type"`
	Title    string        `json:"title"`
	Detail   string        `json:"detail,omitempty"`
	Instance string        `json:"instance,omitempty"`
	Errors   []ErrorDetail `json:"errors,omitempty"`
	// RetryAfter is the server's Retry-After, if it sent one.
	RetryAfter time.Duration `json:"-"`
}

// ErrorDetail locates one problem in the request: Location is like
// body.steps[2].after[0], query.limit or header.If-Match.
type ErrorDetail struct {
	Location string `json:"location,omitempty"`
	Message  string `json:"message"`
	Value    any    `json:"value,omitempty"`
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "accord: %d %s", e.Status, e.Title)
	if e.Detail != "" {
		b.WriteString(": ")
		b.WriteString(e.Detail)
	}
	for i, d := range e.Errors {
		if i == 3 {
			fmt.Fprintf(&b, " (and %d more)", len(e.Errors)-3)
			break
		}
		if d.Location != "" && !strings.Contains(e.Detail, d.Location+": "+d.Message) {
			fmt.Fprintf(&b, "; %s: %s", d.Location, d.Message)
		}
	}
	return b.String()
}

// Sentinels for errors.Is. An *Error matches the sentinel of its kind.
var (
	ErrNotFound           = errors.New("accord: not found")
	ErrConflict           = errors.New("accord: conflict")
	ErrClaimLost          = errors.New("accord: task claim lost")
	ErrReceiptLost        = errors.New("accord: message receipt lost")
	ErrInvalid            = errors.New("accord: invalid request")
	ErrPreconditionFailed = errors.New("accord: precondition failed")
	ErrUnavailable        = errors.New("accord: server unavailable")
)

// Is matches the sentinel of the error's kind: ErrNotFound (404),
// ErrConflict (409, claim-lost and receipt-lost included), ErrClaimLost,
// ErrReceiptLost, ErrInvalid (400,
// 413, 415, 422), ErrPreconditionFailed (412), ErrUnavailable (5xx).
func (e *Error) Is(target error) bool {
	switch target {
	case ErrNotFound:
		return e.Status == http.StatusNotFound
	case ErrConflict:
		return e.Status == http.StatusConflict
	case ErrClaimLost:
		return e.Type == ProblemClaimLost
	case ErrReceiptLost:
		return e.Type == ProblemReceiptLost
	case ErrInvalid:
		switch e.Status {
		case http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusUnsupportedMediaType, http.StatusUnprocessableEntity:
			return true
		}
	case ErrPreconditionFailed:
		return e.Status == http.StatusPreconditionFailed
	case ErrUnavailable:
		return e.Status >= 500
	}
	return false
}

func problemOf(err error) (*Error, bool) {
	var e *Error
	ok := errors.As(err, &e)
	return e, ok
}

func hasType(err error, typ string) bool {
	e, ok := problemOf(err)
	return ok && e.Type == typ
}

// IsNotFound reports whether the resource (or one the request named) does
// not exist.
func IsNotFound(err error) bool { return errors.Is(err, ErrNotFound) }

// IsConflict reports a 409: a definition version registered with other
// content, a saga that has ended or is past its pivot, a lost task claim.
func IsConflict(err error) bool { return errors.Is(err, ErrConflict) }

// IsClaimLost reports that a task's claim expired and another worker holds
// it: drop the result.
func IsClaimLost(err error) bool { return errors.Is(err, ErrClaimLost) }

// IsReceiptLost reports that a received message's claim is gone (acked,
// expired and handed to another consumer, or deleted): drop the work.
func IsReceiptLost(err error) bool { return errors.Is(err, ErrReceiptLost) }

// IsInvalid reports that the request itself was refused (malformed, invalid
// fields, too large); the Errors of the *Error name the fields.
func IsInvalid(err error) bool { return errors.Is(err, ErrInvalid) }

// IsPreconditionFailed reports that an If-Match did not match.
func IsPreconditionFailed(err error) bool { return errors.Is(err, ErrPreconditionFailed) }

// IsUnavailable reports that the server could not serve (overloaded,
// shutting down, storage down) or could not be reached at all.
func IsUnavailable(err error) bool {
	return errors.Is(err, ErrUnavailable) || errors.Is(err, errTransport)
}

// IsIdempotencyMismatch reports that an idempotency key was first used for
// a different request.
func IsIdempotencyMismatch(err error) bool { return hasType(err, ProblemIdempotencyMismatch) }

// IsSagaEnded reports that the saga has ended and the operation needs it
// running.
func IsSagaEnded(err error) bool { return hasType(err, ProblemSagaEnded) }

// IsPastPivot reports that the saga's pivot has started, so it cannot be
// cancelled.
func IsPastPivot(err error) bool { return hasType(err, ProblemPastPivot) }

// IsDefinitionDisabled reports that the definition version a start named
// is disabled.
func IsDefinitionDisabled(err error) bool { return hasType(err, ProblemDefinitionDisabled) }

// IsDefinitionInUse reports that a definition version was not deleted
// because unfinished sagas run on it; DefinitionInUseCount says how many.
func IsDefinitionInUse(err error) bool { return hasType(err, ProblemDefinitionInUse) }

// DefinitionInUseCount returns how many unfinished sagas kept a definition
// version from being deleted, and whether err says so.
func DefinitionInUseCount(err error) (int, bool) {
	var e *Error
	if !errors.As(err, &e) || e.Type != ProblemDefinitionInUse || len(e.Errors) == 0 {
		return 0, false
	}
	n, ok := e.Errors[0].Value.(float64) // a JSON number
	return int(n), ok
}

// errTransport marks errors of the connection (no answer at all).
var errTransport = errors.New("accord: cannot reach the server")
