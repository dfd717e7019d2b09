package client

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"time"
)

// Outcomes of a task.
const (
	// OutcomeSuccess: the step phase did its work.
	OutcomeSuccess = "success"
	// OutcomeFailure: a business failure. No retry; the saga compensates.
	OutcomeFailure = "failure"
	// OutcomeRetryable: a transient failure; the attempt is retried with
	// backoff within the step's retry budget.
	OutcomeRetryable = "retryable"
)

// Task is one attempt of one step phase, claimed from a queue.
type Task struct {
	ID                string `json:"id"`
	ClaimToken        string `json:"claim_token"`
	Queue             string `json:"queue"`
	Deliveries        int    `json:"deliveries"`
	SagaID            string `json:"saga_id"`
	Partition         int    `json:"partition"`
	Epoch             int64  `json:"epoch"`
	Definition        string `json:"definition"`
	DefinitionVersion int    `json:"definition_version"`
	Step              string `json:"step"`
	// Phase is "action" or "compensation".
	Phase     string `json:"phase"`
	Attempt   int    `json:"attempt"`
	Operation string `json:"operation,omitempty"`
	// IdempotencyKey is the same for every attempt of this step phase:
	// participants deduplicate on it.
	IdempotencyKey   string          `json:"idempotency_key"`
	AttemptTimeoutMS int64           `json:"attempt_timeout_ms,omitempty"`
	Input            json.RawMessage `json:"input,omitempty"`
	// Traceparent is the attempt's W3C trace context when the server
	// traces: the saga's trace, with the attempt's span as parent.
	Traceparent string `json:"traceparent,omitempty"`
}

// PollOptions asks for tasks.
type PollOptions struct {
	// Max tasks to claim, 1..1000. Default 1.
	Max int
	// Visibility is how long the tasks stay claimed without a heartbeat.
	// Default 30s; at most 1h.
	Visibility time.Duration
	// Wait is how long the server holds the poll when no task is ready.
	// Default 0 (answer at once); at most 60s.
	Wait time.Duration
}

// TaskResult is a task's outcome.
type TaskResult struct {
	TaskID     string
	ClaimToken string
	// Outcome is OutcomeSuccess, OutcomeFailure or OutcomeRetryable.
	Outcome string
	// Output is the step's output: marshalled to JSON, or sent as is if it
	// is a json.RawMessage.
	Output       any
	ErrorCode    string
	ErrorMessage string
}

// BatchStatus is the fate of one result of CompleteBatch.
type BatchStatus struct {
	TaskID string
	// Err is nil when the result was recorded, else an *Error as the single
	// Complete would have returned.
	Err error
}

// QueueStats describes one task queue.
type QueueStats struct {
	Queue       string `json:"queue"`
	Depth       int    `json:"depth"`
	Visible     int    `json:"visible"`
	Delayed     int    `json:"delayed"`
	InFlight    int    `json:"in_flight"`
	OldestAgeMS int64  `json:"oldest_age_ms"`
}

func taskPath(id, op string) string { return "/v1/tasks/" + url.PathEscape(id) + "/" + op }

// Poll claims up to opts.Max tasks of a queue, waiting up to opts.Wait for
// one. A poll is not repeated after a lost connection (its tasks would
// stay claimed until their visibility ends); the caller polls again.
func (c *Client) Poll(ctx context.Context, queue string, opts PollOptions) ([]Task, error) {
	body := map[string]any{}
	if opts.Max > 0 {
		body["max"] = opts.Max
	}
	if opts.Visibility > 0 {
		body["visibility_ms"] = max(opts.Visibility.Milliseconds(), 1)
	}
	if opts.Wait > 0 {
		body["wait_ms"] = max(opts.Wait.Milliseconds(), 1)
	}
	var out struct {
		Tasks []Task `json:"tasks"`
	}
	cl, err := jsonCall(http.MethodPost, "/v1/queues/"+url.PathEscape(queue)+"/tasks:poll", body, retryRefused, &out)
	if err != nil {
		return nil, err
	}
	cl.timeout = opts.Wait + longPollMargin
	if _, err := c.do(ctx, cl); err != nil {
		return nil, err
	}
	return out.Tasks, nil
}

type resultBody struct {
	TaskID     string          `json:"task_id,omitempty"`
	ClaimToken string          `json:"claim_token"`
	Outcome    string          `json:"outcome"`
	Output     json.RawMessage `json:"output,omitempty"`
	Error      *ErrorInfo      `json:"error,omitempty"`
}

func encodeResult(r TaskResult, withID bool) (resultBody, error) {
	b := resultBody{ClaimToken: r.ClaimToken, Outcome: r.Outcome}
	if withID {
		b.TaskID = r.TaskID
	}
	if r.Output != nil {
		out, err := json.Marshal(r.Output)
		if err != nil {
			return b, fmt.Errorf("accord: encode output of task %s: %w", r.TaskID, err)
		}
		b.Output = out
	}
	if r.ErrorCode != "" || r.ErrorMessage != "" {
		b.Error = &ErrorInfo{Code: r.ErrorCode, Message: r.ErrorMessage}
	}
	return b, nil
}

// Complete records a task's result. IsClaimLost: the claim expired and
// another worker holds the task; IsNotFound: its result is recorded
// already (a repeat of a completion that went through).
func (c *Client) Complete(ctx context.Context, r TaskResult) error {
	body, err := encodeResult(r, false)
	if err != nil {
		return err
	}
	cl, err := jsonCall(http.MethodPost, taskPath(r.TaskID, "complete"), body, retrySafe, nil)
	if err != nil {
		return err
	}
	_, err = c.do(ctx, cl)
	return err
}

// CompleteBatch records several results in one request and reports each
// one's fate in order. The error is for the request as a whole.
func (c *Client) CompleteBatch(ctx context.Context, results []TaskResult) ([]BatchStatus, error) {
	items := make([]resultBody, len(results))
	for i, r := range results {
		b, err := encodeResult(r, true)
		if err != nil {
			return nil, err
		}
		items[i] = b
	}
	var out struct {
		Results []struct {
			TaskID  string `json:"task_id"`
			Status  int    `json:"status"`
			Problem *Error `json:"problem,omitempty"`
		} `json:"results"`
	}
	cl, err := jsonCall(http.MethodPost, "/v1/tasks:complete", map[string]any{"results": items}, retrySafe, &out)
	if err != nil {
		return nil, err
	}
	if _, err := c.do(ctx, cl); err != nil {
		return nil, err
	}
	if len(out.Results) != len(results) {
		return nil, fmt.Errorf("accord: batch completion answered %d results for %d", len(out.Results), len(results))
	}
	st := make([]BatchStatus, len(out.Results))
	for i, r := range out.Results {
		st[i].TaskID = r.TaskID
		if r.Status >= 300 {
			st[i].Err = itemError(r.Status, r.Problem)
		}
	}
	return st, nil
}

// itemError is the error of one item of a batch answer: its problem, with
// the item's status.
func itemError(status int, p *Error) *Error {
	if p == nil {
		p = &Error{Type: "about:blank"}
	}
	p.Status = status
	if p.Title == "" {
		p.Title = http.StatusText(status)
	}
	return p
}

// Heartbeat extends a task's claim to visibility from now. IsClaimLost: the
// claim expired and another worker holds the task, or it is gone; stop
// working on it.
func (c *Client) Heartbeat(ctx context.Context, taskID, claimToken string, visibility time.Duration) error {
	body := map[string]any{"claim_token": claimToken, "visibility_ms": max(visibility.Milliseconds(), 1)}
	cl, err := jsonCall(http.MethodPost, taskPath(taskID, "heartbeat"), body, retrySafe, nil)
	if err != nil {
		return err
	}
	_, err = c.do(ctx, cl)
	return err
}

// Queues returns depth, in-flight count and oldest age of every queue that
// has tasks.
func (c *Client) Queues(ctx context.Context) ([]QueueStats, error) {
	var out struct {
		Queues []QueueStats `json:"queues"`
	}
	if _, err := c.do(ctx, &call{method: http.MethodGet, path: "/v1/queues", out: &out}); err != nil {
		return nil, err
	}
	return out.Queues, nil
}
