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

// Steps whose target is a bus topic publish their input as a message in
// the same commit that schedules the attempt: the message exists exactly
// when the attempt does. Once that commit is durable the loop feeds itself
// the attempt's success, as its next batch. A node that takes the
// partition over finds such an attempt in flight in the saga's state and
// feeds the success again (the message is already stored).
//
// The message's key and correlation id are the saga id, so a saga's
// messages are ordered and one saga's flow can be traced; its id is the
// attempt's idempotency key.

// topicOutput is a topic step's output.
type topicOutput struct {
	Topic     string `json:"topic"`
	MessageID string `json:"message_id"`
}

// stepPublish is a topic step's attempt waiting for its commit.
type stepPublish struct {
	sagaID string
	task   *saga.DispatchStep
}

func (w *work) dispatchTopic(pd *pending, d *saga.DispatchStep) {
	ok, err := w.p.e.topics.exists(d.Target.Topic)
	if err != nil || !ok {
		msg := fmt.Sprintf("topic %q does not exist", d.Target.Topic)
		if err != nil {
			msg = fmt.Sprintf("topic %q: %v", d.Target.Topic, err)
		}
		w.self = append(w.self, topicResult(pd.entry.id, d, saga.OutcomeRetryable, nil, &saga.ErrorInfo{Code: "topic_unavailable", Message: msg}))
		return
	}
	headers, _ := json.Marshal(map[string]string{ // strings: cannot fail
		"accord-saga-id": pd.entry.id, "accord-step": d.Step, "accord-phase": string(d.Phase),
	})
	payload := d.Payload
	if len(payload) == 0 {
		payload = json.RawMessage("null")
	}
	w.publishes = append(w.publishes, storage.MessageInput{
		Topic: d.Target.Topic, Key: pd.entry.id, ID: d.IdempotencyKey, CorrelationID: pd.entry.id,
		Headers: headers, Payload: payload,
	})
	w.stepPublishes = append(w.stepPublishes, stepPublish{sagaID: pd.entry.id, task: d})
}

// topicResult is the input that ends a topic step's attempt.
func topicResult(sagaID string, d *saga.DispatchStep, outcome saga.Outcome, output json.RawMessage, e *saga.ErrorInfo) *request {
	in := &saga.Input{Kind: saga.InputStepResult, Step: d.Step, Phase: d.Phase, Attempt: d.Attempt, Outcome: outcome, Output: output}
	if e != nil {
		in.Error = *e
	}
	return &request{kind: reqResult, sagaID: sagaID, taskID: d.TaskID, result: in}
}

func topicSuccess(sagaID string, d *saga.DispatchStep) *request {
	out, _ := json.Marshal(topicOutput{Topic: d.Target.Topic, MessageID: d.IdempotencyKey}) // strings: cannot fail
	return topicResult(sagaID, d, saga.OutcomeSuccess, out, nil)
}

// topicCache remembers which topics exist, briefly: a step's publish must
// not name a missing topic, or the whole batch's commit would fail.
type topicCache struct {
	store storage.Driver
	mu    sync.Mutex
	seen  map[string]time.Time // topic → when it was last found
}

const topicCacheTTL = 2 * time.Second

func (c *topicCache) exists(topic string) (bool, error) {
	c.mu.Lock()
	at, ok := c.seen[topic]
	c.mu.Unlock()
	if ok && time.Since(at) < topicCacheTTL {
		return true, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), commitTimeout)
	defer cancel()
	_, err := c.store.TopicGet(ctx, topic)
	if errors.Is(err, storage.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("engine: look up topic: %w", err)
	}
	c.mu.Lock()
	c.seen[topic] = time.Now()
	c.mu.Unlock()
	return true, nil
}
