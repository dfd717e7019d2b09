package dispatch

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Outcomes of a call, as the engine records them.
const (
	OutcomeSuccess   = "success"
	OutcomeFailure   = "failure"
	OutcomeRetryable = "retryable"
	// OutcomeAbandoned is reported to Config.Observe only: the call ended
	// without a result (shutdown, or still working at the attempt timeout)
	// and the task stays claimed.
	OutcomeAbandoned = "abandoned"
)

// Error codes set by the dispatcher. Participants' own codes (a problem
// body's "code") pass through unchanged; status-derived codes are
// "http_<status>".
const (
	CodeTimeout          = "timeout"            // retryable: no response within the attempt timeout (unknown outcome once the request was written)
	CodeConnectionError  = "connection_error"   // retryable: connect, write or read failed
	CodeTLSError         = "tls_error"          // retryable: TLS handshake or certificate failed
	CodeCircuitOpen      = "circuit_open"       // retryable: the endpoint's breaker rejects calls
	CodeBulkheadFull     = "bulkhead_full"      // retryable: no free slot within the bulkhead wait
	CodeInvalidResponse  = "invalid_response"   // retryable: an unknown status; unknown outcome: a 2xx whose body is not JSON
	CodeTargetNotAllowed = "target_not_allowed" // failure: the allowlist refuses the target
	CodeInvalidTarget    = "invalid_target"     // failure: the task's URL is not a usable http(s) URL
	CodeInvalidTask      = "invalid_task"       // failure: the task cannot be sent (bad input JSON, bad header value)
	CodeResponseTooLarge = "response_too_large" // unknown outcome: a 2xx body over the size cap
)

// Limits on what a participant's response may put into a result.
const (
	maxCodeLen    = 128
	maxMessageLen = 1024
	maxSnippetLen = 256
)

// verdict is what one HTTP exchange means for the task.
type verdict struct {
	outcome string // an Outcome*; "" when again is set
	output  json.RawMessage
	code    string
	message string
	// again: 202 Accepted, call again after retryAfter.
	again      bool
	retryAfter time.Duration
	// endpointFailure counts against the endpoint's breaker.
	endpointFailure bool
	// abandoned: no result is reported, the task stays claimed.
	abandoned bool
	// unknown: the participant may have acted and its answer does not say
	// how it ended (no answer in time; a 2xx whose body is malformed, over
	// the cap or cut off). Such an outcome must not be reported as a
	// failure: a failed step is not compensated, and its effect may have
	// happened. See Push.handle.
	unknown bool
	// noVerdict: the exchange says nothing about the endpoint's health.
	noVerdict bool
}

// breakerErr is the value reported to the endpoint's breaker.
func (v verdict) breakerErr() error {
	switch {
	case v.abandoned || v.noVerdict:
		return errNoVerdict
	case v.endpointFailure:
		return errEndpointFailure
	}
	return nil
}

// pollTiming bounds the wait between calls of an attempt answered 202.
type pollTiming struct {
	def, max time.Duration
}

// classify maps a response to a verdict (see the package documentation for
// the protocol). body holds at most the size cap; truncated says more was
// sent. It never panics, whatever the input.
func classify(status int, h http.Header, body []byte, truncated bool, pt pollTiming, now time.Time) verdict {
	switch {
	case status == http.StatusAccepted:
		return verdict{again: true, retryAfter: retryAfter(h.Get("Retry-After"), pt, now)}
	case status >= 200 && status < 300:
		if truncated {
			return verdict{outcome: OutcomeRetryable, code: CodeResponseTooLarge, unknown: true,
				message: fmt.Sprintf("HTTP %d response body exceeds the push size cap", status)}
		}
		trimmed := bytes.TrimSpace(body)
		if status == http.StatusNoContent || len(trimmed) == 0 {
			return verdict{outcome: OutcomeSuccess}
		}
		if !json.Valid(trimmed) {
			return verdict{outcome: OutcomeRetryable, code: CodeInvalidResponse, unknown: true,
				message: fmt.Sprintf("HTTP %d response body is not JSON: %s", status, snippet(trimmed))}
		}
		return verdict{outcome: OutcomeSuccess, output: json.RawMessage(bytes.Clone(trimmed))}
	case status == http.StatusConflict || status == http.StatusUnprocessableEntity:
		code, msg := problem(body)
		if code == "" {
			code = statusCode(status)
		}
		if msg == "" {
			msg = statusMessage(status)
		}
		return verdict{outcome: OutcomeFailure, code: code, message: msg}
	case status == http.StatusTooManyRequests || status >= 500 && status < 600:
		return verdict{outcome: OutcomeRetryable, code: statusCode(status), message: errorMessage(status, body), endpointFailure: true}
	case status == http.StatusRequestTimeout:
		return verdict{outcome: OutcomeRetryable, code: statusCode(status), message: errorMessage(status, body)}
	case status >= 300 && status < 400:
		msg := fmt.Sprintf("HTTP %d redirect not followed: push targets must answer at their registered URL", status)
		if loc := h.Get("Location"); loc != "" {
			msg += "; Location: " + clean(loc, maxSnippetLen)
		}
		return verdict{outcome: OutcomeFailure, code: statusCode(status), message: msg}
	case status >= 400 && status < 500:
		return verdict{outcome: OutcomeFailure, code: statusCode(status), message: errorMessage(status, body)}
	default:
		return verdict{outcome: OutcomeRetryable, code: CodeInvalidResponse,
			message: fmt.Sprintf("unexpected HTTP status %d", status)}
	}
}

// retryAfter reads a Retry-After header: delay-seconds or an HTTP date.
// Missing or unreadable gives the default; the result is clamped to
// [MinPollInterval, max].
func retryAfter(v string, pt pollTiming, now time.Time) time.Duration {
	d := pt.def
	v = strings.TrimSpace(v)
	if v != "" {
		if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
			if secs >= 0 {
				// Clamp before converting: a huge value must not overflow.
				d = time.Duration(min(secs, int64(pt.max/time.Second)+1)) * time.Second
			}
		} else if at, err := http.ParseTime(v); err == nil {
			d = at.Sub(now)
		}
	}
	return min(max(d, MinPollInterval), max(pt.max, MinPollInterval))
}

// problem reads an RFC 9457 problem body leniently: fields of the wrong
// type are ignored. code is empty unless the body carries a usable one.
func problem(body []byte) (code, msg string) {
	var p map[string]any
	if err := json.Unmarshal(body, &p); err != nil {
		return "", ""
	}
	str := func(k string) string {
		s, _ := p[k].(string)
		return clean(s, maxMessageLen)
	}
	if c := str("code"); validCode(c) {
		code = c
	}
	title, detail := str("title"), str("detail")
	switch {
	case title != "" && detail != "":
		msg = title + ": " + detail
	case detail != "":
		msg = detail
	default:
		msg = title
	}
	if msg == "" {
		msg = str("type")
	}
	return code, clean(msg, maxMessageLen)
}

// validCode accepts participant error codes that definitions can match:
// letters, digits and _ . : - only.
func validCode(s string) bool {
	if s == "" || len(s) > maxCodeLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == ':' || c == '-') {
			return false
		}
	}
	return true
}

func statusCode(status int) string { return "http_" + strconv.Itoa(status) }

func statusMessage(status int) string {
	if text := http.StatusText(status); text != "" {
		return fmt.Sprintf("HTTP %d %s", status, text)
	}
	return fmt.Sprintf("HTTP %d", status)
}

// errorMessage describes an error response, preferring a problem body's
// title and detail, else a snippet of the body.
func errorMessage(status int, body []byte) string {
	if _, msg := problem(body); msg != "" {
		return statusMessage(status) + ": " + msg
	}
	if s := snippet(bytes.TrimSpace(body)); s != "" {
		return statusMessage(status) + ": " + s
	}
	return statusMessage(status)
}

func snippet(b []byte) string {
	if len(b) > maxSnippetLen {
		b = b[:maxSnippetLen]
	}
	return clean(string(b), maxSnippetLen)
}

// clean makes participant text safe for a result and a log line: valid
// UTF-8, no control characters, at most n bytes.
func clean(s string, n int) string {
	if len(s) > n {
		s = s[:n]
	}
	s = strings.ToValidUTF8(s, "")
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	return strings.TrimSpace(s)
}
