package client

import (
	"context"
	"encoding/json"
	"fmt"
	"iter"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Saga statuses.
const (
	StatusRunning       = "running"
	StatusCompensating  = "compensating"
	StatusCompleted     = "completed"
	StatusCompensated   = "compensated"
	StatusCancelled     = "cancelled"
	StatusNeedsOperator = "needs_operator"
	// StatusQuarantined: the saga's stored state cannot be decoded; it
	// waits for an operator to discard it (DiscardSaga).
	StatusQuarantined = "quarantined"
	// StatusDiscarded: an operator discarded a quarantined saga.
	StatusDiscarded = "discarded"
)

// StartRequest starts a saga.
type StartRequest struct {
	Definition string
	// Version of the definition; 0 means the latest enabled version.
	Version int
	// Input is marshalled to JSON; pass a json.RawMessage to send JSON as
	// is. nil sends no input (the saga gets {}).
	Input any
	// IdempotencyKey makes the start safe to repeat: the same key returns
	// the same saga. When empty, StartSaga generates one, so that its own
	// retries never start a saga twice; set it to make your retries safe
	// too (an order id is a good key).
	IdempotencyKey string
}

// StartResult reports a start.
type StartResult struct {
	ID     string `json:"id"`
	Status string `json:"status"`
	// Created is false when the idempotency key named a saga started
	// before.
	Created bool `json:"created"`
	// IdempotencyKey is the key the start was sent with.
	IdempotencyKey string `json:"-"`
}

// Saga is a saga with its steps.
type Saga struct {
	ID                string `json:"id"`
	Definition        string `json:"definition"`
	DefinitionVersion int    `json:"definition_version"`
	Status            string `json:"status"`
	Terminal          bool   `json:"terminal"`
	Partition         int    `json:"partition"`
	Reason            string `json:"reason,omitempty"`
	FailedStep        string `json:"failed_step,omitempty"`
	Note              string `json:"note,omitempty"`
	TimedOut          bool   `json:"timed_out,omitempty"`
	// Quarantine says why a quarantined or discarded saga was set aside.
	Quarantine string          `json:"quarantine,omitempty"`
	Input      json.RawMessage `json:"input,omitempty"`
	CreatedAt  time.Time       `json:"created_at"`
	UpdatedAt  time.Time       `json:"updated_at"`
	StartedAt  time.Time       `json:"started_at,omitzero"`
	EndedAt    time.Time       `json:"ended_at,omitzero"`
	Deadline   time.Time       `json:"deadline,omitzero"`
	Steps      []Step          `json:"steps"`
}

// Step is one step of a saga.
type Step struct {
	Name           string          `json:"name"`
	Kind           string          `json:"kind"`
	Status         string          `json:"status"`
	Attempts       int             `json:"attempts"`
	OutcomeUnknown bool            `json:"outcome_unknown,omitempty"`
	LastError      *ErrorInfo      `json:"last_error,omitempty"`
	StartedAt      time.Time       `json:"started_at,omitzero"`
	EndedAt        time.Time       `json:"ended_at,omitzero"`
	NextAttemptAt  time.Time       `json:"next_attempt_at,omitzero"`
	Output         json.RawMessage `json:"output,omitempty"`
	Compensation   *Compensation   `json:"compensation,omitempty"`
}

// Compensation is a step's compensation, once it has started.
type Compensation struct {
	Attempts      int        `json:"attempts"`
	LastError     *ErrorInfo `json:"last_error,omitempty"`
	StartedAt     time.Time  `json:"started_at,omitzero"`
	EndedAt       time.Time  `json:"ended_at,omitzero"`
	NextAttemptAt time.Time  `json:"next_attempt_at,omitzero"`
}

// ErrorInfo is an error a participant reported.
type ErrorInfo struct {
	Code    string `json:"code,omitempty"`
	Message string `json:"message,omitempty"`
}

// SagaSummary is a saga in a listing.
type SagaSummary struct {
	ID                string    `json:"id"`
	Definition        string    `json:"definition"`
	DefinitionVersion int       `json:"definition_version"`
	Status            string    `json:"status"`
	Terminal          bool      `json:"terminal"`
	CreatedAt         time.Time `json:"created_at"`
	UpdatedAt         time.Time `json:"updated_at"`
	EndedAt           time.Time `json:"ended_at,omitzero"`
}

// SagaPage is a page of sagas, newest first.
type SagaPage struct {
	Items      []SagaSummary `json:"items"`
	NextCursor string        `json:"next_cursor,omitempty"`
}

// ListOptions filters and pages a saga listing.
type ListOptions struct {
	Status        []string  // any of these statuses; empty: all
	Definition    string    // only this definition
	CreatedAfter  time.Time // inclusive; zero: unbounded
	CreatedBefore time.Time // exclusive; zero: unbounded
	Cursor        string    // NextCursor of the previous page
	Limit         int       // 1..500; 0: the server's default (50)
}

// SagaEvent is one event of a saga's log.
type SagaEvent struct {
	Position          int64           `json:"position"`
	PartitionPosition int64           `json:"partition_position"`
	Type              string          `json:"type"`
	Time              time.Time       `json:"time"`
	Data              json.RawMessage `json:"data,omitempty"`
}

// EventPage is a page of a saga's log.
type EventPage struct {
	Items      []SagaEvent `json:"items"`
	NextCursor string      `json:"next_cursor,omitempty"`
}

// EventOptions pages a saga's log.
type EventOptions struct {
	Cursor string // NextCursor of the previous page
	Limit  int    // 1..1000; 0: the server's default (500)
}

func sagaPath(id string, op ...string) string {
	p := "/v1/sagas/" + url.PathEscape(id)
	for _, o := range op {
		p += "/" + o
	}
	return p
}

// StartSaga starts a saga once its start is durable on the server.
func (c *Client) StartSaga(ctx context.Context, req StartRequest) (*StartResult, error) {
	body := struct {
		Definition string          `json:"definition"`
		Version    int             `json:"version,omitempty"`
		Input      json.RawMessage `json:"input,omitempty"`
	}{Definition: req.Definition, Version: req.Version}
	if req.Input != nil {
		b, err := json.Marshal(req.Input)
		if err != nil {
			return nil, fmt.Errorf("accord: encode saga input: %w", err)
		}
		body.Input = b
	}
	key := req.IdempotencyKey
	if key == "" {
		key = newKey()
	}
	out := &StartResult{}
	cl, err := jsonCall(http.MethodPost, "/v1/sagas", body, retrySafe, out)
	if err != nil {
		return nil, err
	}
	cl.header = http.Header{"Idempotency-Key": {key}}
	if _, err := c.do(ctx, cl); err != nil {
		return nil, err
	}
	out.IdempotencyKey = key
	return out, nil
}

// GetSaga returns a saga's durable state.
func (c *Client) GetSaga(ctx context.Context, id string) (*Saga, error) {
	s := &Saga{}
	if _, err := c.do(ctx, &call{method: http.MethodGet, path: sagaPath(id), out: s}); err != nil {
		return nil, err
	}
	return s, nil
}

// ListSagas returns one page of sagas, newest first.
func (c *Client) ListSagas(ctx context.Context, opts ListOptions) (*SagaPage, error) {
	q := url.Values{}
	if len(opts.Status) > 0 {
		q.Set("status", strings.Join(opts.Status, ","))
	}
	if opts.Definition != "" {
		q.Set("definition", opts.Definition)
	}
	if !opts.CreatedAfter.IsZero() {
		q.Set("created_after", opts.CreatedAfter.Format(time.RFC3339Nano))
	}
	if !opts.CreatedBefore.IsZero() {
		q.Set("created_before", opts.CreatedBefore.Format(time.RFC3339Nano))
	}
	if opts.Cursor != "" {
		q.Set("cursor", opts.Cursor)
	}
	if opts.Limit > 0 {
		q.Set("limit", strconv.Itoa(opts.Limit))
	}
	page := &SagaPage{}
	if _, err := c.do(ctx, &call{method: http.MethodGet, path: "/v1/sagas", query: q, out: page}); err != nil {
		return nil, err
	}
	return page, nil
}

// SagaPages iterates over the pages of a saga listing, from opts.Cursor on;
// it stops after the last page or the first error.
func (c *Client) SagaPages(ctx context.Context, opts ListOptions) iter.Seq2[*SagaPage, error] {
	return func(yield func(*SagaPage, error) bool) {
		for {
			page, err := c.ListSagas(ctx, opts)
			if !yield(page, err) || err != nil || page.NextCursor == "" {
				return
			}
			opts.Cursor = page.NextCursor
		}
	}
}

// CancelSaga asks a saga to stop: it compensates what it has done and
// ends cancelled. It returns the saga as it is then. A saga past its pivot
// (IsPastPivot) or ended (IsSagaEnded) cannot be cancelled.
func (c *Client) CancelSaga(ctx context.Context, id, reason string) (*Saga, error) {
	var body any
	if reason != "" {
		body = map[string]string{"reason": reason}
	}
	s := &Saga{}
	cl, err := jsonCall(http.MethodPost, sagaPath(id, "cancel"), body, retryRefused, s)
	if err != nil {
		return nil, err
	}
	if _, err := c.do(ctx, cl); err != nil {
		return nil, err
	}
	return s, nil
}

// RetrySaga resumes a saga that needs an operator: its failed compensation
// is tried again with a fresh retry budget.
func (c *Client) RetrySaga(ctx context.Context, id string) (*Saga, error) {
	s := &Saga{}
	if _, err := c.do(ctx, &call{method: http.MethodPost, path: sagaPath(id, "retry"), retry: retryRefused, out: s}); err != nil {
		return nil, err
	}
	return s, nil
}

// DiscardSaga ends a quarantined saga (one whose stored state cannot be
// decoded); retention then removes it. Any other saga is a 409
// not-quarantined.
func (c *Client) DiscardSaga(ctx context.Context, id string) (*Saga, error) {
	s := &Saga{}
	if _, err := c.do(ctx, &call{method: http.MethodPost, path: sagaPath(id, "discard"), retry: retryRefused, out: s}); err != nil {
		return nil, err
	}
	return s, nil
}

// waitChunk is the long poll of one WaitSaga request.
const waitChunk = 30 * time.Second

// WaitSaga waits until the saga has ended or ctx is done, and returns it as
// it is then. On ctx's end it returns the last state read with ctx's error.
func (c *Client) WaitSaga(ctx context.Context, id string) (*Saga, error) {
	var last *Saga
	for {
		s := &Saga{}
		q := url.Values{"timeout": {waitChunk.String()}}
		_, err := c.do(ctx, &call{method: http.MethodGet, path: sagaPath(id, "wait"), query: q, out: s, timeout: waitChunk + longPollMargin})
		if err != nil {
			if ctx.Err() != nil {
				return last, ctx.Err()
			}
			return last, err
		}
		if s.Terminal {
			return s, nil
		}
		last = s
	}
}

// SagaEvents returns one page of a saga's log, oldest first.
func (c *Client) SagaEvents(ctx context.Context, id string, opts EventOptions) (*EventPage, error) {
	q := url.Values{}
	if opts.Cursor != "" {
		q.Set("cursor", opts.Cursor)
	}
	if opts.Limit > 0 {
		q.Set("limit", strconv.Itoa(opts.Limit))
	}
	page := &EventPage{}
	if _, err := c.do(ctx, &call{method: http.MethodGet, path: sagaPath(id, "events"), query: q, out: page}); err != nil {
		return nil, err
	}
	return page, nil
}
