package dispatch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/sony/gobreaker/v2"
)

// Deliver POSTs a bus message to a webhook through the same machinery as
// push calls: the allowlist (at connect time too), the endpoint's bulkhead
// and circuit breaker, the pooled client, no redirects. It returns the
// response status, or an error and whether trying again may help (a
// refused target will not). A 5xx, 408 or 429 counts against the
// endpoint's breaker like a failed push call; a request that fails because
// of itself (one the client refuses to send, such as a header value with a
// control character) counts neither way and is not retried.
func (p *Push) Deliver(ctx context.Context, url string, header http.Header, body []byte, timeout time.Duration) (status int, retryable bool, err error) {
	tgt, err := parseTarget(url)
	if err != nil {
		return 0, false, fmt.Errorf("dispatch: webhook target: %w", err)
	}
	if err := p.allow.checkTarget(tgt); err != nil {
		return 0, false, err
	}
	ep := p.eps.get(tgt.endpoint())
	if ep.breaker.State() == gobreaker.StateOpen {
		p.stats.circuitOpen.Add(1)
		return 0, true, fmt.Errorf("dispatch: circuit breaker open for %s", ep.key)
	}
	callCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := ep.bulk.acquire(callCtx, p.cfg.Bulkhead.MaxWait); err != nil {
		if errors.Is(err, errBulkheadFull) {
			p.stats.bulkheadFull.Add(1)
		}
		return 0, true, fmt.Errorf("dispatch: no free slot for %s: %w", ep.key, err)
	}
	defer ep.bulk.release()
	done, err := ep.breaker.Allow()
	if err != nil {
		p.stats.circuitOpen.Add(1)
		return 0, true, fmt.Errorf("dispatch: circuit breaker open for %s: %w", ep.key, err)
	}
	req, err := http.NewRequestWithContext(callCtx, http.MethodPost, tgt.url.String(), bytes.NewReader(body))
	if err != nil {
		done(errNoVerdict)
		return 0, false, fmt.Errorf("dispatch: webhook request: %w", err)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	req.Header.Set("User-Agent", p.userAgent)
	p.stats.requests.Add(1)
	resp, prog, err := p.send(req)
	if err != nil {
		v := classifySendErr(ctx, err, prog)
		done(v.breakerErr())
		if v.abandoned {
			return 0, true, fmt.Errorf("dispatch: webhook call abandoned: %w", ctx.Err())
		}
		return 0, v.outcome == OutcomeRetryable, fmt.Errorf("dispatch: webhook %s: %s", v.code, v.message)
	}
	_, _, _ = readCapped(resp.Body, p.cfg.MaxResponseBytes)
	resp.Body.Close()
	if resp.StatusCode >= 500 || resp.StatusCode == http.StatusRequestTimeout || resp.StatusCode == http.StatusTooManyRequests {
		done(errEndpointFailure)
	} else {
		done(nil)
	}
	return resp.StatusCode, false, nil
}

// Open reports whether the circuit breaker of url's endpoint is open.
func (p *Push) Open(url string) bool {
	tgt, err := parseTarget(url)
	if err != nil {
		return false
	}
	return p.eps.get(tgt.endpoint()).breaker.State() == gobreaker.StateOpen
}
