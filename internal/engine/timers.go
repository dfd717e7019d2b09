package engine

import (
	"container/heap"
	"time"

	"github.com/accord-saga/accord/internal/clock"
)

// timerEntry is a durable timer the loop holds in memory so it can fire on
// time without polling. Deadlines are in database time; the loop converts
// with its estimate of the offset between the database clock and its own.
type timerEntry struct {
	id       string
	sagaID   string
	dbFireAt time.Time
	index    int
}

// timerHeap is a min-heap of timers by fire time with removal by id.
type timerHeap struct {
	items []*timerEntry
	byID  map[string]*timerEntry
}

func newTimerHeap() *timerHeap { return &timerHeap{byID: map[string]*timerEntry{}} }

func (h *timerHeap) Len() int { return len(h.items) }
func (h *timerHeap) Less(i, j int) bool {
	return h.items[i].dbFireAt.Before(h.items[j].dbFireAt)
}
func (h *timerHeap) Swap(i, j int) {
	h.items[i], h.items[j] = h.items[j], h.items[i]
	h.items[i].index = i
	h.items[j].index = j
}
func (h *timerHeap) Push(x any) {
	t := x.(*timerEntry)
	t.index = len(h.items)
	h.items = append(h.items, t)
}
func (h *timerHeap) Pop() any {
	n := len(h.items)
	t := h.items[n-1]
	h.items[n-1] = nil
	h.items = h.items[:n-1]
	return t
}

func (h *timerHeap) push(t timerEntry) {
	if old, ok := h.byID[t.id]; ok {
		old.dbFireAt = t.dbFireAt
		heap.Fix(h, old.index)
		return
	}
	e := &t
	h.byID[t.id] = e
	heap.Push(h, e)
}

func (h *timerHeap) remove(id string) {
	if e, ok := h.byID[id]; ok {
		heap.Remove(h, e.index)
		delete(h.byID, id)
	}
}

func (h *timerHeap) peek() *timerEntry {
	if len(h.items) == 0 {
		return nil
	}
	return h.items[0]
}

// observeClock updates the loop's estimate of database time minus local
// time from a database timestamp read just before: the local clock is read
// after the database's, so the estimate errs early, never late.
func (p *partition) observeClock(dbNow time.Time) {
	p.dbOffset = dbNow.Sub(p.e.clock.Now())
}

// dbNow estimates the database's clock.
func (p *partition) dbNow() time.Time { return p.e.clock.Now().Add(p.dbOffset) }

// armTimer sets t to go off when the earliest in-memory timer is due.
func (p *partition) armTimer(t clock.Timer) {
	d := time.Hour
	if top := p.timers.peek(); top != nil {
		d = max(top.dbFireAt.Sub(p.dbNow()), 0)
	}
	t.Reset(d)
}

// dueTimers appends a request for every in-memory timer that is due.
//
// Deadlines are in database time: the core computes them from the engine's
// estimate of the database clock (the local clock plus the offset seen at
// the last commit). That estimate errs early by at most the duration of a
// commit, so a timer fires at or after its recorded deadline by the
// database's clock, never before it. A timer whose saga has moved on is
// ignored by the core.
func (p *partition) dueTimers(batch []*request) []*request {
	now := p.dbNow()
	for len(batch) < p.e.cfg.MaxBatch {
		top := p.timers.peek()
		if top == nil || top.dbFireAt.After(now) {
			break
		}
		p.timers.remove(top.id)
		batch = append(batch, &request{kind: reqTimer, sagaID: top.sagaID, timerID: top.id})
	}
	return batch
}
