package worker

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/accord-saga/accord/sdk/client"
)

// reportTimeout bounds the report of one batch, retries included. Results
// are reported even while the worker shuts down, so the batch is not
// bounded by Run's context.
const reportTimeout = time.Minute

// reporter sends results in batches: whatever accumulated while the last
// request was out goes in the next one, so batches grow with the load and
// a lone result is not held back.
type reporter struct {
	c    *client.Client
	log  *slog.Logger
	in   chan client.TaskResult
	done chan struct{}
	once sync.Once
}

func newReporter(c *client.Client, log *slog.Logger) *reporter {
	r := &reporter{c: c, log: log, in: make(chan client.TaskResult, maxBatch), done: make(chan struct{})}
	go r.loop()
	return r
}

func (r *reporter) report(res client.TaskResult) { r.in <- res }

// close reports what is queued and stops; no report may follow.
func (r *reporter) close() {
	r.once.Do(func() { close(r.in) })
	<-r.done
}

func (r *reporter) loop() {
	defer close(r.done)
	batch := make([]client.TaskResult, 0, maxBatch)
	for res := range r.in {
		batch = append(batch[:0], res)
	drain:
		for len(batch) < maxBatch {
			select {
			case more, ok := <-r.in:
				if !ok {
					break drain
				}
				batch = append(batch, more)
			default:
				break drain
			}
		}
		r.send(batch)
	}
}

func (r *reporter) send(batch []client.TaskResult) {
	ctx, cancel := context.WithTimeout(context.Background(), reportTimeout)
	defer cancel()
	if len(batch) == 1 {
		r.check(batch[0].TaskID, r.c.Complete(ctx, batch[0]))
		return
	}
	st, err := r.c.CompleteBatch(ctx, batch)
	if err != nil {
		// The tasks become visible again when their claims expire, and are
		// delivered anew: the results are lost, not the work.
		r.log.Warn("worker: report results", "results", len(batch), "err", err)
		return
	}
	for _, s := range st {
		r.check(s.TaskID, s.Err)
	}
}

// check logs a result the server did not record. A lost claim or a result
// recorded already is normal under redelivery.
func (r *reporter) check(taskID string, err error) {
	switch {
	case err == nil:
	case client.IsClaimLost(err), client.IsNotFound(err):
		r.log.Debug("worker: result not recorded", "task", taskID, "err", err)
	default:
		r.log.Warn("worker: report result", "task", taskID, "err", err)
	}
}
