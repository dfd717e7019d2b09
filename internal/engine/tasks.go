package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/accord-saga/accord/internal/saga"
	"github.com/accord-saga/accord/internal/storage"
)

// Task is one attempt of one step phase, as a worker or participant sees it.
type Task struct {
	ID         string `json:"id"`
	ClaimToken string `json:"claim_token,omitempty"`
	Queue      string `json:"queue"`
	Deliveries int    `json:"deliveries"`
	taskBody
}

// taskBody is the part of a Task stored as the task row's payload.
type taskBody struct {
	SagaID            string          `json:"saga_id"`
	Partition         int             `json:"partition"`
	Epoch             int64           `json:"epoch"`
	Definition        string          `json:"definition"`
	DefinitionVersion int             `json:"definition_version"`
	Step              string          `json:"step"`
	Phase             string          `json:"phase"`
	Attempt           int             `json:"attempt"`
	Operation         string          `json:"operation,omitempty"`
	URL               string          `json:"url,omitempty"`
	IdempotencyKey    string          `json:"idempotency_key"`
	AttemptTimeoutMS  int64           `json:"attempt_timeout_ms,omitempty"`
	DispatchedAtMS    int64           `json:"dispatched_at_ms,omitempty"`
	Input             json.RawMessage `json:"input,omitempty"`
	// Traceparent is the attempt's W3C trace context (see Config.Tracer);
	// empty without a tracer.
	Traceparent string `json:"traceparent,omitempty"`
}

// Result is a task's outcome as reported by a worker or participant.
type Result struct {
	TaskID     string
	ClaimToken string
	// Outcome is "success", "failure" (a business failure: no retry, the
	// saga compensates) or "retryable".
	Outcome      string
	Output       json.RawMessage
	ErrorCode    string
	ErrorMessage string
}

// PollParams asks for tasks of one queue.
type PollParams struct {
	Queue string
	// Max tasks to return (1..1000).
	Max int
	// Visibility is how long the tasks stay claimed without a heartbeat.
	Visibility time.Duration
	// Wait is how long to wait for a task when none is ready (long poll).
	Wait time.Duration
}

// Limits of a poll.
const (
	MaxPollTasks  = 1000
	MaxPollWait   = 60 * time.Second
	MaxVisibility = time.Hour
)

// queueSignals wakes long polls of a queue when tasks are added to it.
type queueSignals struct {
	mu sync.Mutex
	ch map[string]chan struct{}
}

func newQueueSignals() *queueSignals { return &queueSignals{ch: map[string]chan struct{}{}} }

// wait returns a channel closed at the next signal of queue.
func (q *queueSignals) wait(queue string) <-chan struct{} {
	q.mu.Lock()
	defer q.mu.Unlock()
	c, ok := q.ch[queue]
	if !ok {
		c = make(chan struct{})
		q.ch[queue] = c
	}
	return c
}

func (q *queueSignals) signal(queue string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if c, ok := q.ch[queue]; ok {
		close(c)
		delete(q.ch, queue)
	}
}

// PollTasks claims up to Max tasks of a queue, waiting up to Wait for one.
// A task claimed more than MaxDeliveries times without a result is not
// handed out again: its attempt fails as a poison task. Once the engine is
// quiesced a poll claims nothing and returns at once, empty.
func (e *Engine) PollTasks(ctx context.Context, pp PollParams) ([]Task, error) {
	if pp.Queue == "" || len(pp.Queue) > storage.MaxKeyLength || pp.Queue == PushQueue {
		return nil, fmt.Errorf("%w: queue must be 1..%d bytes and not %q", ErrInvalidInput, storage.MaxKeyLength, PushQueue)
	}
	if err := checkText("queue", pp.Queue); err != nil {
		return nil, err
	}
	if pp.Max < 1 || pp.Max > MaxPollTasks {
		return nil, fmt.Errorf("%w: max must be 1..%d", ErrInvalidInput, MaxPollTasks)
	}
	if pp.Visibility <= 0 || pp.Visibility > MaxVisibility {
		return nil, fmt.Errorf("%w: visibility must be in (0, %s]", ErrInvalidInput, MaxVisibility)
	}
	if pp.Wait < 0 || pp.Wait > MaxPollWait {
		return nil, fmt.Errorf("%w: wait must be in [0, %s]", ErrInvalidInput, MaxPollWait)
	}
	return e.claim(ctx, pp.Queue, pp.Max, pp.Visibility, pp.Wait)
}

func (e *Engine) claim(ctx context.Context, queue string, max int, visibility, wait time.Duration) ([]Task, error) {
	deadline := e.clock.Now().Add(wait)
	for {
		if e.quiescing() {
			return nil, nil // shutting down: no new work (see Quiesce)
		}
		signal := e.queues.wait(queue)
		rows, err := e.store.TaskClaim(ctx, &storage.TaskClaimParams{Queue: queue, Limit: max, Visibility: visibility})
		if err != nil {
			return nil, fmt.Errorf("engine: claim tasks: %w", err)
		}
		tasks := make([]Task, 0, len(rows))
		for _, row := range rows {
			t, err := decodeTask(row)
			if err != nil {
				e.log.Error("undecodable task; dropping it", "task", row.ID, "err", err)
				continue
			}
			if row.Deliveries > e.cfg.MaxDeliveries {
				e.poison(ctx, t)
				continue
			}
			tasks = append(tasks, t)
		}
		if len(tasks) > 0 {
			return tasks, nil
		}
		left := deadline.Sub(e.clock.Now())
		if left <= 0 {
			return nil, nil
		}
		tick := e.clock.NewTimer(min(left, e.cfg.TaskPollInterval))
		select {
		case <-ctx.Done():
			tick.Stop()
			return nil, ctx.Err()
		case <-signal:
		case <-tick.C():
		case <-e.quiesced:
		}
		tick.Stop()
	}
}

// poison fails the attempt of a task that was delivered too often without a
// result (its workers keep crashing on it).
func (e *Engine) poison(ctx context.Context, t Task) {
	e.metrics.poisonTasks.Inc()
	err := e.complete(ctx, t, Result{
		TaskID:       t.ID,
		ClaimToken:   t.ClaimToken,
		Outcome:      string(saga.OutcomeFailure),
		ErrorCode:    "poison_task",
		ErrorMessage: fmt.Sprintf("delivered %d times without a result", t.Deliveries),
	})
	if err != nil {
		e.log.Warn("fail poison task", "task", t.ID, "err", err)
	}
}

// CompleteTask records a task's result. The claim token must be the task's
// current one: a worker whose claim expired and was given to another gets
// storage.ErrTaskClaimLost. A task that is gone (its result is recorded
// already) gives ErrTaskNotFound.
func (e *Engine) CompleteTask(ctx context.Context, res Result) error {
	if res.TaskID == "" || len(res.TaskID) > storage.MaxKeyLength {
		return fmt.Errorf("%w: task id must be 1..%d bytes", ErrInvalidInput, storage.MaxKeyLength)
	}
	if err := checkText("task id", res.TaskID); err != nil {
		return err
	}
	if err := checkText("claim token", res.ClaimToken); err != nil {
		return err
	}
	switch saga.Outcome(res.Outcome) {
	case saga.OutcomeSuccess, saga.OutcomeFailure, saga.OutcomeRetryable:
	default:
		return fmt.Errorf("%w: outcome must be success, failure or retryable, got %q", ErrInvalidInput, res.Outcome)
	}
	if len(res.Output) > storage.MaxPayloadBytes/2 {
		return fmt.Errorf("%w: output larger than %d bytes", ErrInvalidInput, storage.MaxPayloadBytes/2)
	}
	if err := saga.CheckDepth(res.Output, "output"); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidInput, err)
	}
	if t, ok := e.pushes.take(res.TaskID, res.ClaimToken); ok {
		return e.complete(ctx, t, res)
	}
	row, err := e.store.TaskGet(ctx, res.TaskID)
	if errors.Is(err, storage.ErrNotFound) {
		return fmt.Errorf("%w: %s", ErrTaskNotFound, res.TaskID)
	}
	if err != nil {
		return fmt.Errorf("engine: load task: %w", err)
	}
	if row.ClaimToken != res.ClaimToken {
		return fmt.Errorf("%w: task %s", storage.ErrTaskClaimLost, res.TaskID)
	}
	t, err := decodeTask(row)
	if err != nil {
		return err
	}
	return e.complete(ctx, t, res)
}

func (e *Engine) complete(ctx context.Context, t Task, res Result) error {
	p, err := e.partitionFor(t.Partition)
	if err != nil {
		return err
	}
	in := saga.Input{
		Kind:    saga.InputStepResult,
		Step:    t.Step,
		Phase:   saga.Phase(t.Phase),
		Attempt: t.Attempt,
		Outcome: saga.Outcome(res.Outcome),
		Output:  res.Output,
	}
	if res.ErrorCode != "" || res.ErrorMessage != "" {
		in.Error = saga.ErrorInfo{Code: res.ErrorCode, Message: res.ErrorMessage}
	}
	_, err = p.call(ctx, &request{kind: reqResult, sagaID: t.SagaID, taskID: t.ID, result: &in})
	if err == nil && t.DispatchedAtMS > 0 {
		d := e.clock.Now().Sub(time.UnixMilli(t.DispatchedAtMS))
		e.metrics.stepLatency.WithLabelValues(t.Phase).Observe(max(d, 0).Seconds())
	}
	return err
}

// HeartbeatTask extends a task's claim.
func (e *Engine) HeartbeatTask(ctx context.Context, taskID, claimToken string, visibility time.Duration) error {
	if visibility <= 0 || visibility > MaxVisibility {
		return fmt.Errorf("%w: visibility must be in (0, %s]", ErrInvalidInput, MaxVisibility)
	}
	if err := checkText("task id", taskID); err != nil {
		return err
	}
	if err := checkText("claim token", claimToken); err != nil {
		return err
	}
	_, err := e.store.TaskHeartbeat(ctx, &storage.TaskHeartbeatParams{ID: taskID, ClaimToken: claimToken, Visibility: visibility})
	if err != nil {
		return fmt.Errorf("engine: heartbeat: %w", err)
	}
	return nil
}

// QueueStats returns depth and age per task queue.
func (e *Engine) QueueStats(ctx context.Context) ([]storage.QueueStats, error) {
	return e.store.TaskQueueStats(ctx)
}

func decodeTask(row storage.Task) (Task, error) {
	t := Task{ID: row.ID, ClaimToken: row.ClaimToken, Queue: row.Queue, Deliveries: row.Deliveries}
	if err := json.Unmarshal(row.Payload, &t.taskBody); err != nil {
		return Task{}, fmt.Errorf("engine: task %s payload: %w", row.ID, err)
	}
	return t, nil
}
