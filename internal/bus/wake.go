package bus

import (
	"math"
	"sync"
)

// wakeups holds, per topic, the receivers waiting for a message, so that a
// publish can wake them all and a released message (an ack frees the next
// message of its key) only one: waking every receiver for one message
// would send them all to the store at once for one claim.
type wakeups struct {
	mu      sync.Mutex
	waiting map[string][]*waiter
}

type waiter struct {
	group string
	ch    chan struct{}
	done  bool
}

func newWakeups() *wakeups { return &wakeups{waiting: map[string][]*waiter{}} }

// wait registers a receiver of a topic's group; it must call cancel when
// it stops waiting (woken or not).
func (w *wakeups) wait(topic, group string) (ch <-chan struct{}, cancel func()) {
	wt := &waiter{group: group, ch: make(chan struct{})}
	w.mu.Lock()
	w.waiting[topic] = append(w.waiting[topic], wt)
	w.mu.Unlock()
	return wt.ch, func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		if wt.done {
			return
		}
		wt.done = true
		list := w.waiting[topic]
		for i, x := range list {
			if x == wt {
				list = append(list[:i], list[i+1:]...)
				break
			}
		}
		if len(list) == 0 {
			delete(w.waiting, topic)
		} else {
			w.waiting[topic] = list
		}
	}
}

// all wakes every receiver waiting on topic.
func (w *wakeups) all(topic string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, wt := range w.waiting[topic] {
		wt.done = true
		close(wt.ch)
	}
	delete(w.waiting, topic)
}

// some wakes up to n of the receivers of a topic's group, longest waiting
// first.
func (w *wakeups) some(topic, group string, n int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	list := w.waiting[topic]
	kept := list[:0]
	for _, wt := range list {
		if n > 0 && wt.group == group {
			wt.done = true
			close(wt.ch)
			n--
			continue
		}
		kept = append(kept, wt)
	}
	if len(kept) == 0 {
		delete(w.waiting, topic)
	} else {
		w.waiting[topic] = kept
	}
}

// group wakes every receiver of a topic's group.
func (w *wakeups) group(topic, group string) { w.some(topic, group, math.MaxInt) }
