package engine

import (
	"container/heap"
	"context"
	"time"

	"github.com/accord-saga/accord/internal/storage"
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
// time from a commit's database timestamp.
func (p *partition) observeClock(dbNow time.Time) {
	p.dbOffset = dbNow.Sub(p.e.clock.Now())
}

// dbNow estimates the database's clock.
func (p *partition) dbNow() time.Time { return p.e.clock.Now().Add(p.dbOffset) }

// armTimer sets t to go off when the earliest in-memory timer is due.
func (p *partition) armTimer(t *time.Timer) {
	d := time.Hour
	if top := p.timers.peek(); top != nil {
		d = max(top.dbFireAt.Sub(p.dbNow()), 0)
	}
	t.Reset(d)
}

// timerRetryDelay is how soon the loop asks again when a timer it holds is
// due by its own clock but not yet by the database's.
const timerRetryDelay = 5 * time.Millisecond

// dueTimers appends a request for every timer the database says is due.
// The store, not the local clock, decides: a timer never fires early by
// database time. With poll unset it asks only if an in-memory timer is due;
// the periodic poll also catches timers the loop does not hold (written by
// an earlier owner, or dropped from memory).
func (p *partition) dueTimers(batch []*request, poll bool) []*request {
	now := p.dbNow()
	if !poll {
		if top := p.timers.peek(); top == nil || top.dbFireAt.After(now) {
			return batch
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), commitTimeout)
	defer cancel()
	due, err := p.e.store.TimerDue(ctx, &storage.TimerDueParams{Partition: p.id, Limit: p.e.cfg.MaxBatch})
	if err != nil {
		p.e.log.Warn("load due timers", "partition", p.id, "err", err)
		p.deferDueTimers(now)
		return batch
	}
	for i := range due {
		t := due[i]
		p.timers.remove(t.ID)
		batch = append(batch, &request{kind: reqTimer, sagaID: string(t.Payload), timer: &t})
	}
	p.deferDueTimers(now)
	return batch
}

// deferDueTimers pushes back in-memory timers that are due locally but were
// not returned as due: shortly, in case the clocks differ a little; and out
// of memory if they are a whole poll interval late, for then the periodic
// poll is what fires them (or they were deleted).
func (p *partition) deferDueTimers(now time.Time) {
	for {
		top := p.timers.peek()
		if top == nil || top.dbFireAt.After(now) {
			return
		}
		if now.Sub(top.dbFireAt) > p.e.cfg.TimerPollInterval {
			p.timers.remove(top.id)
			continue
		}
		top.dbFireAt = now.Add(timerRetryDelay)
		heap.Fix(p.timers, top.index)
	}
}
