package engine

import (
	"encoding/json"
	"fmt"

	"github.com/accord-saga/accord/internal/saga"
	"github.com/accord-saga/accord/internal/storage"
)

// commands turns the core's commands for one saga into rows of the batch's
// commit and into actions for after it.
//
// Only pull tasks become rows: workers outside this process find them in
// the task table. Timers and push calls are not written anywhere of their
// own: the saga's state, committed in the same batch as the events that
// armed them, records every armed timer (State.Timers) and every attempt
// in flight (State.Tasks), and a node that takes the partition over
// re-arms and re-dispatches them from there. This keeps a step's durable
// cost to its events and its saga record.
func (w *work) commands(pd *pending, cmds []saga.Command) {
	for _, cmd := range cmds {
		switch c := cmd.(type) {
		case saga.DispatchStep:
			w.dispatch(pd, &c)
		case saga.SetTimer:
			delete(w.timerCancels, c.TimerID)
			w.timerSets[c.TimerID] = timerEntry{id: c.TimerID, sagaID: pd.entry.id, dbFireAt: c.FireAt}
		case saga.CancelTimer:
			delete(w.timerSets, c.TimerID)
			w.timerCancels[c.TimerID] = true
		case saga.CancelTask:
			w.deleteTask(c.TaskID)
		case saga.Finished:
			w.finished = append(w.finished, pd)
		default:
			panic(fmt.Sprintf("engine: unknown core command %T", cmd))
		}
	}
}

// taskFor builds what a worker or participant receives for an attempt.
func taskFor(p *partition, entry *sagaEntry, d *saga.DispatchStep, dispatchedAtMS int64) Task {
	var traceparent string
	if tr := p.e.cfg.Tracer; tr != nil {
		traceparent = tr.Traceparent(entry.id, d.TaskID)
	}
	return Task{ID: d.TaskID, Queue: d.Target.Queue, taskBody: taskBody{
		SagaID:            entry.id,
		Partition:         p.id,
		Epoch:             p.epoch,
		Definition:        entry.def.Name,
		DefinitionVersion: entry.def.Version,
		Step:              d.Step,
		Phase:             string(d.Phase),
		Attempt:           d.Attempt,
		Operation:         d.Target.Name,
		URL:               d.Target.HTTP,
		IdempotencyKey:    d.IdempotencyKey,
		AttemptTimeoutMS:  d.AttemptTimeout.Milliseconds(),
		DispatchedAtMS:    dispatchedAtMS,
		Input:             d.Payload,
		Traceparent:       traceparent,
	}}
}

func (w *work) dispatch(pd *pending, d *saga.DispatchStep) {
	if d.Target.Topic != "" {
		w.dispatchTopic(pd, d)
		return
	}
	t := taskFor(w.p, pd.entry, d, w.now.UnixMilli())
	if d.Target.HTTP != "" {
		t.Queue = PushQueue
		w.pushes = append(w.pushes, t)
		return
	}
	payload, err := json.Marshal(t.taskBody)
	if err != nil {
		panic(fmt.Sprintf("engine: encode task: %v", err)) // plain data; a bug if it fails
	}
	w.queues[t.Queue] = true
	w.taskInserts[d.TaskID] = storage.TaskInsert{ID: d.TaskID, Queue: t.Queue, Payload: payload}
	w.taskOrder = append(w.taskOrder, d.TaskID)
}
