package engine

import (
	"context"
	"time"

	"github.com/accord-saga/accord/internal/storage"
)

// pushPollInterval is how often the engine looks for push tasks that no
// dispatcher holds: their claim expired (the node that held them died, or
// its call was cut off) or they were written while no dispatcher ran.
const pushPollInterval = time.Second

// pushReclaim is the claim a re-dispatched push task gets. The saga's own
// attempt timeout decides the attempt's fate; this only keeps two nodes
// from calling the same attempt at once while one of them is working on it.
const pushReclaim = time.Minute

// pushLoop hands push tasks whose claims expired to the dispatcher. It runs
// only when a PushDispatcher is configured.
func (e *Engine) pushLoop(ctx context.Context) {
	t := time.NewTicker(pushPollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for ctx.Err() == nil {
			rows, err := e.store.TaskClaim(ctx, &storage.TaskClaimParams{Queue: PushQueue, Limit: 100, Visibility: pushReclaim})
			if err != nil {
				if ctx.Err() == nil {
					e.log.Warn("claim push tasks", "err", err)
				}
				break
			}
			for _, row := range rows {
				task, err := decodeTask(row)
				if err != nil {
					e.log.Error("undecodable push task", "task", row.ID, "err", err)
					continue
				}
				if row.Deliveries > e.cfg.MaxDeliveries {
					e.poison(ctx, task)
					continue
				}
				e.metrics.pushRedispatched.Inc()
				e.cfg.Push.Dispatch(task)
			}
			if len(rows) < 100 {
				break
			}
		}
	}
}
