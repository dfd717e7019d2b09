package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/accord-saga/accord/internal/engine"
	"github.com/accord-saga/accord/internal/redact"
	"github.com/accord-saga/accord/internal/storage"
)

// WebhookSender delivers webhook calls (dispatch.Push: pooled client,
// allowlist, breaker and bulkhead per endpoint).
type WebhookSender interface {
	// Deliver POSTs body to url. It reports the response status (0 if
	// none) and, when the call failed, whether trying again may succeed.
	Deliver(ctx context.Context, url string, header http.Header, body []byte, timeout time.Duration) (status int, retryable bool, err error)
	// Open reports whether url's circuit breaker is open (calls would
	// fail fast): the runner then waits instead of spending deliveries.
	Open(url string) bool
}

// Start runs the bus's background work: retention, stall and lag
// measurement, and the runners of webhook and saga-trigger groups. It
// returns at once; Stop ends it.
func (b *Bus) Start(ctx context.Context) error {
	b.lifeMu.Lock()
	defer b.lifeMu.Unlock()
	if b.cancel != nil {
		return errors.New("bus: already started")
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	b.cancel = cancel
	b.scanCh = make(chan struct{}, 1)
	b.wg.Add(3)
	go func() { defer b.wg.Done(); b.scanLoop(ctx) }()
	go func() { defer b.wg.Done(); b.sweepLoop(ctx) }()
	go func() { defer b.wg.Done(); b.dueLoop(ctx) }()
	return nil
}

// Stop ends the background work and waits for it: runners finish the
// message in hand (an unfinished one is handed out again after its ack
// timeout).
func (b *Bus) Stop(ctx context.Context) error {
	b.lifeMu.Lock()
	cancel := b.cancel
	b.lifeMu.Unlock()
	if cancel == nil {
		return nil
	}
	cancel()
	done := make(chan struct{})
	go func() { b.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("bus: stop: %w", ctx.Err())
	}
}

// scanSoon asks the scan loop to look at the groups now (a group was
// created or deleted).
func (b *Bus) scanSoon() {
	b.lifeMu.Lock()
	ch := b.scanCh
	b.lifeMu.Unlock()
	if ch == nil {
		return
	}
	select {
	case ch <- struct{}{}:
	default:
	}
}

func (b *Bus) scanLoop(ctx context.Context) {
	t := time.NewTicker(b.cfg.ScanInterval)
	defer t.Stop()
	defer b.stopRunners()
	for {
		b.scan(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-b.scanCh:
		}
	}
}

// scan starts and stops group runners to match the stored groups, and
// measures lag and stalls. Its store calls are the same few whatever the
// number of topics and groups: one list of each, one query for every
// group's backlog.
func (b *Bus) scan(ctx context.Context) {
	gs, err := b.store.GroupList(ctx, "")
	if err != nil {
		if ctx.Err() == nil {
			b.log.Warn("bus: list groups", "err", err)
		}
		return
	}
	if len(gs) > 0 {
		// One list refreshes every topic's cached configuration, so that
		// groupFrom does not read the topics one by one.
		if ts, err := b.ListTopics(ctx); err == nil {
			b.cacheTopics(ts)
		}
		if bl, err := b.store.GroupBacklogs(ctx); err == nil {
			for _, g := range bl {
				b.metrics.observeGroup(g)
			}
		} else if ctx.Err() == nil {
			b.log.Warn("bus: group backlogs", "err", err)
		}
	}
	want := map[string]Group{}
	present := map[[2]string]bool{}
	for _, sg := range gs {
		present[[2]string{sg.Topic, sg.Name}] = true
		g, err := b.groupFrom(ctx, sg)
		if err != nil {
			continue
		}
		if g.Effective.Webhook != nil || g.Effective.StartSaga != nil {
			want[runnerKey(g)] = g
		}
	}
	b.metrics.retainGroups(present)
	b.lifeMu.Lock()
	for key, r := range b.runners {
		if g, ok := want[key]; !ok || !sameConfig(g, r.g) {
			r.stop()
			delete(b.runners, key)
			b.metrics.forgetGroup(r.g.Topic, r.g.Name)
		}
	}
	for key, g := range want {
		if _, ok := b.runners[key]; !ok && ctx.Err() == nil {
			b.runners[key] = b.startRunner(ctx, g)
		}
	}
	b.lifeMu.Unlock()
	if st, err := b.Stalled(ctx, 1000); err == nil {
		b.metrics.stalled.Set(float64(len(st)))
		if len(st) > 0 {
			s := st[0]
			b.log.Warn("bus: stalled flows: messages unfinished past the stall threshold",
				"count", len(st), "threshold", b.cfg.StallAfter, "oldest_topic", s.Message.Topic, "oldest_group", s.Group,
				"oldest_correlation_id", s.Message.CorrelationID, "oldest_age", s.Age.Round(time.Second))
		}
	}
}

func runnerKey(g Group) string { return g.Topic + "\x00" + g.Name }

func sameConfig(a, b Group) bool {
	x, _ := json.Marshal(a.Effective)
	y, _ := json.Marshal(b.Effective)
	return string(x) == string(y)
}

func (b *Bus) stopRunners() {
	b.lifeMu.Lock()
	rs := b.runners
	b.runners = map[string]*runner{}
	b.lifeMu.Unlock()
	for _, r := range rs {
		r.stop()
	}
}

// runner consumes one webhook or saga-trigger group inside the server.
type runner struct {
	g      Group
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func (r *runner) stop() {
	r.cancel()
	r.wg.Wait()
}

func (b *Bus) startRunner(ctx context.Context, g Group) *runner {
	ctx, cancel := context.WithCancel(ctx)
	r := &runner{g: g, cancel: cancel}
	n := 1
	if g.Effective.Webhook != nil {
		n = g.Effective.Webhook.Concurrency
	}
	for range n {
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			b.runGroup(ctx, g)
		}()
	}
	return r
}

// runGroup receives a group's messages one at a time and handles each.
func (b *Bus) runGroup(ctx context.Context, g Group) {
	for ctx.Err() == nil {
		if w := g.Effective.Webhook; w != nil && b.cfg.Webhooks.Open(w.URL) {
			// Receiving now would spend a delivery on a call that fails
			// fast: wait for the breaker to let a probe through.
			sleep(ctx, time.Second)
			continue
		}
		ds, err := b.receive(ctx, g, 1, waitForever, 0)
		if err != nil {
			if ctx.Err() == nil {
				b.log.Warn("bus: runner receive", "topic", g.Topic, "group", g.Name, "err", err)
				sleep(ctx, time.Second)
			}
			continue
		}
		for _, d := range ds {
			b.handle(ctx, g, d)
		}
	}
}

// dueLoop is the runners' one fallback clock. A runner with nothing to do
// waits for a local publish on its topic (Notify) or an ack or nack of its
// group; what becomes claimable with time instead (a nack's delay passed,
// a claim expired, a message published on another node) is found here:
// every PollInterval one store query lists the groups that have a
// claimable delivery, and only their runners are woken. Idle, the bus
// thus makes the same store calls for ten groups as for thousands.
func (b *Bus) dueLoop(ctx context.Context) {
	every(ctx, b.cfg.PollInterval, func() { b.wakeDue(ctx) })
}

func (b *Bus) wakeDue(ctx context.Context) {
	b.lifeMu.Lock()
	idle := len(b.runners) == 0
	b.lifeMu.Unlock()
	if idle {
		return
	}
	due, err := b.store.GroupsDue(ctx)
	if err != nil {
		if ctx.Err() == nil {
			b.log.Warn("bus: groups due", "err", err)
		}
		return
	}
	for _, k := range due {
		b.wake.group(k.Topic, k.Name)
	}
}

// every calls f every d until ctx ends.
func every(ctx context.Context, d time.Duration, f func()) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			f()
		}
	}
}

// handle delivers one message for a runner and acks or nacks it. The ack
// and nack use a context of their own, so a shutdown that cancels ctx
// after the call still records its result.
func (b *Bus) handle(ctx context.Context, g Group, d Delivery) {
	var retry bool
	var err error
	switch {
	case g.Effective.Webhook != nil:
		retry, err = b.pushWebhook(ctx, g, d)
	case g.Effective.StartSaga != nil:
		retry, err = b.startSaga(ctx, g, d)
	}
	if ctx.Err() != nil && err != nil {
		return // cut off by shutdown: the claim expires and the message is handed out again
	}
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err == nil {
		if _, aerr := b.Ack(actx, g.Topic, g.Name, []string{d.Receipt}); aerr != nil {
			b.log.Warn("bus: runner ack", "topic", g.Topic, "group", g.Name, "err", aerr)
		}
		return
	}
	if nerr := b.Nack(actx, g.Topic, g.Name, d.Receipt, err.Error(), -1, !retry); nerr != nil && !errors.Is(nerr, ErrReceiptLost) {
		b.log.Warn("bus: runner nack", "topic", g.Topic, "group", g.Name, "err", nerr)
	}
}

// webhookBody is what a webhook receives.
type webhookBody struct {
	ID            string            `json:"id"`
	Topic         string            `json:"topic"`
	Group         string            `json:"group"`
	Key           string            `json:"key,omitempty"`
	CorrelationID string            `json:"correlation_id,omitempty"`
	Partition     int               `json:"partition"`
	Position      int64             `json:"position"`
	Attempt       int               `json:"attempt"`
	PublishedAt   time.Time         `json:"published_at"`
	Headers       map[string]string `json:"headers,omitempty"`
	Payload       json.RawMessage   `json:"payload"`
	Tombstone     bool              `json:"tombstone,omitempty"`
}

// pushWebhook POSTs a message to its group's webhook. A 2xx acks it; a 4xx
// other than 408 and 429 dead-letters it (the endpoint refuses this
// message for good); anything else is retried with backoff.
func (b *Bus) pushWebhook(ctx context.Context, g Group, d Delivery) (retry bool, err error) {
	w := g.Effective.Webhook
	m := d.Message
	var headers map[string]string
	if len(m.Headers) > 0 {
		_ = json.Unmarshal(m.Headers, &headers) // written by Publish from a map
	}
	payload := json.RawMessage(m.Payload)
	if m.Tombstone || len(payload) == 0 {
		payload = json.RawMessage("null")
	}
	body, err := json.Marshal(webhookBody{
		ID: m.ID, Topic: m.Topic, Group: g.Name, Key: m.Key, CorrelationID: m.CorrelationID,
		Partition: m.Partition, Position: m.Position, Attempt: d.Attempt, PublishedAt: m.PublishedAt,
		Headers: headers, Payload: payload, Tombstone: m.Tombstone,
	})
	if err != nil {
		return false, fmt.Errorf("encode webhook body: %w", err)
	}
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	h.Set("Idempotency-Key", m.ID)
	h.Set("Accord-Topic", m.Topic)
	h.Set("Accord-Group", g.Name)
	h.Set("Accord-Attempt", strconv.Itoa(d.Attempt))
	if m.CorrelationID != "" {
		h.Set("Accord-Correlation-Id", m.CorrelationID)
	}
	status, retryable, err := b.cfg.Webhooks.Deliver(ctx, w.URL, h, body, time.Duration(w.Timeout))
	// The URL may carry a token; it is shown masked in errors, which go
	// to the logs and the dead-letter history.
	shown := redact.URL(w.URL)
	if err != nil {
		return retryable, fmt.Errorf("webhook %s: %w", shown, err)
	}
	switch {
	case status >= 200 && status < 300:
		return false, nil
	case status == http.StatusRequestTimeout || status == http.StatusTooManyRequests || status >= 500:
		return true, fmt.Errorf("webhook %s answered %d", shown, status)
	default:
		return false, fmt.Errorf("webhook %s answered %d: refused for good", shown, status)
	}
}

// startSaga starts the group's saga for a message, idempotently by the
// message's id: a redelivered message finds the saga it started.
func (b *Bus) startSaga(ctx context.Context, g Group, d Delivery) (retry bool, err error) {
	t := g.Effective.StartSaga
	in := json.RawMessage(d.Message.Payload)
	if d.Message.Tombstone || len(in) == 0 || string(in) == "null" {
		in = json.RawMessage("{}")
	}
	_, err = b.cfg.Sagas.StartSaga(ctx, engine.StartParams{
		Definition:     t.Definition,
		Version:        t.Version,
		Input:          in,
		IdempotencyKey: "bus/" + g.Topic + "/" + g.Name + "/" + d.Message.ID,
	})
	switch {
	case err == nil:
		return false, nil
	case errors.Is(err, engine.ErrInvalidInput), errors.Is(err, engine.ErrIdempotencyMismatch):
		return false, fmt.Errorf("start saga %s: %w", t.Definition, err)
	default:
		// A missing definition may be registered later; an overloaded or
		// stopping node recovers.
		return true, fmt.Errorf("start saga %s: %w", t.Definition, err)
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// ---- retention

func (b *Bus) sweepLoop(ctx context.Context) {
	every(ctx, b.cfg.SweepInterval, func() { b.Sweep(ctx) })
}

// Sweep applies every topic's retention and compaction to the partitions
// this node owns, and returns how many messages it deleted.
func (b *Bus) Sweep(ctx context.Context) int {
	ts, err := b.ListTopics(ctx)
	if err != nil {
		if ctx.Err() == nil {
			b.log.Warn("bus: sweep: list topics", "err", err)
		}
		return 0
	}
	now, err := b.store.Now(ctx)
	if err != nil {
		return 0
	}
	total := 0
	for _, t := range ts {
		c := t.Effective
		p := storage.MessageSweepParams{Topic: t.Name, MaxBytes: c.RetentionBytes, Compact: c.Compact, Limit: 10_000}
		if c.RetentionAge > 0 {
			p.PublishedBefore = now.Add(-time.Duration(c.RetentionAge))
		}
		if c.Compact {
			p.TombstonesBefore = now.Add(-time.Duration(c.TombstoneRetention))
		}
		if p.PublishedBefore.IsZero() && p.MaxBytes == 0 && !p.Compact {
			continue
		}
		for part := range b.parts {
			if !b.pub.Owns(part) {
				continue
			}
			p.Partition = part
			n, err := b.store.MessageSweep(ctx, &p)
			if err != nil {
				if ctx.Err() == nil {
					b.log.Warn("bus: sweep", "topic", t.Name, "partition", part, "err", err)
				}
				continue
			}
			if n > 0 {
				b.metrics.swept.WithLabelValues(t.Name).Add(float64(n))
				total += n
			}
		}
	}
	return total
}
