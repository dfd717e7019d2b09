package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"

	"github.com/danielgtaylor/huma/v2"

	"github.com/accord-saga/accord/internal/engine"
	"github.com/accord-saga/accord/internal/saga"
	"github.com/accord-saga/accord/internal/storage"
)

// Problem types. A type never changes meaning once published: clients
// branch on it, not on the title or detail.
const (
	problemBase = "urn:accord:problem:"

	// TypeBadRequest: the request cannot be read (malformed JSON or YAML,
	// a missing body, a truncated body).
	TypeBadRequest = problemBase + "bad-request"
	// TypeValidation: the request is well formed, but a field is wrong;
	// Errors names each field.
	TypeValidation = problemBase + "validation"
	// TypeNotFound: the resource (or a resource the request names) does
	// not exist, or no route matches the path.
	TypeNotFound = problemBase + "not-found"
	// TypeMethodNotAllowed: the path exists, but not with this method;
	// the Allow header lists the methods it has.
	TypeMethodNotAllowed = problemBase + "method-not-allowed"
	// TypeNotAcceptable: no response format matches the Accept header.
	TypeNotAcceptable = problemBase + "not-acceptable"
	// TypeRequestTimeout: the client sent its body too slowly.
	TypeRequestTimeout = problemBase + "request-timeout"
	// TypeConflict: a definition name and version is registered with
	// different content.
	TypeConflict = problemBase + "conflict"
	// TypeDefinitionDisabled: the definition version named is disabled;
	// no saga starts on it until it is enabled again.
	TypeDefinitionDisabled = problemBase + "definition-disabled"
	// TypeDefinitionInUse: the definition version is not deleted while
	// unfinished sagas run on it; Errors[0].Value counts them.
	TypeDefinitionInUse = problemBase + "definition-in-use"
	// TypeSagaEnded: the saga has ended; the operation needs it running.
	TypeSagaEnded = problemBase + "saga-ended"
	// TypePastPivot: the saga's pivot has started; it can only move
	// forward and cannot be cancelled.
	TypePastPivot = problemBase + "past-pivot"
	// TypeNotNeedsOperator: an operator retry of a saga that does not
	// need an operator.
	TypeNotNeedsOperator = problemBase + "not-needs-operator"
	// TypeQuarantined: the saga is quarantined (its stored state cannot
	// be decoded); it takes no input until an operator discards it.
	TypeQuarantined = problemBase + "quarantined"
	// TypeNotQuarantined: a discard of a saga that is not quarantined.
	TypeNotQuarantined = problemBase + "not-quarantined"
	// TypeClaimLost: the task's claim expired and another worker holds
	// it; drop the result.
	TypeClaimLost = problemBase + "claim-lost"
	// TypePreconditionFailed: If-Match did not match the current ETag.
	TypePreconditionFailed = problemBase + "precondition-failed"
	// TypePayloadTooLarge: the body, or a field of it, is over its limit.
	TypePayloadTooLarge = problemBase + "payload-too-large"
	// TypeUnsupportedMediaType: the Content-Type is not one the route reads.
	TypeUnsupportedMediaType = problemBase + "unsupported-media-type"
	// TypeMisdirected: the Host header names a host this server does not
	// answer to (see --allowed-hosts).
	TypeMisdirected = problemBase + "misdirected-request"
	// TypeCrossOrigin: a browser sent a state-changing request from a web
	// origin the server does not allow (see --cors-origins).
	TypeCrossOrigin = problemBase + "cross-origin"
	// TypeIdempotencyMismatch: the Idempotency-Key was first used for a
	// different request.
	TypeIdempotencyMismatch = problemBase + "idempotency-mismatch"
	// TypeOverloaded: the server sheds load; retry after Retry-After.
	TypeOverloaded = problemBase + "overloaded"
	// TypeNotOwner: this node does not own the partition the request needs
	// (a cluster moves partitions); retry after Retry-After.
	TypeNotOwner = problemBase + "not-owner"
	// TypeUnavailable: storage or the engine cannot serve now (outage,
	// shutdown, timeout); retry after Retry-After.
	TypeUnavailable = problemBase + "unavailable"
	// TypeTopicNotFound: the event bus topic the path names does not exist.
	TypeTopicNotFound = problemBase + "topic-not-found"
	// TypeGroupNotFound: the consumer group the path names does not exist.
	TypeGroupNotFound = problemBase + "group-not-found"
	// TypeGroupExists: the consumer group exists with another
	// configuration.
	TypeGroupExists = problemBase + "group-exists"
	// TypeReceiptLost: a received message's claim is gone (acked, expired
	// and handed out again, or the message was deleted); drop the work.
	TypeReceiptLost = problemBase + "receipt-lost"
	// TypeInternal: a bug. Never caused by client input.
	TypeInternal = problemBase + "internal"
)

// retryAfterSeconds is the Retry-After of every 503: the conditions behind
// them (a full inbox, a moving partition, a database restart) usually pass
// in about a second, and clients back off further on their own.
const retryAfterSeconds = "1"

// Problem is an RFC 9457 problem details body. Every error response of the
// API is one.
type Problem struct {
	Type     string          `json:"type" doc:"Stable identifier of the kind of problem (urn:accord:problem:...)."`
	Title    string          `json:"title" doc:"Short summary of the problem type."`
	Status   int             `json:"status" doc:"HTTP status code."`
	Detail   string          `json:"detail,omitempty" doc:"What went wrong in this occurrence."`
	Instance string          `json:"instance,omitempty" doc:"The request path."`
	Errors   []ProblemDetail `json:"errors,omitempty" doc:"One entry per offending field."`

	headers http.Header
}

// ProblemDetail locates one problem in the request.
type ProblemDetail struct {
	Location string `json:"location,omitempty" doc:"Where: body.steps[2].after[0], query.limit, path.id, header.If-Match."`
	Message  string `json:"message" doc:"What is wrong there."`
	Value    any    `json:"value,omitempty" doc:"The offending value, when short."`
}

func (p *Problem) Error() string {
	if p.Detail != "" {
		return p.Title + ": " + p.Detail
	}
	return p.Title
}

// GetStatus makes Problem a huma.StatusError.
func (p *Problem) GetStatus() int { return p.Status }

// GetHeaders makes Problem a huma.HeadersError: huma sets these headers on
// the response.
func (p *Problem) GetHeaders() http.Header { return p.headers }

// ContentType makes huma send application/problem+json.
func (p *Problem) ContentType(ct string) string {
	if ct == "application/json" {
		return "application/problem+json"
	}
	return ct
}

func newProblem(status int, typ, detail string, details ...ProblemDetail) *Problem {
	p := &Problem{Type: typ, Title: http.StatusText(status), Status: status, Detail: detail, Errors: details}
	if status == http.StatusServiceUnavailable {
		p.headers = http.Header{"Retry-After": []string{retryAfterSeconds}}
	}
	return p
}

func withHeader(p *Problem, key, value string) *Problem {
	if p.headers == nil {
		p.headers = http.Header{}
	}
	p.headers.Set(key, value)
	return p
}

func validation(location, format string, args ...any) *Problem {
	msg := fmt.Sprintf(format, args...)
	return newProblem(http.StatusUnprocessableEntity, TypeValidation, location+": "+msg,
		ProblemDetail{Location: location, Message: msg})
}

func tooLarge(location string, size, limit int) *Problem {
	msg := fmt.Sprintf("%d bytes; the limit is %d", size, limit)
	return newProblem(http.StatusRequestEntityTooLarge, TypePayloadTooLarge, location+" is "+msg,
		ProblemDetail{Location: location, Message: msg})
}

// maxEchoedValue bounds a value echoed back in a ProblemDetail: a client
// that sent a megabyte of broken JSON does not need it back.
const maxEchoedValue = 128

// typeForStatus types the problems huma raises itself (unreadable bodies,
// schema validation, parameter parsing).
func typeForStatus(status int) string {
	switch status {
	case http.StatusBadRequest:
		return TypeBadRequest
	case http.StatusNotFound:
		return TypeNotFound
	case http.StatusMethodNotAllowed:
		return TypeMethodNotAllowed
	case http.StatusNotAcceptable:
		return TypeNotAcceptable
	case http.StatusRequestTimeout:
		return TypeRequestTimeout
	case http.StatusConflict:
		return TypeConflict
	case http.StatusPreconditionFailed:
		return TypePreconditionFailed
	case http.StatusRequestEntityTooLarge:
		return TypePayloadTooLarge
	case http.StatusUnsupportedMediaType:
		return TypeUnsupportedMediaType
	case http.StatusUnprocessableEntity:
		return TypeValidation
	case http.StatusServiceUnavailable:
		return TypeUnavailable
	default:
		return TypeInternal
	}
}

// humaProblem builds the problem for an error huma detects before a
// handler runs. huma reports a body it could not read (the client closed
// the connection early, or sent fewer bytes than its Content-Length) as a
// 500; that is the client's doing, so it becomes a 400.
func humaProblem(status int, msg string, errs ...error) huma.StatusError {
	if status == http.StatusInternalServerError && msg == "cannot read request body" {
		status = http.StatusBadRequest
	}
	if status == http.StatusBadRequest && msg == "validation failed" {
		msg = "malformed request"
	}
	// huma is given the limit plus one (see server.operation).
	if n, ok := strings.CutPrefix(msg, "request body is too large limit="); ok {
		if limit, err := strconv.Atoi(strings.TrimSuffix(n, " bytes")); err == nil {
			msg = fmt.Sprintf("the request body is over the limit of %d bytes", limit-1)
		}
	}
	var details []ProblemDetail
	for _, err := range errs {
		if err == nil {
			continue
		}
		d := ProblemDetail{Message: err.Error()}
		var ed *huma.ErrorDetail
		if errors.As(err, &ed) {
			d = ProblemDetail{Location: ed.Location, Message: ed.Message, Value: echoable(ed.Value)}
		}
		if strings.HasPrefix(d.Message, "invalid date/time for format") {
			d.Message = "not an RFC 3339 time, like 2024-05-01T12:00:00Z"
		}
		details = append(details, d)
	}
	return newProblem(status, typeForStatus(status), summary(msg, details), details...)
}

// summary is the detail of a problem with field errors: what went wrong,
// the first field's location and message, and how many more there are.
// A client that prints the detail and then the fields not in it shows
// each once.
func summary(what string, details []ProblemDetail) string {
	if len(details) == 0 {
		return what
	}
	first := details[0]
	detail := what + ": " + strings.TrimPrefix(first.Location+": "+first.Message, ": ")
	if len(details) > 1 {
		detail += fmt.Sprintf(" (and %d more)", len(details)-1)
	}
	return detail
}

// layerPrefix matches the package prefixes an error gathers on its way up
// ("engine: ", "sqlite: ", "storage: "): they say where an error passed,
// which the user of the API does not need.
var layerPrefix = regexp.MustCompile(`\b(?:api|bus|dispatch|engine|postgres|saga|server|sqlite|storage): `)

// userText is an error's message as the API shows it: once, without the
// layers it passed through. It changes only what is shown; handlers decide
// on errors.Is and errors.As, never on this text.
func userText(err error) string {
	parts := strings.Split(layerPrefix.ReplaceAllString(err.Error(), ""), ": ")
	out := parts[:0]
	for _, p := range parts {
		if len(out) == 0 || out[len(out)-1] != p {
			out = append(out, p)
		}
	}
	return strings.Join(out, ": ")
}

// echoable returns v if it is short enough to send back, else nil.
func echoable(v any) any {
	switch x := v.(type) {
	case nil:
		return nil
	case string:
		if len(x) > maxEchoedValue {
			return nil
		}
		return x
	case bool, int, int64, float64, json.Number:
		return x
	default:
		b, err := json.Marshal(x)
		if err != nil || len(b) > maxEchoedValue {
			return nil
		}
		return json.RawMessage(b)
	}
}

func init() {
	// huma builds its own errors through these hooks; every error the API
	// sends is then a Problem with a stable type.
	huma.NewError = humaProblem
	huma.NewErrorWithContext = func(_ huma.Context, status int, msg string, errs ...error) huma.StatusError {
		return humaProblem(status, msg, errs...)
	}
}

// problemFor maps an engine or store error to a problem. location names the
// field an ErrInvalidInput is about, as the handler knows which input the
// engine checked (body.input for a start, path.queue for a poll).
func (s *server) problemFor(ctx context.Context, err error, location string) *Problem {
	var p *Problem
	if errors.As(err, &p) {
		return p
	}
	var ve *saga.ValidationError
	var de *saga.DepthError
	var re *saga.RenderLimitError
	var inUse *storage.DefinitionInUseError
	switch {
	case errors.As(err, &de):
		return limitProblem(de, location)
	case errors.As(err, &re):
		return limitProblem(re, location)
	case errors.As(err, &ve):
		details := make([]ProblemDetail, 0, len(ve.Problems))
		for _, vp := range ve.Problems {
			loc := "body"
			if vp.Path != "" {
				loc = "body." + vp.Path
			}
			details = append(details, ProblemDetail{Location: loc, Message: vp.Message})
		}
		return newProblem(http.StatusUnprocessableEntity, TypeValidation, summary("invalid definition", details), details...)
	case errors.Is(err, engine.ErrSagaNotFound), errors.Is(err, engine.ErrDefinitionNotFound),
		errors.Is(err, engine.ErrTaskNotFound), errors.Is(err, storage.ErrNotFound):
		msg := userText(err)
		if location == "" {
			return newProblem(http.StatusNotFound, TypeNotFound, msg)
		}
		return newProblem(http.StatusNotFound, TypeNotFound, location+": "+msg, ProblemDetail{Location: location, Message: msg})
	case errors.Is(err, engine.ErrIdempotencyMismatch):
		return newProblem(http.StatusUnprocessableEntity, TypeIdempotencyMismatch, userText(err),
			ProblemDetail{Location: "header.Idempotency-Key", Message: "the key was first used for a different request"})
	case errors.Is(err, engine.ErrOverloaded):
		return newProblem(http.StatusServiceUnavailable, TypeOverloaded, "the engine is at capacity; retry later")
	case errors.Is(err, engine.ErrNotOwner):
		return newProblem(http.StatusServiceUnavailable, TypeNotOwner, userText(err))
	case errors.Is(err, engine.ErrStopped):
		return newProblem(http.StatusServiceUnavailable, TypeUnavailable, "the server is shutting down")
	case errors.As(err, &inUse):
		return newProblem(http.StatusConflict, TypeDefinitionInUse,
			fmt.Sprintf("definition %s version %d is used by %d unfinished sagas (needs_operator included); delete it once they have ended",
				inUse.Name, inUse.Version, inUse.Sagas),
			ProblemDetail{Location: "path.version", Message: "unfinished sagas run on this version", Value: inUse.Sagas})
	case errors.Is(err, engine.ErrDefinitionDisabled):
		return newProblem(http.StatusConflict, TypeDefinitionDisabled,
			"the definition version is disabled; enable it, or start the latest enabled version",
			ProblemDetail{Location: location, Message: "disabled"})
	case errors.Is(err, storage.ErrDefinitionConflict):
		return newProblem(http.StatusConflict, TypeConflict, userText(err))
	case errors.Is(err, storage.ErrTaskClaimLost):
		return newProblem(http.StatusConflict, TypeClaimLost, userText(err))
	case errors.Is(err, saga.ErrPastPivot):
		return newProblem(http.StatusConflict, TypePastPivot, userText(err))
	case errors.Is(err, saga.ErrTerminal):
		return newProblem(http.StatusConflict, TypeSagaEnded, userText(err))
	case errors.Is(err, saga.ErrNotNeedsOperator):
		return newProblem(http.StatusConflict, TypeNotNeedsOperator, userText(err))
	case errors.Is(err, engine.ErrQuarantined):
		return newProblem(http.StatusConflict, TypeQuarantined,
			"the saga is quarantined: its stored state cannot be decoded; an operator may discard it")
	case errors.Is(err, engine.ErrNotQuarantined):
		return newProblem(http.StatusConflict, TypeNotQuarantined, userText(err))
	case errors.Is(err, engine.ErrInvalidInput), errors.Is(err, storage.ErrInvalid):
		if location == "" {
			location = "body"
		}
		msg := userText(err)
		return newProblem(http.StatusUnprocessableEntity, TypeValidation, location+": "+msg,
			ProblemDetail{Location: location, Message: msg})
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return newProblem(http.StatusServiceUnavailable, TypeUnavailable, "the request timed out")
	default:
		// Storage is unreachable or failing. The detail stays generic, as
		// driver errors can name hosts and schemas.
		s.log.LogAttrs(ctx, logLevelUnavailable, "request failed", errAttr(err))
		return newProblem(http.StatusServiceUnavailable, TypeUnavailable, "storage is unavailable; retry later")
	}
}

// limitProblem reports input past one of the saga core's limits (nesting
// depth, rendered step input) in the core's words, without the layers the
// error passed through.
func limitProblem(err error, location string) *Problem {
	if location == "" {
		location = "body"
	}
	return newProblem(http.StatusUnprocessableEntity, TypeValidation, err.Error(), ProblemDetail{Location: location, Message: err.Error()})
}
