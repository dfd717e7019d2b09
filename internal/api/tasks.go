package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/danielgtaylor/huma/v2"

	"github.com/accord-saga/accord/internal/engine"
)

// Task is one attempt of one step phase, handed to a pull worker.
type Task struct {
	ID                string          `json:"id"`
	ClaimToken        string          `json:"claim_token" doc:"Proves the claim: send it back with the result and heartbeats."`
	Queue             string          `json:"queue"`
	Deliveries        int             `json:"deliveries" doc:"How many times the task has been claimed, this claim included."`
	SagaID            string          `json:"saga_id"`
	Partition         int             `json:"partition"`
	Epoch             int64           `json:"epoch" doc:"Fencing epoch of the partition when the task was created."`
	Definition        string          `json:"definition"`
	DefinitionVersion int             `json:"definition_version"`
	Step              string          `json:"step"`
	Phase             string          `json:"phase" enum:"action,compensation"`
	Attempt           int             `json:"attempt"`
	Operation         string          `json:"operation,omitempty" doc:"The operation name the definition gives the step's action or compensation."`
	IdempotencyKey    string          `json:"idempotency_key" doc:"Stable across retries of this step phase: the participant deduplicates on it."`
	AttemptTimeoutMS  int64           `json:"attempt_timeout_ms,omitempty"`
	Input             json.RawMessage `json:"input,omitempty"`
	Traceparent       string          `json:"traceparent,omitempty" doc:"W3C trace context of the attempt (the saga's trace, the attempt's span as parent) when the server traces."`
}

// TaskList answers a poll.
type TaskList struct {
	Tasks []Task `json:"tasks"`
}

// QueueStats describes one task queue.
type QueueStats struct {
	Queue       string `json:"queue"`
	Depth       int    `json:"depth" doc:"Tasks waiting: visible plus delayed."`
	Visible     int    `json:"visible" doc:"Tasks ready to be claimed."`
	Delayed     int    `json:"delayed" doc:"Tasks waiting for a retry delay."`
	InFlight    int    `json:"in_flight" doc:"Tasks claimed by workers."`
	OldestAgeMS int64  `json:"oldest_age_ms" doc:"Age of the oldest visible task."`
}

// QueueList lists the queues that have tasks.
type QueueList struct {
	Queues []QueueStats `json:"queues"`
}

// TaskError is a worker's error report.
type TaskError struct {
	Code    string `json:"code,omitempty" maxLength:"256" doc:"Machine-readable code; the definition's non_retryable_errors name these."`
	Message string `json:"message,omitempty" maxLength:"8192"`
}

// TaskResult is one result in a batch completion.
type TaskResult struct {
	TaskID     string          `json:"task_id" minLength:"1" maxLength:"512"`
	ClaimToken string          `json:"claim_token" minLength:"1" maxLength:"512"`
	Outcome    string          `json:"outcome" enum:"success,failure,retryable" doc:"success; failure (business failure: no retry, the saga compensates); retryable."`
	Output     json.RawMessage `json:"output,omitempty"`
	Error      *TaskError      `json:"error,omitempty"`
}

// TaskResultStatus is the fate of one result of a batch.
type TaskResultStatus struct {
	TaskID  string   `json:"task_id"`
	Status  int      `json:"status" doc:"200 when recorded; otherwise the status the single completion would have had."`
	Problem *Problem `json:"problem,omitempty"`
}

// TaskResultStatuses answers a batch completion, in request order.
type TaskResultStatuses struct {
	Results []TaskResultStatus `json:"results"`
}

type pollInput struct {
	Queue string `path:"queue" doc:"Task queue name."`
	Body  *struct {
		Max          int    `json:"max,omitempty" minimum:"1" maximum:"1000" doc:"Most tasks to return. Default 1."`
		Visibility   string `json:"visibility,omitempty" doc:"How long the tasks stay claimed without a heartbeat (Go duration, at most 1h). Default 30s."`
		VisibilityMS int64  `json:"visibility_ms,omitempty" minimum:"1" maximum:"3600000" doc:"visibility in milliseconds."`
		Wait         string `json:"wait,omitempty" doc:"How long to wait for a task when none is ready (Go duration, at most 60s). Default 0."`
		WaitMS       int64  `json:"wait_ms,omitempty" minimum:"0" maximum:"60000" doc:"wait in milliseconds."`
	} `required:"false"`
}

type pollOutput struct {
	Body TaskList
}

type completeInput struct {
	ID   string `path:"id" doc:"Task id. Task ids contain slashes: escape each as %2F."`
	Body struct {
		ClaimToken string          `json:"claim_token" minLength:"1" maxLength:"512"`
		Outcome    string          `json:"outcome" enum:"success,failure,retryable"`
		Output     json.RawMessage `json:"output,omitempty" doc:"The step's output (success), any JSON value."`
		Error      *TaskError      `json:"error,omitempty"`
	}
}

type completeBatchInput struct {
	Body struct {
		Results []TaskResult `json:"results" minItems:"1" maxItems:"1000"`
	}
}

type completeBatchOutput struct {
	Body TaskResultStatuses
}

type heartbeatInput struct {
	ID   string `path:"id" doc:"Task id, with each slash escaped as %2F."`
	Body struct {
		ClaimToken   string `json:"claim_token" minLength:"1" maxLength:"512"`
		Visibility   string `json:"visibility,omitempty" doc:"New claim time from now (Go duration, at most 1h). Default 30s."`
		VisibilityMS int64  `json:"visibility_ms,omitempty" minimum:"1" maximum:"3600000"`
	}
}

type queuesOutput struct {
	Body QueueList
}

// Defaults of a poll and a heartbeat.
const (
	defaultVisibility = 30 * time.Second
	defaultPollMax    = 1
)

// batchParallelism bounds the completions of one batch in flight at once:
// enough for them to share partition commits, few enough that one request
// cannot crowd out the rest.
const batchParallelism = 64

func (s *server) registerTasks() {
	huma.Register(s.api, s.operation(huma.Operation{
		OperationID: "pollTasks",
		Method:      http.MethodPost,
		Path:        "/v1/queues/{queue}/tasks:poll",
		Summary:     "Claim tasks of a queue (long poll)",
		Description: "Claims up to max ready tasks, waiting up to wait for one. Each claimed task stays invisible to other " +
			"workers for visibility; heartbeat to keep it, complete it with its claim_token.",
		Tags: []string{"Tasks"},
	}, http.StatusBadRequest, http.StatusUnprocessableEntity), s.handlePoll)

	huma.Register(s.api, s.operation(huma.Operation{
		OperationID: "completeTask",
		Method:      http.MethodPost,
		Path:        "/v1/tasks/{id}/complete",
		Summary:     "Report a task's result",
		Description: "Records the result once it is durable. 409 claim-lost when the claim expired and another worker took " +
			"the task; 404 when the task's result is recorded already.",
		Tags: []string{"Tasks"},
	}, http.StatusBadRequest, http.StatusNotFound, http.StatusConflict, http.StatusUnprocessableEntity), s.handleComplete)

	huma.Register(s.api, s.operation(huma.Operation{
		OperationID: "completeTasks",
		Method:      http.MethodPost,
		Path:        "/v1/tasks:complete",
		Summary:     "Report several tasks' results",
		Description: "Records each result as POST /v1/tasks/{id}/complete would, and reports each one's status in order.",
		Tags:        []string{"Tasks"},
	}, http.StatusBadRequest, http.StatusUnprocessableEntity), s.handleCompleteBatch)

	huma.Register(s.api, s.operation(huma.Operation{
		OperationID: "heartbeatTask",
		Method:      http.MethodPost,
		Path:        "/v1/tasks/{id}/heartbeat",
		Summary:     "Extend a task's claim",
		Description: "409 claim-lost when the claim expired and another worker took the task, or the task is gone: stop working on it.",
		Tags:        []string{"Tasks"},
	}, http.StatusBadRequest, http.StatusConflict, http.StatusUnprocessableEntity), s.handleHeartbeat)

	huma.Register(s.api, s.operation(huma.Operation{
		OperationID: "listQueues",
		Method:      http.MethodGet,
		Path:        "/v1/queues",
		Summary:     "Task queue depths",
		Description: "Depth, in-flight count and oldest task age of every queue that has tasks.",
		Tags:        []string{"Tasks"},
	}), s.handleQueues)
}

func (s *server) handlePoll(ctx context.Context, in *pollInput) (*pollOutput, error) {
	pp := engine.PollParams{Queue: in.Queue, Max: defaultPollMax, Visibility: defaultVisibility}
	if b := in.Body; b != nil {
		if b.Max > 0 {
			pp.Max = b.Max
		}
		var p *Problem
		if pp.Visibility, p = duration("body.visibility", b.Visibility, b.VisibilityMS, defaultVisibility, engine.MaxVisibility, false); p != nil {
			return nil, p
		}
		if pp.Wait, p = duration("body.wait", b.Wait, b.WaitMS, 0, engine.MaxPollWait, true); p != nil {
			return nil, p
		}
	}
	tasks, err := s.eng.PollTasks(ctx, pp)
	if err != nil {
		return nil, s.problemFor(ctx, err, "path.queue")
	}
	out := &pollOutput{Body: TaskList{Tasks: make([]Task, len(tasks))}}
	for i, t := range tasks {
		out.Body.Tasks[i] = Task{
			ID: t.ID, ClaimToken: t.ClaimToken, Queue: t.Queue, Deliveries: t.Deliveries, SagaID: t.SagaID,
			Partition: t.Partition, Epoch: t.Epoch, Definition: t.Definition, DefinitionVersion: t.DefinitionVersion,
			Step: t.Step, Phase: t.Phase, Attempt: t.Attempt, Operation: t.Operation, IdempotencyKey: t.IdempotencyKey,
			AttemptTimeoutMS: t.AttemptTimeoutMS, Input: rawJSON(t.Input), Traceparent: t.Traceparent,
		}
	}
	return out, nil
}

// duration reads a duration given as a Go duration string or in
// milliseconds (not both); absent, it is def.
func duration(location, text string, ms int64, def, limit time.Duration, zeroOK bool) (time.Duration, *Problem) {
	if text != "" && ms != 0 {
		return 0, validation(location, "give %s or %s_ms, not both", location[len("body."):], location[len("body."):])
	}
	d := def
	switch {
	case text != "":
		v, err := time.ParseDuration(text)
		if err != nil {
			return 0, validation(location, "not a duration like 30s or 500ms: %q", text)
		}
		d = v
	case ms != 0:
		d = time.Duration(ms) * time.Millisecond
	}
	if d < 0 || (d == 0 && !zeroOK) || d > limit {
		lo := "(0s"
		if zeroOK {
			lo = "[0s"
		}
		return 0, validation(location, "must be in %s, %s], got %s", lo, limit, d)
	}
	return d, nil
}

func (s *server) handleComplete(ctx context.Context, in *completeInput) (*struct{}, error) {
	b := in.Body
	res := engine.Result{TaskID: in.ID, ClaimToken: b.ClaimToken, Outcome: b.Outcome, Output: b.Output}
	if b.Error != nil {
		res.ErrorCode, res.ErrorMessage = b.Error.Code, b.Error.Message
	}
	if err := s.eng.CompleteTask(ctx, res); err != nil {
		return nil, s.problemFor(ctx, err, "path.id")
	}
	return nil, nil
}

func (s *server) handleCompleteBatch(ctx context.Context, in *completeBatchInput) (*completeBatchOutput, error) {
	results := in.Body.Results
	out := &completeBatchOutput{Body: TaskResultStatuses{Results: make([]TaskResultStatus, len(results))}}
	sem := make(chan struct{}, batchParallelism)
	var wg sync.WaitGroup
	for i, r := range results {
		res := engine.Result{TaskID: r.TaskID, ClaimToken: r.ClaimToken, Outcome: r.Outcome, Output: r.Output}
		if r.Error != nil {
			res.ErrorCode, res.ErrorMessage = r.Error.Code, r.Error.Message
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			st := TaskResultStatus{TaskID: r.TaskID, Status: http.StatusOK}
			if err := s.eng.CompleteTask(ctx, res); err != nil {
				p := s.problemFor(ctx, err, fmt.Sprintf("body.results[%d].task_id", i))
				st.Status, st.Problem = p.Status, p
			}
			out.Body.Results[i] = st
		})
	}
	wg.Wait()
	return out, nil
}

func (s *server) handleHeartbeat(ctx context.Context, in *heartbeatInput) (*struct{}, error) {
	visibility, p := duration("body.visibility", in.Body.Visibility, in.Body.VisibilityMS, defaultVisibility, engine.MaxVisibility, false)
	if p != nil {
		return nil, p
	}
	if err := s.eng.HeartbeatTask(ctx, in.ID, in.Body.ClaimToken, visibility); err != nil {
		return nil, s.problemFor(ctx, err, "path.id")
	}
	return nil, nil
}

func (s *server) handleQueues(ctx context.Context, _ *struct{}) (*queuesOutput, error) {
	stats, err := s.eng.QueueStats(ctx)
	if err != nil {
		return nil, s.problemFor(ctx, err, "")
	}
	out := &queuesOutput{Body: QueueList{Queues: make([]QueueStats, len(stats))}}
	for i, q := range stats {
		out.Body.Queues[i] = QueueStats{
			Queue: q.Queue, Depth: q.Visible + q.Delayed, Visible: q.Visible, Delayed: q.Delayed,
			InFlight: q.InFlight, OldestAgeMS: q.OldestAge.Milliseconds(),
		}
	}
	return out, nil
}
