package engine

import (
	"context"

	"github.com/accord-saga/accord/internal/storage"
)

// retentionBatch bounds one delete, so a sweep never holds the store long.
const retentionBatch = 1000

// retentionLoop deletes sagas that ended more than Retention ago, and
// expired idempotency keys.
func (e *Engine) retentionLoop(ctx context.Context) {
	t := e.clock.NewTicker(e.cfg.RetentionInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		}
		e.sweep(ctx)
	}
}

func (e *Engine) sweep(ctx context.Context) {
	now, err := e.store.Now(ctx)
	if err != nil {
		return
	}
	for ctx.Err() == nil {
		n, err := e.store.SagaDeleteEnded(ctx, &storage.SagaDeleteEndedParams{EndedBefore: now.Add(-e.cfg.Retention), Limit: retentionBatch})
		if err != nil {
			e.log.Warn("retention: delete ended sagas", "err", err)
			break
		}
		if n < retentionBatch {
			break
		}
	}
	for ctx.Err() == nil {
		n, err := e.store.IdempotencyKeyDeleteExpired(ctx, retentionBatch)
		if err != nil {
			e.log.Warn("retention: delete expired keys", "err", err)
			break
		}
		if n < retentionBatch {
			break
		}
	}
}
