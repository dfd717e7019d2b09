package engine

import (
	"sync"

	"github.com/accord-saga/accord/internal/storage"
)

// pushTracker remembers the push attempts this node has handed to its
// dispatcher and not yet heard back from. Push attempts have no task row:
// the saga's state says which attempt is in flight, and a node that takes
// a partition over dispatches them again from there. The tracker is what
// lets a result find its way back without a row: the attempt's partition
// and saga, and the claim token the dispatcher must present.
type pushTracker struct {
	e        *Engine
	mu       sync.Mutex
	inFlight map[string]Task
}

func newPushTracker(e *Engine) *pushTracker {
	return &pushTracker{e: e, inFlight: map[string]Task{}}
}

// dispatch hands an attempt to the dispatcher. Without one, the attempt is
// left to its timeout, and the saga retries or rolls back. Once the engine
// is quiesced nothing is handed out (see Engine.Quiesce).
func (t *pushTracker) dispatch(task Task) {
	push := t.e.cfg.Push
	if t.e.quiescing() {
		// Shutting down: the attempt is recorded as in flight and the
		// partition's next owner dispatches it again from the store.
		t.e.log.Debug("shutting down: push attempt left for the partition's next owner", "task", task.ID, "url", task.URL)
		return
	}
	if push == nil {
		t.e.log.Warn("push step but no push dispatcher; the attempt will time out", "task", task.ID, "url", task.URL)
		return
	}
	task.ClaimToken = storage.NewToken()
	task.Deliveries = 1
	t.mu.Lock()
	t.inFlight[task.ID] = task
	t.mu.Unlock()
	push.Dispatch(task)
}

// take returns and forgets the attempt a result is for, if this node
// dispatched it and the token matches.
func (t *pushTracker) take(id, token string) (Task, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	task, ok := t.inFlight[id]
	if !ok || task.ClaimToken != token {
		return Task{}, false
	}
	delete(t.inFlight, id)
	return task, true
}

// forget drops an attempt whose outcome no longer matters (it timed out);
// a late result for it is then refused.
func (t *pushTracker) forget(id string) {
	t.mu.Lock()
	delete(t.inFlight, id)
	t.mu.Unlock()
}

// forgetPartition drops the attempts of a partition this node no longer
// runs: their results could not be recorded here.
func (t *pushTracker) forgetPartition(partition int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for id, task := range t.inFlight {
		if task.Partition == partition {
			delete(t.inFlight, id)
		}
	}
}
