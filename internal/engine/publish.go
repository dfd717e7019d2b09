package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/accord-saga/accord/internal/storage"
)

// PublishMessage is one bus message for Publish.
type PublishMessage struct {
	Message storage.MessageInput
	// IdempotencyKey, if set, makes the publish idempotent: a message
	// published again with the same key (in the same topic and partition)
	// within DedupWindow is stored once. The bus layer routes a message by
	// its key, so a retried publish reaches the same partition.
	IdempotencyKey string
	DedupWindow    time.Duration // > 0 when IdempotencyKey is set
	// RequestHash identifies the message's content: a key used again for
	// other content is refused (ErrIdempotencyMismatch).
	RequestHash string
}

// PublishResult is what became of one PublishMessage.
type PublishResult struct {
	ID        string
	Partition int
	// Position and PublishedAt are those of the stored message; for a
	// duplicate they are unknown (zero): only the first publish's id is
	// kept with its key.
	Position    int64
	PublishedAt time.Time
	Duplicate   bool
}

// pubIdem is what a publish's idempotency key stands for.
type pubIdem struct {
	ID          string `json:"id"`
	RequestHash string `json:"request_hash"`
}

// Publish writes messages to one partition in one commit of its loop (the
// messages of one call are atomic), after checking their idempotency keys.
// The messages' topics must exist.
func (e *Engine) Publish(ctx context.Context, partition int, msgs []PublishMessage) ([]PublishResult, error) {
	if len(msgs) == 0 {
		return nil, nil
	}
	if partition < 0 || partition >= e.parts {
		return nil, fmt.Errorf("%w: partition %d out of range", ErrInvalidInput, partition)
	}
	for i, m := range msgs {
		if m.IdempotencyKey != "" && m.DedupWindow <= 0 {
			return nil, fmt.Errorf("%w: message %d: dedup window must be > 0", ErrInvalidInput, i)
		}
	}
	p, err := e.partitionFor(partition)
	if err != nil {
		return nil, err
	}
	r := &request{kind: reqPublish, publish: msgs}
	if _, err := p.call(ctx, r); err != nil {
		return nil, err
	}
	return r.published, nil
}

// publishKeyScope is the idempotency scope of a topic's publishes in one
// partition: keys of different partitions never meet, so a key reused with
// another message key is a new message, not a failed commit.
func publishKeyScope(topic string, partition int) string {
	return fmt.Sprintf("bus.publish/%d/%s", partition, topic)
}

// pubSlot is one message of a publish request: either an index into the
// batch's publishes or a duplicate's known id.
type pubSlot struct {
	idx int // into work.publishes; -1 for a duplicate of an earlier commit
	id  string
}

// applyPublish adds a publish request's messages to the batch, or answers
// it at once when it fails.
func (w *work) applyPublish(r *request) {
	slots := make([]pubSlot, len(r.publish))
	var keys []storage.IdempotencyKeyInsert
	batchKeys := map[string]cachedKey{}
	var fresh []storage.MessageInput
	for i, m := range r.publish {
		if m.IdempotencyKey == "" {
			slots[i] = pubSlot{idx: len(w.publishes) + len(fresh)}
			fresh = append(fresh, m.Message)
			continue
		}
		scope := publishKeyScope(m.Message.Topic, w.p.id)
		prior, ok, err := w.lookupCached(scope, m.IdempotencyKey, batchKeys)
		if err != nil {
			w.reply(r, reply{err: err})
			return
		}
		if ok {
			var pi pubIdem
			if err := json.Unmarshal(prior.result, &pi); err != nil {
				w.reply(r, reply{err: fmt.Errorf("engine: stored publish key: %w", err)})
				return
			}
			if pi.RequestHash != m.RequestHash {
				w.reply(r, reply{err: fmt.Errorf("%w: key %q", ErrIdempotencyMismatch, m.IdempotencyKey)})
				return
			}
			slots[i] = pubSlot{idx: prior.idx, id: pi.ID}
			continue
		}
		idx := len(w.publishes) + len(fresh)
		res, _ := json.Marshal(pubIdem{ID: m.Message.ID, RequestHash: m.RequestHash}) // two strings: cannot fail
		batchKeys[cacheKey(scope, m.IdempotencyKey)] = cachedKey{result: res, idx: idx}
		keys = append(keys, storage.IdempotencyKeyInsert{Scope: scope, Key: m.IdempotencyKey, Result: res, TTL: m.DedupWindow})
		slots[i] = pubSlot{idx: idx}
		fresh = append(fresh, m.Message)
	}
	// The request is valid as a whole: only now does it join the batch.
	w.publishes = append(w.publishes, fresh...)
	w.keys = append(w.keys, keys...)
	for k, v := range batchKeys {
		w.batchKeys[k] = v
	}
	w.pubReplies = append(w.pubReplies, pubReply{r: r, slots: slots})
}

// pubReply is a publish request waiting for its commit's positions.
type pubReply struct {
	r     *request
	slots []pubSlot
}

// published fills in every publish request's results from the commit's
// stored messages, before the replies go out, and queues the results of
// the batch's topic steps for the loop's next batch.
func (w *work) published(stored []storage.Message) {
	w.p.self = append(w.p.self, w.self...)
	for _, sp := range w.stepPublishes {
		w.p.self = append(w.p.self, topicSuccess(sp.sagaID, sp.task))
	}
	for _, pr := range w.pubReplies {
		out := make([]PublishResult, len(pr.slots))
		for i, s := range pr.slots {
			if s.idx < 0 || s.idx >= len(stored) {
				out[i] = PublishResult{ID: s.id, Partition: w.p.id, Duplicate: true}
				continue
			}
			m := stored[s.idx]
			out[i] = PublishResult{ID: m.ID, Partition: m.Partition, Position: m.Position, PublishedAt: m.PublishedAt, Duplicate: s.id != ""}
		}
		pr.r.published = out
		w.reply(pr.r, reply{})
	}
	if len(stored) > 0 && w.p.e.cfg.OnPublish != nil {
		topics := map[string]bool{}
		for _, m := range stored {
			topics[m.Topic] = true
		}
		for t := range topics {
			w.p.e.cfg.OnPublish(t)
		}
	}
}

// failPublishes answers every publish request of a batch whose commit
// failed.
func (w *work) failPublishes(err error) {
	for _, pr := range w.pubReplies {
		w.reply(pr.r, reply{err: err})
	}
}

// AnyPartition returns one of the partitions this node runs, round robin,
// for a message that any partition may take.
func (e *Engine) AnyPartition() (int, error) {
	p, err := e.anyPartition()
	if err != nil {
		return 0, err
	}
	return p.id, nil
}

// Owns reports whether this node runs a partition now.
func (e *Engine) Owns(partition int) bool {
	e.mu.RLock()
	defer e.mu.RUnlock()
	_, ok := e.owned[partition]
	return ok
}
