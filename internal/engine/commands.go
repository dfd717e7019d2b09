package engine

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/accord-saga/accord/internal/saga"
	"github.com/accord-saga/accord/internal/storage"
)

// pushClaimGrace is added to a push task's attempt timeout for its initial
// claim: if this node dies mid-call, the task becomes visible to other
// nodes' push pollers once the attempt could no longer be running.
const pushClaimGrace = 5 * time.Second

// pushUnboundedCall is the claim given to a push attempt without an
// attempt timeout: the dispatcher still bounds every call (no remote call
// goes without a timeout), by 30s unless configured otherwise.
const pushUnboundedCall = 30 * time.Second

// commands turns the core's commands for one saga into rows of the batch's
// commit and into actions for after it.
func (w *work) commands(pd *pending, cmds []saga.Command) {
	for _, cmd := range cmds {
		switch c := cmd.(type) {
		case saga.DispatchStep:
			w.dispatch(pd, &c)
		case saga.SetTimer:
			w.timerInserts[c.TimerID] = pendingTimer{insert: storage.TimerInsert{
				ID:      c.TimerID,
				Delay:   max(c.FireAt.Sub(w.now), 0),
				Payload: []byte(pd.entry.id),
			}}
			w.timerOrder = append(w.timerOrder, c.TimerID)
			// Setting an armed timer replaces it: the commit deletes
			// before it inserts.
			w.timerDeletes[c.TimerID] = true
		case saga.CancelTimer:
			w.deleteTimer(c.TimerID)
		case saga.CancelTask:
			w.deleteTask(c.TaskID)
		case saga.Finished:
			w.finished = append(w.finished, pd)
		default:
			panic(fmt.Sprintf("engine: unknown core command %T", cmd))
		}
	}
}

func (w *work) dispatch(pd *pending, d *saga.DispatchStep) {
	body := taskBody{
		SagaID:            pd.entry.id,
		Partition:         w.p.id,
		Epoch:             w.p.epoch,
		Definition:        pd.entry.def.Name,
		DefinitionVersion: pd.entry.def.Version,
		Step:              d.Step,
		Phase:             string(d.Phase),
		Attempt:           d.Attempt,
		Operation:         d.Target.Name,
		URL:               d.Target.HTTP,
		IdempotencyKey:    d.IdempotencyKey,
		AttemptTimeoutMS:  d.AttemptTimeout.Milliseconds(),
		DispatchedAtMS:    w.now.UnixMilli(),
		Input:             d.Payload,
	}
	payload, err := json.Marshal(body)
	if err != nil {
		panic(fmt.Sprintf("engine: encode task: %v", err)) // plain data; a bug if it fails
	}
	ins := storage.TaskInsert{ID: d.TaskID, Queue: d.Target.Queue, Payload: payload}
	if d.Target.HTTP != "" {
		ins.Queue = PushQueue
		if w.p.e.cfg.Push != nil {
			// Claimed by this node from the start: it calls the endpoint
			// itself right after the commit, with no claim round trip.
			ins.ClaimToken = storage.NewToken()
			call := d.AttemptTimeout
			if call <= 0 {
				call = pushUnboundedCall
			}
			ins.ClaimFor = call + pushClaimGrace
			w.pushes = append(w.pushes, Task{ID: d.TaskID, ClaimToken: ins.ClaimToken, Queue: PushQueue, Deliveries: 1, taskBody: body})
		}
	} else {
		w.queues[ins.Queue] = true
	}
	w.taskInserts[d.TaskID] = ins
	w.taskOrder = append(w.taskOrder, d.TaskID)
	delete(w.taskDeletes, d.TaskID)
}
