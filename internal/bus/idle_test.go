package bus_test

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/accord-saga/accord/internal/bus"
	"github.com/accord-saga/accord/internal/storage"
)

// countingStore counts the bus's store calls, per method, while counting
// is on.
type countingStore struct {
	bus.Store
	on    atomic.Bool
	mu    sync.Mutex
	calls map[string]int
}

func (c *countingStore) count(method string) {
	if !c.on.Load() {
		return
	}
	c.mu.Lock()
	c.calls[method]++
	c.mu.Unlock()
}

// window counts the calls made during d.
func (c *countingStore) window(d time.Duration) (total int, by string) {
	c.mu.Lock()
	c.calls = map[string]int{}
	c.mu.Unlock()
	c.on.Store(true)
	time.Sleep(d) // the measured span itself, not a wait for a condition
	c.on.Store(false)
	c.mu.Lock()
	defer c.mu.Unlock()
	var parts []string
	for m, n := range c.calls {
		total += n
		parts = append(parts, fmt.Sprintf("%s=%d", m, n))
	}
	sort.Strings(parts)
	return total, strings.Join(parts, " ")
}

func (c *countingStore) Now(ctx context.Context) (time.Time, error) {
	c.count("Now")
	return c.Store.Now(ctx)
}

func (c *countingStore) TopicGet(ctx context.Context, name string) (storage.Topic, error) {
	c.count("TopicGet")
	return c.Store.TopicGet(ctx, name)
}

func (c *countingStore) TopicList(ctx context.Context) ([]storage.Topic, error) {
	c.count("TopicList")
	return c.Store.TopicList(ctx)
}

func (c *countingStore) GroupGet(ctx context.Context, topic, name string) (storage.Group, error) {
	c.count("GroupGet")
	return c.Store.GroupGet(ctx, topic, name)
}

func (c *countingStore) GroupList(ctx context.Context, topic string) ([]storage.Group, error) {
	c.count("GroupList")
	return c.Store.GroupList(ctx, topic)
}

func (c *countingStore) GroupStats(ctx context.Context, topic, name string) ([]storage.GroupPartitionStats, error) {
	c.count("GroupStats")
	return c.Store.GroupStats(ctx, topic, name)
}

func (c *countingStore) GroupBacklogs(ctx context.Context) ([]storage.GroupBacklog, error) {
	c.count("GroupBacklogs")
	return c.Store.GroupBacklogs(ctx)
}

func (c *countingStore) GroupsDue(ctx context.Context) ([]storage.GroupKey, error) {
	c.count("GroupsDue")
	return c.Store.GroupsDue(ctx)
}

func (c *countingStore) MessageSweep(ctx context.Context, p *storage.MessageSweepParams) (int, error) {
	c.count("MessageSweep")
	return c.Store.MessageSweep(ctx, p)
}

func (c *countingStore) DeliveryClaim(ctx context.Context, p *storage.DeliveryClaimParams) (*storage.DeliveryClaimResult, error) {
	c.count("DeliveryClaim")
	return c.Store.DeliveryClaim(ctx, p)
}

func (c *countingStore) DeliveryStalled(ctx context.Context, olderThan time.Time, limit int) ([]storage.Delivery, error) {
	c.count("DeliveryStalled")
	return c.Store.DeliveryStalled(ctx, olderThan, limit)
}

// idleHooks is a webhook sender that is never called while the bus idles.
type idleHooks struct{ delivered atomic.Int64 }

func (h *idleHooks) Deliver(context.Context, string, http.Header, []byte, time.Duration) (int, bool, error) {
	h.delivered.Add(1)
	return http.StatusNoContent, false, nil
}

func (h *idleHooks) Open(string) bool { return false }

// TestIdleCostIndependentOfGroups: an idle bus makes about the same number
// of store calls with 200 webhook and saga-trigger groups as with 10. The
// window is real time (the bus's loops run on the wall clock), so the
// assertion compares the two counts with slack rather than exactly:
// polling per group would make the 200-group count some twenty times the
// other.
func TestIdleCostIndependentOfGroups(t *testing.T) {
	forEachBackend(t, func(t *testing.T, open func(t *testing.T) store) {
		calls := map[int]int{}
		by := map[int]string{}
		for _, groups := range []int{10, 200} {
			cs := &countingStore{calls: map[string]int{}}
			s := open(t)
			cs.Store = s
			n := startNode(t, s, func(c *bus.Config) {
				c.Store = cs
				c.Webhooks = &idleHooks{}
				c.PollInterval = 20 * time.Millisecond
				c.ScanInterval = 100 * time.Millisecond
			})
			for i := range 10 {
				mustTopic(t, n.bus, fmt.Sprintf("t%d", i), bus.TopicConfig{})
			}
			cs.on.Store(true) // count the runners' first claims
			for i := range groups {
				cfg := bus.GroupConfig{Webhook: &bus.Webhook{URL: "http://127.0.0.1:1/hook", Concurrency: 1}}
				if i%2 == 1 {
					cfg = bus.GroupConfig{StartSaga: &bus.Trigger{Definition: "never-started"}}
				}
				mustGroup(t, n.bus, fmt.Sprintf("t%d", i%10), fmt.Sprintf("g%d", i), cfg, bus.GroupStart{})
			}
			eventually(t, 60*time.Second, "every group's runner started", func() bool {
				cs.mu.Lock()
				defer cs.mu.Unlock()
				return cs.calls["DeliveryClaim"] >= groups
			})
			calls[groups], by[groups] = cs.window(2 * time.Second)
			t.Logf("%d groups: %d store calls in 2s: %s", groups, calls[groups], by[groups])
		}
		// Without per-group work the loops' ticks bound the calls: in 2s,
		// about 100 due queries and 20 scans of 5 calls. The floor of 300
		// keeps a starved 10-group window from making the bound too tight.
		if limit := max(2*calls[10], 300) + 50; calls[200] > limit {
			t.Fatalf("idle store calls grow with the groups: %d with 200 groups (%s), %d with 10 (%s)",
				calls[200], by[200], calls[10], by[10])
		}
	})
}
