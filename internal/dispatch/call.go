package dispatch

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/accord-saga/accord/internal/engine"
	"github.com/accord-saga/accord/internal/redact"
)

// callBody is the JSON body of a push call (see the package documentation).
type callBody struct {
	TaskID            string          `json:"task_id"`
	SagaID            string          `json:"saga_id"`
	Definition        string          `json:"definition"`
	DefinitionVersion int             `json:"definition_version"`
	Step              string          `json:"step"`
	Phase             string          `json:"phase"`
	Attempt           int             `json:"attempt"`
	Operation         string          `json:"operation"`
	IdempotencyKey    string          `json:"idempotency_key"`
	Input             json.RawMessage `json:"input"`
	// Deadline is when the attempt times out (RFC 3339), if the step has
	// an attempt timeout.
	Deadline string `json:"deadline,omitempty"`
}

// call is one task's attempt, ready to send (again, after a 202).
type call struct {
	task     *engine.Task
	tgt      target
	body     []byte
	deadline string // RFC 3339 with milliseconds; "" when the task has no attempt timeout
}

func encodeBody(t *engine.Task, deadline string) ([]byte, error) {
	in := t.Input
	if len(bytes.TrimSpace(in)) == 0 {
		in = json.RawMessage("null")
	}
	b, err := json.Marshal(callBody{
		TaskID:            t.ID,
		SagaID:            t.SagaID,
		Definition:        t.Definition,
		DefinitionVersion: t.DefinitionVersion,
		Step:              t.Step,
		Phase:             t.Phase,
		Attempt:           t.Attempt,
		Operation:         t.Operation,
		IdempotencyKey:    t.IdempotencyKey,
		Input:             in,
		Deadline:          deadline,
	})
	if err != nil {
		return nil, fmt.Errorf("dispatch: encode call body: %w", err)
	}
	return b, nil
}

// checkHeaderValues refuses task fields that cannot travel in a header:
// the transport would reject them on every attempt.
func checkHeaderValues(t *engine.Task) error {
	for _, f := range []struct{ name, v string }{
		{"idempotency key", t.IdempotencyKey},
		{"saga id", t.SagaID},
		{"step", t.Step},
		{"phase", t.Phase},
	} {
		for i := 0; i < len(f.v); i++ {
			if c := f.v[i]; c < 0x20 && c != '\t' || c == 0x7f {
				return fmt.Errorf("dispatch: task %s: %s holds a control character", t.ID, f.name)
			}
		}
	}
	return nil
}

func (p *Push) newRequest(ctx context.Context, c *call) (*http.Request, error) {
	t := c.task
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.tgt.url.String(), bytes.NewReader(c.body))
	if err != nil {
		return nil, fmt.Errorf("dispatch: build request: %w", err)
	}
	h := req.Header
	h.Set("Content-Type", "application/json")
	h.Set("Accept", "application/json, application/problem+json")
	h.Set("User-Agent", p.userAgent)
	h.Set("Idempotency-Key", t.IdempotencyKey)
	h.Set("Accord-Task-Id", t.ID)
	h.Set("Accord-Saga-Id", t.SagaID)
	h.Set("Accord-Step", t.Step)
	h.Set("Accord-Phase", t.Phase)
	h.Set("Accord-Attempt", strconv.Itoa(t.Attempt))
	h.Set("Accord-Epoch", strconv.FormatInt(t.Epoch, 10))
	if c.deadline != "" {
		h.Set("Accord-Deadline", c.deadline)
	}
	if p.cfg.Propagate != nil {
		p.cfg.Propagate(ctx, *t, h)
	}
	if h.Get("traceparent") == "" {
		h.Set("traceparent", traceparent(t))
	}
	return req, nil
}

// exchange performs one HTTP request of an attempt through the endpoint's
// bulkhead and breaker. ctx is the worker's context (cancelled when the
// dispatcher stops hard); callCtx bounds the attempt.
func (p *Push) exchange(ctx, callCtx context.Context, ep *endpoint, c *call) verdict {
	// Fail fast on an open breaker without queueing for a slot.
	if ep.breaker.State() == gobreaker.StateOpen {
		p.stats.circuitOpen.Add(1)
		return verdict{outcome: OutcomeRetryable, code: CodeCircuitOpen, message: "circuit breaker open for " + ep.key}
	}
	if err := ep.bulk.acquire(callCtx, p.cfg.Bulkhead.MaxWait); err != nil {
		switch {
		case ctx.Err() != nil:
			return verdict{abandoned: true}
		case errors.Is(err, errBulkheadFull):
			p.stats.bulkheadFull.Add(1)
			return verdict{outcome: OutcomeRetryable, code: CodeBulkheadFull,
				message: fmt.Sprintf("no free slot for %s within %s (%d calls in flight)", ep.key, p.cfg.Bulkhead.MaxWait, p.cfg.Bulkhead.MaxConcurrent)}
		default:
			return verdict{outcome: OutcomeRetryable, code: CodeTimeout, message: "attempt timed out waiting for a slot for " + ep.key}
		}
	}
	defer ep.bulk.release()
	done, err := ep.breaker.Allow()
	if err != nil {
		p.stats.circuitOpen.Add(1)
		return verdict{outcome: OutcomeRetryable, code: CodeCircuitOpen, message: "circuit breaker open for " + ep.key + ": " + err.Error()}
	}
	v := p.roundTrip(ctx, callCtx, c)
	done(v.breakerErr())
	return v
}

func (p *Push) roundTrip(ctx, callCtx context.Context, c *call) verdict {
	req, err := p.newRequest(callCtx, c)
	if err != nil {
		return verdict{outcome: OutcomeFailure, code: CodeInvalidTask, message: err.Error(), noVerdict: true}
	}
	p.stats.requests.Add(1)
	resp, prog, err := p.send(req)
	if err != nil {
		return classifySendErr(ctx, err, prog)
	}
	defer resp.Body.Close()
	data, truncated, err := readCapped(resp.Body, p.cfg.MaxResponseBytes)
	if err != nil && !truncated {
		v := classifyErr(ctx, err)
		if !v.abandoned {
			v.message = fmt.Sprintf("HTTP %d: reading the response body: %s", resp.StatusCode, v.message)
			// A 2xx cut off: the participant acted, or said it did.
			v.unknown = v.unknown || resp.StatusCode >= 200 && resp.StatusCode < 300
		}
		return v
	}
	return classify(resp.StatusCode, resp.Header, data, truncated, p.poll, time.Now())
}

// progress is how far a request got.
type progress struct {
	// asked: it asked for a connection. The client refuses some requests
	// before that (a header value it will not send, for one): such a
	// failure is the request's own, and says nothing of the endpoint.
	asked bool
	// wrote: it was written out in full, so the participant may act on it.
	wrote bool
}

// send performs req and reports how far it got.
func (p *Push) send(req *http.Request) (*http.Response, progress, error) {
	var asked, wrote atomic.Bool
	trace := &httptrace.ClientTrace{
		GetConn:      func(string) { asked.Store(true) },
		WroteRequest: func(i httptrace.WroteRequestInfo) { wrote.Store(i.Err == nil) },
	}
	resp, err := p.client.Do(req.WithContext(httptrace.WithClientTrace(req.Context(), trace)))
	return resp, progress{asked: asked.Load(), wrote: wrote.Load()}, err
}

// classifySendErr maps a failed send. A request the client refused before
// it asked for a connection (and not for want of time) failed because of
// itself: a failure of the task that the breaker does not count. A timeout
// leaves the outcome unknown only if the request was written out: before
// that the participant cannot have acted.
func classifySendErr(ctx context.Context, err error, prog progress) verdict {
	if !prog.asked && ctx.Err() == nil && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
		return verdict{outcome: OutcomeFailure, code: CodeInvalidTask, message: errText(err), noVerdict: true}
	}
	v := classifyErr(ctx, err)
	v.unknown = v.unknown && prog.wrote
	return v
}

// readCapped reads at most max bytes of r; truncated reports that r held
// more. A body over the cap is not drained: closing it drops the connection
// rather than reading an unbounded stream.
func readCapped(r io.Reader, max int64) (data []byte, truncated bool, err error) {
	data, err = io.ReadAll(io.LimitReader(r, max+1))
	if int64(len(data)) > max {
		return data[:max], true, nil
	}
	return data, false, err
}

// classifyErr maps a failed request to a verdict.
func classifyErr(ctx context.Context, err error) verdict {
	if ctx.Err() != nil {
		return verdict{abandoned: true}
	}
	if errors.Is(err, ErrTargetNotAllowed) {
		return verdict{outcome: OutcomeFailure, code: CodeTargetNotAllowed, message: errText(err), noVerdict: true}
	}
	var netErr net.Error
	if errors.Is(err, context.DeadlineExceeded) || errors.As(err, &netErr) && netErr.Timeout() {
		return verdict{outcome: OutcomeRetryable, code: CodeTimeout, message: errText(err), endpointFailure: true, unknown: true}
	}
	var (
		verifyErr   *tls.CertificateVerificationError
		recordErr   tls.RecordHeaderError
		alertErr    tls.AlertError
		unknownErr  x509.UnknownAuthorityError
		hostnameErr x509.HostnameError
		invalidErr  x509.CertificateInvalidError
	)
	if errors.As(err, &verifyErr) || errors.As(err, &recordErr) || errors.As(err, &alertErr) ||
		errors.As(err, &unknownErr) || errors.As(err, &hostnameErr) || errors.As(err, &invalidErr) {
		return verdict{outcome: OutcomeRetryable, code: CodeTLSError, message: errText(err), endpointFailure: true}
	}
	return verdict{outcome: OutcomeRetryable, code: CodeConnectionError, message: errText(err), endpointFailure: true}
}

// errText is the message of a failed call. The URL an HTTP client error
// quotes is masked: it may carry a token.
func errText(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		masked := *ue
		masked.URL = redact.URL(ue.URL)
		err = &masked
	}
	return clean(err.Error(), maxMessageLen)
}
