package subscriber

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// answer is what the subscriber said about one message.
type answer struct {
	id     string
	ack    bool
	reason string
	delay  time.Duration
	dead   bool
}

// fakeSource is a group in memory: receive hands out queued messages,
// and every answer is recorded and sent on answers.
type fakeSource struct {
	mu       sync.Mutex
	queue    []*Message
	ready    chan struct{} // closed when messages are queued
	hbErr    error
	hbs      int
	answers  chan answer
	hbNotify chan string
	next     int
	// recvCancelled gets a value when a receive ends by cancellation.
	recvCancelled chan struct{}
}

func newFakeSource() *fakeSource {
	return &fakeSource{ready: make(chan struct{}), answers: make(chan answer, 1000), hbNotify: make(chan string, 1000),
		recvCancelled: make(chan struct{}, 100)}
}

func (f *fakeSource) push(n int, mod func(*Message)) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var ids []string
	for range n {
		f.next++
		m := &Message{ID: fmt.Sprint("m", f.next), Topic: "t", Group: "g", CorrelationID: "flow-1", Attempt: 1,
			receipt: fmt.Sprint("r", f.next)}
		if mod != nil {
			mod(m)
		}
		f.queue = append(f.queue, m)
		ids = append(ids, m.ID)
	}
	close(f.ready)
	f.ready = make(chan struct{})
	return ids
}

func (f *fakeSource) receive(ctx context.Context, max int, wait, _ time.Duration) ([]*Message, error) {
	t := time.NewTimer(wait)
	defer t.Stop()
	for {
		f.mu.Lock()
		if len(f.queue) > 0 {
			n := min(max, len(f.queue))
			out := f.queue[:n:n]
			f.queue = f.queue[n:]
			f.mu.Unlock()
			return out, nil
		}
		ready := f.ready
		f.mu.Unlock()
		select {
		case <-ready:
		case <-t.C:
			return nil, nil
		case <-ctx.Done():
			f.recvCancelled <- struct{}{}
			return nil, ctx.Err()
		}
	}
}

func (f *fakeSource) ack(_ context.Context, m *Message) error {
	f.answers <- answer{id: m.ID, ack: true}
	return nil
}

func (f *fakeSource) nack(_ context.Context, m *Message, reason string, delay time.Duration, dead bool) error {
	f.answers <- answer{id: m.ID, reason: reason, delay: delay, dead: dead}
	return nil
}

func (f *fakeSource) heartbeat(_ context.Context, m *Message, _ time.Duration) error {
	f.mu.Lock()
	f.hbs++
	err := f.hbErr
	f.mu.Unlock()
	f.hbNotify <- m.ID
	return err
}

func (f *fakeSource) ackTimeout(context.Context) (time.Duration, error) { return 30 * time.Second, nil }
