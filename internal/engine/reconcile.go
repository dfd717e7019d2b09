package engine

import (
	"context"
	"errors"

	"github.com/accord-saga/accord/internal/saga"
	"github.com/accord-saga/accord/internal/storage"
)

// reconcileWork checks that every pull task the partition's active sagas
// wait on exists in the store, and returns the work that re-creates those
// that are missing (nil if none is). A row can go missing only by a bug or
// by hand, but a saga waiting on a row that does not exist would wait for
// its attempt timeout at best, and forever without one, so the loop checks
// rather than trusts. (Timers and push attempts live in the sagas' states
// and cannot go missing.)
func (p *partition) reconcileWork() *work {
	ctx, cancel := context.WithTimeout(context.Background(), commitTimeout)
	defer cancel()
	w := newWork(p)
	repaired := 0
	for id, entry := range p.sagas {
		tasks, err := entry.state.Tasks(entry.def)
		if err != nil {
			p.e.log.Error("reconcile: tasks of saga", "saga", id, "err", err)
			continue
		}
		var cmds []saga.Command
		for _, d := range tasks {
			if d.Target.Queue == "" {
				continue
			}
			_, err := p.e.store.TaskGet(ctx, d.TaskID)
			if errors.Is(err, storage.ErrNotFound) {
				cmds = append(cmds, d)
			} else if err != nil {
				p.e.log.Warn("reconcile: load task", "task", d.TaskID, "err", err)
				return nil
			}
		}
		if len(cmds) == 0 {
			continue
		}
		pd := &pending{entry: entry, state: entry.state}
		w.touched[id] = pd
		w.order = append(w.order, id)
		w.commands(pd, cmds)
		repaired += len(cmds)
	}
	if repaired == 0 {
		return nil
	}
	p.e.log.Warn("reconcile: re-created missing tasks", "partition", p.id, "count", repaired)
	p.e.metrics.reconciled.Add(float64(repaired))
	return w
}
