package bus

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/accord-saga/accord/internal/engine"
	"github.com/accord-saga/accord/internal/ident"
	"github.com/accord-saga/accord/internal/storage"
)

// Store is what the bus needs of the store.
type Store interface {
	storage.BusStore
	Now(ctx context.Context) (time.Time, error)
	Info() storage.Info
}

// Publisher writes messages through the partition loops (engine.Engine).
type Publisher interface {
	Publish(ctx context.Context, partition int, msgs []engine.PublishMessage) ([]engine.PublishResult, error)
	AnyPartition() (int, error)
	Owns(partition int) bool
}

// SagaStarter starts sagas for trigger groups (engine.Engine).
type SagaStarter interface {
	StartSaga(ctx context.Context, sp engine.StartParams) (engine.StartResult, error)
}

// Config configures a Bus. Zero fields take the documented defaults.
type Config struct {
	Store     Store     // required
	Publisher Publisher // required
	// Sagas starts sagas for groups with start_saga. Optional: without it
	// such groups are refused.
	Sagas SagaStarter
	// Webhooks delivers to groups with a webhook. Optional: without it such
	// groups are refused.
	Webhooks WebhookSender
	// CheckURL vets a webhook URL at registration (the push allowlist).
	CheckURL func(string) error
	// PollInterval is how often a waiting receive re-checks the store for
	// messages that no local publish announced (delays, expired claims,
	// other nodes). Group runners do not poll: one store query every
	// PollInterval lists the groups with such messages and wakes their
	// runners. Default 250ms.
	PollInterval time.Duration
	// SweepInterval is how often retention and compaction run on the
	// partitions this node owns. Default 1m.
	SweepInterval time.Duration
	// StallAfter is how long a message may stay unacked by a group before
	// its flow is reported as stalled (log, metric, API). Default 5m.
	StallAfter time.Duration
	// ScanInterval is how often groups are listed to start and stop their
	// webhook and saga runners, and stalls and lag are measured (one query
	// for every group's backlog). Default 5s.
	ScanInterval time.Duration
	// MaxTopics caps the number of topics. Default DefaultMaxTopics.
	MaxTopics int
	// MaxGroups caps the number of consumer groups over all topics.
	// Default DefaultMaxGroups.
	MaxGroups  int
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Bus is the choreography event bus. See the package documentation.
type Bus struct {
	cfg     Config
	store   Store
	pub     Publisher
	log     *slog.Logger
	parts   int
	metrics *metrics

	topicsMu sync.Mutex
	topics   map[string]cachedTopic

	// capMu serialises the creations that check MaxTopics and MaxGroups.
	capMu sync.Mutex

	wake *wakeups

	lifeMu  sync.Mutex
	cancel  context.CancelFunc
	scanCh  chan struct{}
	wg      sync.WaitGroup
	runners map[string]*runner
}

type cachedTopic struct {
	cfg    TopicConfig
	loaded time.Time
}

// topicCacheTTL bounds how stale a node's view of a topic's configuration
// may be.
const topicCacheTTL = 2 * time.Second

// New returns a bus; Start runs its background work.
func New(cfg Config) (*Bus, error) {
	if cfg.Store == nil || cfg.Publisher == nil {
		return nil, errors.New("bus: Config.Store and Config.Publisher are required")
	}
	cfg.PollInterval = cmp.Or(cfg.PollInterval, 250*time.Millisecond)
	cfg.SweepInterval = cmp.Or(cfg.SweepInterval, time.Minute)
	cfg.StallAfter = cmp.Or(cfg.StallAfter, 5*time.Minute)
	cfg.ScanInterval = cmp.Or(cfg.ScanInterval, 5*time.Second)
	cfg.MaxTopics = cmp.Or(cfg.MaxTopics, DefaultMaxTopics)
	cfg.MaxGroups = cmp.Or(cfg.MaxGroups, DefaultMaxGroups)
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	b := &Bus{
		cfg:     cfg,
		store:   cfg.Store,
		pub:     cfg.Publisher,
		log:     cfg.Logger,
		parts:   cfg.Store.Info().Partitions,
		topics:  map[string]cachedTopic{},
		wake:    newWakeups(),
		runners: map[string]*runner{},
	}
	b.metrics = newMetrics(cfg.Registerer)
	return b, nil
}

// Notify wakes the receivers waiting on a topic: the engine calls it after
// a commit that published to the topic (engine.Config.OnPublish).
func (b *Bus) Notify(topic string) { b.wake.all(topic) }

// ---- topics

// Topic is a topic as the API shows it.
type Topic struct {
	Name      string
	Config    TopicConfig // as given, without defaults
	Effective TopicConfig // with defaults
	CreatedAt time.Time
	UpdatedAt time.Time
}

func topicFrom(t storage.Topic) (Topic, error) {
	c, err := decodeConfig[TopicConfig](t.Config)
	if err != nil {
		return Topic{}, err
	}
	return Topic{Name: t.Name, Config: c, Effective: c.withDefaults(), CreatedAt: t.CreatedAt, UpdatedAt: t.UpdatedAt}, nil
}

// PutTopic creates a topic or replaces its configuration.
func (b *Bus) PutTopic(ctx context.Context, name string, cfg TopicConfig) (Topic, bool, error) {
	if err := checkName("topic", name); err != nil {
		return Topic{}, false, err
	}
	if err := cfg.validate(); err != nil {
		return Topic{}, false, err
	}
	doc, err := json.Marshal(cfg)
	if err != nil {
		return Topic{}, false, fmt.Errorf("bus: encode topic config: %w", err)
	}
	b.capMu.Lock()
	defer b.capMu.Unlock()
	if err := b.checkTopicCap(ctx, name); err != nil {
		return Topic{}, false, err
	}
	stored, created, err := b.store.TopicPut(ctx, &storage.Topic{Name: name, Config: doc})
	if err != nil {
		return Topic{}, false, fmt.Errorf("bus: put topic: %w", err)
	}
	b.topicsMu.Lock()
	delete(b.topics, name)
	b.topicsMu.Unlock()
	t, err := topicFrom(stored)
	return t, created, err
}

// GetTopic returns a topic.
func (b *Bus) GetTopic(ctx context.Context, name string) (Topic, error) {
	if err := checkName("topic", name); err != nil {
		return Topic{}, err
	}
	t, err := b.store.TopicGet(ctx, name)
	if errors.Is(err, storage.ErrNotFound) {
		return Topic{}, fmt.Errorf("%w: %s", ErrTopicNotFound, name)
	}
	if err != nil {
		return Topic{}, fmt.Errorf("bus: get topic: %w", err)
	}
	return topicFrom(t)
}

// ListTopics lists every topic by name.
func (b *Bus) ListTopics(ctx context.Context) ([]Topic, error) {
	ts, err := b.store.TopicList(ctx)
	if err != nil {
		return nil, fmt.Errorf("bus: list topics: %w", err)
	}
	out := make([]Topic, 0, len(ts))
	for _, t := range ts {
		tt, err := topicFrom(t)
		if err != nil {
			return nil, err
		}
		out = append(out, tt)
	}
	return out, nil
}

// DeleteTopic deletes a topic with its messages, groups and dead letters.
func (b *Bus) DeleteTopic(ctx context.Context, name string) error {
	if err := checkName("topic", name); err != nil {
		return err
	}
	err := b.store.TopicDelete(ctx, name)
	if errors.Is(err, storage.ErrNotFound) {
		return fmt.Errorf("%w: %s", ErrTopicNotFound, name)
	}
	if err != nil {
		return fmt.Errorf("bus: delete topic: %w", err)
	}
	b.topicsMu.Lock()
	delete(b.topics, name)
	b.topicsMu.Unlock()
	return nil
}

// topicConfig returns a topic's effective configuration, cached briefly.
func (b *Bus) topicConfig(ctx context.Context, name string) (TopicConfig, error) {
	b.topicsMu.Lock()
	c, ok := b.topics[name]
	b.topicsMu.Unlock()
	if ok && time.Since(c.loaded) < topicCacheTTL {
		return c.cfg, nil
	}
	t, err := b.GetTopic(ctx, name)
	if err != nil {
		return TopicConfig{}, err
	}
	b.topicsMu.Lock()
	b.topics[name] = cachedTopic{cfg: t.Effective, loaded: time.Now()}
	b.topicsMu.Unlock()
	return t.Effective, nil
}

// cacheTopics refreshes the cached configuration of the topics listed.
func (b *Bus) cacheTopics(ts []Topic) {
	now := time.Now()
	b.topicsMu.Lock()
	defer b.topicsMu.Unlock()
	for _, t := range ts {
		b.topics[t.Name] = cachedTopic{cfg: t.Effective, loaded: now}
	}
}

// ---- groups

// Group is a consumer group as the API shows it.
type Group struct {
	Topic     string
	Name      string
	Config    GroupConfig // as given
	Effective GroupConfig // with defaults
	CreatedAt time.Time
}

// GroupStart says where a new group starts.
type GroupStart struct {
	// From is "end" (default: only messages published from now on),
	// "beginning" (every stored message) or "time" (messages published at
	// or after At).
	From string
	At   time.Time
}

// CreateGroup creates a consumer group; creating it again with the same
// configuration returns it (created false).
func (b *Bus) CreateGroup(ctx context.Context, topic, name string, cfg GroupConfig, start GroupStart) (Group, bool, error) {
	if err := checkName("topic", topic); err != nil {
		return Group{}, false, err
	}
	if err := checkName("group", name); err != nil {
		return Group{}, false, err
	}
	if err := cfg.validate(b.cfg.CheckURL); err != nil {
		return Group{}, false, err
	}
	if cfg.Webhook != nil && b.cfg.Webhooks == nil {
		return Group{}, false, invalid("webhook", "this server has no webhook sender")
	}
	if cfg.StartSaga != nil && b.cfg.Sagas == nil {
		return Group{}, false, invalid("start_saga", "this server does not run sagas")
	}
	p := &storage.GroupCreateParams{Topic: topic, Name: name}
	switch start.From {
	case "", "end":
		p.Start = storage.StartEnd
	case "beginning":
		p.Start = storage.StartBeginning
	case "time":
		if start.At.IsZero() {
			return Group{}, false, invalid("start_at", "is required when start is \"time\"")
		}
		p.Start, p.StartAt = storage.StartTime, start.At
	default:
		return Group{}, false, invalid("start", "must be end, beginning or time")
	}
	doc, err := json.Marshal(cfg)
	if err != nil {
		return Group{}, false, fmt.Errorf("bus: encode group config: %w", err)
	}
	p.Config = doc
	b.capMu.Lock()
	defer b.capMu.Unlock()
	if err := b.checkGroupCap(ctx, topic, name); err != nil {
		return Group{}, false, err
	}
	stored, created, err := b.store.GroupCreate(ctx, p)
	switch {
	case errors.Is(err, storage.ErrNotFound):
		return Group{}, false, fmt.Errorf("%w: %s", ErrTopicNotFound, topic)
	case errors.Is(err, storage.ErrGroupExists):
		return Group{}, false, fmt.Errorf("%w: %s/%s", ErrGroupExists, topic, name)
	case err != nil:
		return Group{}, false, fmt.Errorf("bus: create group: %w", err)
	}
	g, err := b.groupFrom(ctx, stored)
	if err == nil {
		b.scanSoon()
	}
	return g, created, err
}

func (b *Bus) groupFrom(ctx context.Context, g storage.Group) (Group, error) {
	c, err := decodeConfig[GroupConfig](g.Config)
	if err != nil {
		return Group{}, err
	}
	tc, err := b.topicConfig(ctx, g.Topic)
	if err != nil {
		return Group{}, err
	}
	return Group{Topic: g.Topic, Name: g.Name, Config: c, Effective: c.withDefaults(tc), CreatedAt: g.CreatedAt}, nil
}

// GetGroup returns a group.
func (b *Bus) GetGroup(ctx context.Context, topic, name string) (Group, error) {
	if err := checkName("topic", topic); err != nil {
		return Group{}, err
	}
	if err := checkName("group", name); err != nil {
		return Group{}, err
	}
	g, err := b.store.GroupGet(ctx, topic, name)
	if errors.Is(err, storage.ErrNotFound) {
		return Group{}, fmt.Errorf("%w: %s/%s", ErrGroupNotFound, topic, name)
	}
	if err != nil {
		return Group{}, fmt.Errorf("bus: get group: %w", err)
	}
	return b.groupFrom(ctx, g)
}

// ListGroups lists a topic's groups ("" for every topic's).
func (b *Bus) ListGroups(ctx context.Context, topic string) ([]Group, error) {
	if topic != "" {
		if _, err := b.GetTopic(ctx, topic); err != nil {
			return nil, err
		}
	}
	gs, err := b.store.GroupList(ctx, topic)
	if err != nil {
		return nil, fmt.Errorf("bus: list groups: %w", err)
	}
	out := make([]Group, 0, len(gs))
	for _, g := range gs {
		gg, err := b.groupFrom(ctx, g)
		if err != nil {
			return nil, err
		}
		out = append(out, gg)
	}
	return out, nil
}

// DeleteGroup deletes a group with its deliveries and dead letters.
func (b *Bus) DeleteGroup(ctx context.Context, topic, name string) error {
	if _, err := b.GetGroup(ctx, topic, name); err != nil {
		return err
	}
	err := b.store.GroupDelete(ctx, topic, name)
	if errors.Is(err, storage.ErrNotFound) {
		return fmt.Errorf("%w: %s/%s", ErrGroupNotFound, topic, name)
	}
	if err != nil {
		return fmt.Errorf("bus: delete group: %w", err)
	}
	b.scanSoon()
	return nil
}

// PartitionStats is a group's backlog in one partition.
type PartitionStats = storage.GroupPartitionStats

// GroupStats returns a group's backlog per partition.
func (b *Bus) GroupStats(ctx context.Context, topic, name string) ([]PartitionStats, error) {
	if _, err := b.GetGroup(ctx, topic, name); err != nil {
		return nil, err
	}
	st, err := b.store.GroupStats(ctx, topic, name)
	if err != nil {
		return nil, fmt.Errorf("bus: group stats: %w", err)
	}
	return st, nil
}

// ---- publishing

// Message is a message to publish.
type Message struct {
	// Key orders the topic's messages: those with one key reach each group
	// one at a time, in publish order. "" means unordered.
	Key string
	// ID is the message's id; default a new unique id.
	ID string
	// IdempotencyKey makes the publish idempotent within the topic's dedup
	// window (among messages with the same Key).
	IdempotencyKey string
	// CorrelationID ties the messages of one flow together; default the
	// message's id (the message starts a flow).
	CorrelationID string
	Headers       map[string]string
	Payload       json.RawMessage
	// Tombstone deletes Key from a compacted topic (Payload must be empty).
	Tombstone bool
	// TTL overrides the topic's default lifetime (0: the default).
	TTL time.Duration
}

// Limits of a publish.
const (
	MaxMessageBytes      = 1 << 20
	MaxBatchMessages     = 1000
	MaxHeaders           = 64
	MaxHeaderValueLength = 4096
)

// Published is the fate of one published message.
type Published = engine.PublishResult

// Publish writes messages to a topic. Messages bound for one partition are
// written atomically; on an error some partitions' messages may have been
// written: retry with the same idempotency keys to publish exactly once.
func (b *Bus) Publish(ctx context.Context, topic string, msgs []Message) ([]Published, error) {
	if err := checkName("topic", topic); err != nil {
		return nil, err
	}
	if len(msgs) == 0 || len(msgs) > MaxBatchMessages {
		return nil, invalid("messages", fmt.Sprintf("must hold 1..%d messages", MaxBatchMessages))
	}
	tc, err := b.topicConfig(ctx, topic)
	if err != nil {
		return nil, err
	}
	byPart := map[int][]int{}
	inputs := make([]engine.PublishMessage, len(msgs))
	for i, m := range msgs {
		in, part, err := b.prepare(topic, tc, i, m)
		if err != nil {
			return nil, err
		}
		inputs[i] = in
		byPart[part] = append(byPart[part], i)
	}
	out := make([]Published, len(msgs))
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for part, idx := range byPart {
		wg.Add(1)
		go func() {
			defer wg.Done()
			batch := make([]engine.PublishMessage, len(idx))
			for j, i := range idx {
				batch[j] = inputs[i]
			}
			res, err := b.pub.Publish(ctx, part, batch)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if firstErr == nil {
					firstErr = err
				}
				return
			}
			for j, i := range idx {
				out[i] = res[j]
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return nil, fmt.Errorf("bus: publish: %w", firstErr)
	}
	for _, r := range out {
		if !r.Duplicate {
			b.metrics.published.WithLabelValues(topic).Inc()
		} else {
			b.metrics.duplicates.WithLabelValues(topic).Inc()
		}
	}
	return out, nil
}

// prepare validates one message and picks its partition.
func (b *Bus) prepare(topic string, tc TopicConfig, i int, m Message) (engine.PublishMessage, int, error) {
	field := func(f string) string { return fmt.Sprintf("messages[%d].%s", i, f) }
	for _, s := range []struct{ f, v string }{{"key", m.Key}, {"id", m.ID}, {"idempotency_key", m.IdempotencyKey}, {"correlation_id", m.CorrelationID}} {
		if len(s.v) > 256 {
			return engine.PublishMessage{}, 0, invalid(field(s.f), "must be at most 256 bytes")
		}
		if err := ident.Check(s.v); err != nil {
			return engine.PublishMessage{}, 0, invalid(field(s.f), err.Error())
		}
	}
	if m.Tombstone {
		if m.Key == "" {
			return engine.PublishMessage{}, 0, invalid(field("key"), "is required for a tombstone")
		}
		if len(m.Payload) > 0 && !bytes.Equal(bytes.TrimSpace(m.Payload), []byte("null")) {
			return engine.PublishMessage{}, 0, invalid(field("payload"), "must be empty for a tombstone")
		}
		m.Payload = nil
	} else {
		if len(m.Payload) == 0 {
			m.Payload = json.RawMessage("null")
		}
		if !json.Valid(m.Payload) {
			return engine.PublishMessage{}, 0, invalid(field("payload"), "is not valid JSON")
		}
	}
	if len(m.Payload) > MaxMessageBytes {
		return engine.PublishMessage{}, 0, invalid(field("payload"), fmt.Sprintf("larger than %d bytes", MaxMessageBytes))
	}
	if len(m.Headers) > MaxHeaders {
		return engine.PublishMessage{}, 0, invalid(field("headers"), fmt.Sprintf("more than %d headers", MaxHeaders))
	}
	for k, v := range m.Headers {
		if k == "" || len(k) > 256 || len(v) > MaxHeaderValueLength {
			return engine.PublishMessage{}, 0, invalid(field("headers"), "names must be 1..256 bytes and values at most 4096")
		}
	}
	if m.TTL < 0 || m.TTL > MaxDuration {
		return engine.PublishMessage{}, 0, invalid(field("ttl"), "must be between 0 and 8760h")
	}
	if m.ID == "" {
		m.ID = engine.NewID()
	}
	if m.CorrelationID == "" {
		m.CorrelationID = m.ID
	}
	ttl := m.TTL
	if ttl == 0 {
		ttl = time.Duration(tc.DefaultTTL)
	}
	var headers []byte
	if len(m.Headers) > 0 {
		headers, _ = json.Marshal(m.Headers) // strings: cannot fail
	}
	part := -1
	switch {
	case m.Key != "":
		part = storage.PartitionFor("bus/"+topic+"/"+m.Key, b.parts)
	case m.IdempotencyKey != "":
		part = storage.PartitionFor("bus/"+topic+"/"+m.IdempotencyKey, b.parts)
	default:
		p, err := b.pub.AnyPartition()
		if err != nil {
			return engine.PublishMessage{}, 0, err
		}
		part = p
	}
	in := engine.PublishMessage{Message: storage.MessageInput{
		Topic: topic, Key: m.Key, ID: m.ID, CorrelationID: m.CorrelationID,
		Headers: headers, Payload: m.Payload, Tombstone: m.Tombstone, TTL: ttl,
	}}
	if m.IdempotencyKey != "" {
		in.IdempotencyKey = m.IdempotencyKey
		in.DedupWindow = time.Duration(tc.DedupWindow)
		in.RequestHash = requestHash(m.Key, m.Payload, headers, m.Tombstone)
	}
	return in, part, nil
}

func requestHash(key string, payload, headers []byte, tombstone bool) string {
	h := sha256.New()
	for _, part := range [][]byte{[]byte(key), payload, headers} {
		fmt.Fprintf(h, "%d:", len(part))
		h.Write(part)
	}
	if tombstone {
		h.Write([]byte{1})
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// ReadMessages returns a topic's messages in one partition from a position
// on (for inspection and replay).
func (b *Bus) ReadMessages(ctx context.Context, topic string, partition int, from int64, limit int) ([]storage.Message, error) {
	if _, err := b.GetTopic(ctx, topic); err != nil {
		return nil, err
	}
	if partition < 0 || partition >= b.parts {
		return nil, invalid("partition", fmt.Sprintf("must be 0..%d", b.parts-1))
	}
	if from < 0 {
		return nil, invalid("from", "must be >= 0")
	}
	if limit <= 0 || limit > 1000 {
		return nil, invalid("limit", "must be 1..1000")
	}
	ms, err := b.store.MessageRead(ctx, &storage.MessageReadParams{Topic: topic, Partition: partition, FromPosition: from, Limit: limit})
	if err != nil {
		return nil, fmt.Errorf("bus: read messages: %w", err)
	}
	return ms, nil
}
