package client

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Defaults of a Client.
const (
	DefaultTimeout    = 30 * time.Second
	DefaultRetries    = 3
	DefaultMinBackoff = 100 * time.Millisecond
	DefaultMaxBackoff = 5 * time.Second
)

// maxResponseBytes bounds a response body the client reads.
const maxResponseBytes = 64 << 20

// longPollMargin is added to a long poll's own wait for its request
// timeout: the server answers at the end of the wait, plus its work.
const longPollMargin = 15 * time.Second

// Client calls an Accord server's HTTP API. It is safe for concurrent use.
type Client struct {
	base       string
	hc         *http.Client
	timeout    time.Duration
	retries    int
	minBackoff time.Duration
	maxBackoff time.Duration
	userAgent  string
}

// Option configures a Client.
type Option func(*Client)

// WithHTTPClient sets the HTTP client. Default: a client with its own
// pooled transport. Its Timeout, if set, bounds long polls too; prefer
// WithTimeout.
func WithHTTPClient(hc *http.Client) Option { return func(c *Client) { c.hc = hc } }

// WithTimeout bounds each attempt of an ordinary call (long polls bound
// themselves by their wait). Default 30s.
func WithTimeout(d time.Duration) Option { return func(c *Client) { c.timeout = d } }

// WithRetries sets how often a call is retried when the server is
// unavailable (503, honoring Retry-After) or, for calls that are safe to
// repeat, unreachable. 0 disables retries. Default 3.
func WithRetries(n int) Option { return func(c *Client) { c.retries = max(n, 0) } }

// WithBackoff sets the first and the longest wait between retries; waits
// double with full jitter. Default 100ms and 5s.
func WithBackoff(first, longest time.Duration) Option {
	return func(c *Client) { c.minBackoff, c.maxBackoff = first, longest }
}

// WithUserAgent sets the User-Agent header.
func WithUserAgent(ua string) Option { return func(c *Client) { c.userAgent = ua } }

// New returns a client of the server at baseURL (like
// http://127.0.0.1:7780).
func New(baseURL string, opts ...Option) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("accord: server URL %q: want http(s)://host[:port]", baseURL)
	}
	c := &Client{
		base:       strings.TrimRight(u.String(), "/"),
		timeout:    DefaultTimeout,
		retries:    DefaultRetries,
		minBackoff: DefaultMinBackoff,
		maxBackoff: DefaultMaxBackoff,
		userAgent:  "accord-go-client/1",
	}
	for _, o := range opts {
		o(c)
	}
	if c.hc == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConnsPerHost = 64 // workers poll and complete concurrently
		c.hc = &http.Client{Transport: tr}
	}
	if c.minBackoff <= 0 {
		c.minBackoff = DefaultMinBackoff
	}
	c.maxBackoff = max(c.maxBackoff, c.minBackoff)
	return c, nil
}

// BaseURL returns the server URL the client calls.
func (c *Client) BaseURL() string { return c.base }

// retryPolicy says when a call may be sent again.
type retryPolicy int

const (
	// retrySafe: the call may be repeated (reads, keyed or content-addressed
	// writes): retry on 502/503/504 and on connection errors.
	retrySafe retryPolicy = iota
	// retryRefused: retry only when the server refused the call before
	// doing anything (503 overloaded or not-owner).
	retryRefused
)

// call is one API call.
type call struct {
	method      string
	path        string // escaped
	query       url.Values
	body        []byte
	contentType string
	header      http.Header
	retry       retryPolicy
	timeout     time.Duration // per attempt; 0: the client's
	out         any           // decodes a 2xx JSON body, if set
}

// result is a successful answer.
type result struct {
	status int
	header http.Header
}

func jsonCall(method, path string, in any, retry retryPolicy, out any) (*call, error) {
	c := &call{method: method, path: path, retry: retry, out: out}
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, fmt.Errorf("accord: encode %s %s: %w", method, path, err)
		}
		c.body, c.contentType = b, "application/json"
	}
	return c, nil
}

// do sends a call, retrying as its policy allows.
func (c *Client) do(ctx context.Context, cl *call) (result, error) {
	for attempt := 0; ; attempt++ {
		res, body, err := c.once(ctx, cl)
		if err == nil {
			if cl.out != nil && len(body) > 0 && res.status != http.StatusNotModified {
				if err := json.Unmarshal(body, cl.out); err != nil {
					return res, fmt.Errorf("accord: decode %s %s: %w", cl.method, cl.path, err)
				}
			}
			return res, nil
		}
		if ctx.Err() != nil || attempt >= c.retries || !retryable(cl.retry, err) {
			return res, err
		}
		wait := c.backoff(attempt)
		if e, ok := problemOf(err); ok && e.RetryAfter > 0 {
			wait = min(e.RetryAfter, 30*time.Second)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return res, err
		case <-t.C:
		}
	}
}

func retryable(p retryPolicy, err error) bool {
	e, ok := problemOf(err)
	if !ok {
		return p == retrySafe && errors.Is(err, errTransport)
	}
	if e.Status == http.StatusServiceUnavailable && (e.Type == ProblemOverloaded || e.Type == ProblemNotOwner) {
		return true
	}
	return p == retrySafe && (e.Status == http.StatusBadGateway || e.Status == http.StatusServiceUnavailable || e.Status == http.StatusGatewayTimeout)
}

// backoff is the wait before retry attempt+1: exponential with full
// jitter.
func (c *Client) backoff(attempt int) time.Duration {
	d := c.minBackoff << min(attempt, 20)
	if d <= 0 || d > c.maxBackoff {
		d = c.maxBackoff
	}
	return time.Duration(rand.Int64N(int64(d)) + 1)
}

func (c *Client) once(ctx context.Context, cl *call) (result, []byte, error) {
	timeout := cl.timeout
	if timeout == 0 {
		timeout = c.timeout
	}
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	u := c.base + cl.path
	if len(cl.query) > 0 {
		u += "?" + cl.query.Encode()
	}
	var body io.Reader
	if cl.body != nil {
		body = bytes.NewReader(cl.body)
	}
	req, err := http.NewRequestWithContext(ctx, cl.method, u, body)
	if err != nil {
		return result{}, nil, fmt.Errorf("accord: %s %s: %w", cl.method, cl.path, err)
	}
	for k, vs := range cl.header {
		req.Header[k] = vs
	}
	if cl.contentType != "" {
		req.Header.Set("Content-Type", cl.contentType)
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.userAgent)
	res, err := c.hc.Do(req)
	if err != nil {
		return result{}, nil, fmt.Errorf("%w: %s %s: %w", errTransport, cl.method, cl.path, err)
	}
	defer res.Body.Close()
	data, err := io.ReadAll(io.LimitReader(res.Body, maxResponseBytes))
	if err != nil {
		return result{}, nil, fmt.Errorf("%w: %s %s: read response: %w", errTransport, cl.method, cl.path, err)
	}
	r := result{status: res.StatusCode, header: res.Header}
	if res.StatusCode >= 400 {
		return r, nil, problemFrom(res, data)
	}
	return r, data, nil
}

// problemFrom reads an error answer; one that is not a problem document
// (a proxy's page) still becomes an *Error.
func problemFrom(res *http.Response, body []byte) *Error {
	e := &Error{}
	if err := json.Unmarshal(body, e); err != nil || e.Type == "" {
		detail := strings.TrimSpace(string(body))
		if len(detail) > 200 {
			detail = detail[:200] + "..."
		}
		e = &Error{Type: "about:blank", Detail: detail}
	}
	e.Status = res.StatusCode
	if e.Title == "" {
		e.Title = http.StatusText(res.StatusCode)
	}
	e.RetryAfter = parseRetryAfter(res.Header.Get("Retry-After"))
	return e
}

func parseRetryAfter(v string) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil && s >= 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(time.Until(t), 0)
	}
	return 0
}

// newKey returns a random idempotency key.
func newKey() string {
	var b [16]byte
	_, _ = crand.Read(b[:]) // crypto/rand.Read never fails
	return hex.EncodeToString(b[:])
}
