package client

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// The event bus (docs/bus.md): topics, consumer groups, publish, receive
// with ack, nack and heartbeat, dead letters, traces of flows.

// TopicConfig is a topic's configuration. Zero fields take the server's
// defaults.
type TopicConfig struct {
	// DefaultTTL is the lifetime of a message that gives none; 0: messages
	// do not expire.
	DefaultTTL time.Duration
	// RetentionAge deletes older messages. Default 7 days.
	RetentionAge time.Duration
	// KeepForever turns age retention off.
	KeepForever bool
	// RetentionBytes keeps, per partition, the newest messages whose
	// payloads sum to at most this; 0: no size limit.
	RetentionBytes int64
	// Compact keeps only the newest message of each key.
	Compact            bool
	TombstoneRetention time.Duration
	// DedupWindow is how long a publish's idempotency key is remembered.
	// Default 1h.
	DedupWindow time.Duration
	// MaxDeliveries is the default of the topic's groups. Default 5.
	MaxDeliveries int
}

// Topic is a topic with its configuration as given and with defaults.
type Topic struct {
	Name string
	// Created is true when PutTopic created the topic (false: it existed
	// and its configuration was replaced).
	Created   bool
	Config    TopicConfig
	Effective TopicConfig
	CreatedAt time.Time
	UpdatedAt time.Time
}

// Group start positions.
const (
	// StartEnd: the group gets messages published from its creation on.
	StartEnd = "end"
	// StartBeginning: the group gets every stored message.
	StartBeginning = "beginning"
	// StartTime: the group gets the messages published at or after
	// GroupConfig.StartAt.
	StartTime = "time"
)

// GroupConfig configures a consumer group. Zero fields take the server's
// defaults.
type GroupConfig struct {
	// Start is StartEnd (default), StartBeginning or StartTime (with
	// StartAt). It applies at creation only and is not reported back.
	Start   string
	StartAt time.Time
	// MaxDeliveries is how often a message is handed out before it is
	// dead-lettered. Default: the topic's.
	MaxDeliveries int
	// AckTimeout is how long a received message stays claimed. Default 30s.
	AckTimeout time.Duration
	// BackoffInitial and BackoffMax bound the delay before a nacked message
	// is handed out again. Default 1s and 5m.
	BackoffInitial time.Duration
	BackoffMax     time.Duration
	// Webhook makes the server push each message to an endpoint.
	Webhook *WebhookConfig
	// StartSaga makes the server start a saga per message.
	StartSaga *SagaTrigger
}

// WebhookConfig is a push subscription.
type WebhookConfig struct {
	URL         string
	Timeout     time.Duration
	Concurrency int
}

// SagaTrigger starts a saga of a definition per message, with the
// message's payload as input.
type SagaTrigger struct {
	Definition string
	Version    int // 0: the latest at each start
}

// Group is a consumer group. Partitions is set by GetGroup only.
type Group struct {
	Topic string
	Name  string
	// Created is true when CreateGroup created the group (false: it
	// existed with the same configuration).
	Created    bool
	Config     GroupConfig
	Effective  GroupConfig
	CreatedAt  time.Time
	Partitions []GroupPartition
}

// GroupPartition is a group's backlog in one partition.
type GroupPartition struct {
	Partition int `json:"partition"`
	// Pending counts the messages the group has not finished with.
	Pending  int `json:"pending"`
	InFlight int `json:"in_flight"`
	Blocked  int `json:"blocked"`
	// Position is the committed position: every message up to it is
	// finished.
	Position    int64 `json:"position"`
	OldestAgeMS int64 `json:"oldest_age_ms"`
	DeadLetters int   `json:"dead_letters"`
}

// Message is a message to publish.
type Message struct {
	// Key orders messages: those of one key reach each group one at a
	// time, in publish order. Empty: unordered.
	Key string
	// ID is the message id; empty: the server makes one.
	ID string
	// IdempotencyKey makes the publish safe to repeat within the topic's
	// dedup window (among messages with the same Key).
	IdempotencyKey string
	// CorrelationID ties the messages of one flow together; empty: the
	// message's id (it starts a flow).
	CorrelationID string
	Headers       map[string]string
	// Payload is marshalled to JSON; a json.RawMessage is sent as is.
	Payload any
	// Tombstone deletes Key from a compacted topic (no Payload).
	Tombstone bool
	// TTL overrides the topic's DefaultTTL.
	TTL time.Duration
}

// Published is the fate of one published message.
type Published struct {
	ID        string `json:"id"`
	Partition int    `json:"partition"`
	// Position and PublishedAt are zero for a duplicate.
	Position    int64     `json:"position,omitempty"`
	PublishedAt time.Time `json:"published_at,omitzero"`
	// Duplicate: the idempotency key named a message published before;
	// ID is that message's.
	Duplicate bool `json:"duplicate"`
}

// StoredMessage is a message as the bus stores it.
type StoredMessage struct {
	ID            string            `json:"id"`
	Topic         string            `json:"topic"`
	Key           string            `json:"key,omitempty"`
	CorrelationID string            `json:"correlation_id"`
	Partition     int               `json:"partition"`
	Position      int64             `json:"position"`
	Headers       map[string]string `json:"headers,omitempty"`
	Payload       json.RawMessage   `json:"payload,omitempty"`
	Tombstone     bool              `json:"tombstone,omitempty"`
	PublishedAt   time.Time         `json:"published_at"`
	ExpiresAt     time.Time         `json:"expires_at,omitzero"`
}

// Attempt is one earlier, failed delivery of a message.
type Attempt struct {
	Attempt int       `json:"attempt"`
	At      time.Time `json:"at,omitzero"`
	// Outcome is "nack" or "expired" (the consumer never answered).
	Outcome string `json:"outcome"`
	Reason  string `json:"reason,omitempty"`
}

// Delivery is a received message. Ack, nack or heartbeat it with its
// Receipt.
type Delivery struct {
	Receipt string `json:"receipt"`
	// Attempt counts the hand-outs of the message to the group, this one
	// included.
	Attempt int       `json:"attempt"`
	History []Attempt `json:"history,omitempty"`
	StoredMessage
}

// ReceiveOptions asks for messages.
type ReceiveOptions struct {
	// Max messages to claim, 1..1000. Default 1.
	Max int
	// Wait is how long the server holds the receive when no message is
	// ready. Default 0 (answer at once); at most 60s.
	Wait time.Duration
	// Visibility is how long the messages stay claimed. Default the
	// group's ack timeout; at most 12h.
	Visibility time.Duration
}

// RedeliverNow is the NackOptions.Delay that hands a message out again at
// once.
const RedeliverNow time.Duration = -1

// NackOptions says how a message failed.
type NackOptions struct {
	// Reason is kept in the message's attempt history.
	Reason string
	// Delay before the message is handed out again: > 0 that long; 0 the
	// group's backoff; RedeliverNow at once.
	Delay time.Duration
	// DeadLetter sends the message to the group's dead letters at once: it
	// can never succeed.
	DeadLetter bool
}

// DeadLetter is a message a group gave up on.
type DeadLetter struct {
	ID       int64         `json:"id"`
	Reason   string        `json:"reason,omitempty"`
	Attempts int           `json:"attempts"`
	History  []Attempt     `json:"history,omitempty"`
	DeadAt   time.Time     `json:"dead_at"`
	Message  StoredMessage `json:"message"`
}

// DeadLetterOptions pages dead letters.
type DeadLetterOptions struct {
	After int64 // NextAfter of the previous page
	Limit int   // 1..1000; 0: the server's default (100)
}

// DeadLetterPage is a page of dead letters.
type DeadLetterPage struct {
	DeadLetters []DeadLetter `json:"dead_letters"`
	// NextAfter is the After of the next page; 0 on the last.
	NextAfter int64 `json:"next_after,omitempty"`
}

// Trace is one flow: its messages in publish order.
type Trace struct {
	CorrelationID string         `json:"correlation_id"`
	Messages      []TraceMessage `json:"messages"`
}

// TraceMessage is one message of a flow with each group's status for it.
type TraceMessage struct {
	StoredMessage
	Groups []TraceGroup `json:"groups"`
}

// TraceGroup is one group's handling of a message.
type TraceGroup struct {
	Group string `json:"group"`
	// Status is pending, blocked, in_flight, dead_lettered or done.
	Status   string `json:"status"`
	Attempts int    `json:"attempts"`
	AgeMS    int64  `json:"age_ms"`
}

// Stalled lists messages a group has not finished with for longer than
// the server's stall threshold, oldest first.
type Stalled struct {
	StallAfter string           `json:"stall_after"`
	Messages   []StalledMessage `json:"messages"`
}

// StalledMessage is one stalled message of one group.
type StalledMessage struct {
	Group    string        `json:"group"`
	Attempts int           `json:"attempts"`
	AgeMS    int64         `json:"age_ms"`
	Message  StoredMessage `json:"message"`
}

// ---- wire forms: durations travel as Go duration strings.

func durText(d time.Duration) string {
	if d == 0 {
		return ""
	}
	return d.String()
}

func durOf(s string) time.Duration {
	d, _ := time.ParseDuration(s) // the server writes them; a bad one reads as 0
	return d
}

type topicConfigWire struct {
	DefaultTTL         string `json:"default_ttl,omitempty"`
	RetentionAge       string `json:"retention_age,omitempty"`
	KeepForever        bool   `json:"keep_forever,omitempty"`
	RetentionBytes     int64  `json:"retention_bytes,omitempty"`
	Compact            bool   `json:"compact,omitempty"`
	TombstoneRetention string `json:"tombstone_retention,omitempty"`
	DedupWindow        string `json:"dedup_window,omitempty"`
	MaxDeliveries      int    `json:"max_deliveries,omitempty"`
}

func (c TopicConfig) wire() topicConfigWire {
	return topicConfigWire{
		DefaultTTL: durText(c.DefaultTTL), RetentionAge: durText(c.RetentionAge), KeepForever: c.KeepForever,
		RetentionBytes: c.RetentionBytes, Compact: c.Compact, TombstoneRetention: durText(c.TombstoneRetention),
		DedupWindow: durText(c.DedupWindow), MaxDeliveries: c.MaxDeliveries,
	}
}

func (w topicConfigWire) config() TopicConfig {
	return TopicConfig{
		DefaultTTL: durOf(w.DefaultTTL), RetentionAge: durOf(w.RetentionAge), KeepForever: w.KeepForever,
		RetentionBytes: w.RetentionBytes, Compact: w.Compact, TombstoneRetention: durOf(w.TombstoneRetention),
		DedupWindow: durOf(w.DedupWindow), MaxDeliveries: w.MaxDeliveries,
	}
}

type topicWire struct {
	Name      string          `json:"name"`
	Config    topicConfigWire `json:"config"`
	Effective topicConfigWire `json:"effective"`
	CreatedAt time.Time       `json:"created_at"`
	UpdatedAt time.Time       `json:"updated_at"`
}

func (w topicWire) topic() Topic {
	return Topic{Name: w.Name, Config: w.Config.config(), Effective: w.Effective.config(), CreatedAt: w.CreatedAt, UpdatedAt: w.UpdatedAt}
}

type groupConfigWire struct {
	Start         string    `json:"start,omitempty"`
	StartAt       time.Time `json:"start_at,omitzero"`
	MaxDeliveries int       `json:"max_deliveries,omitempty"`
	AckTimeout    string    `json:"ack_timeout,omitempty"`
	Backoff       *struct {
		Initial string `json:"initial,omitempty"`
		Max     string `json:"max,omitempty"`
	} `json:"backoff,omitempty"`
	Webhook *struct {
		URL         string `json:"url"`
		Timeout     string `json:"timeout,omitempty"`
		Concurrency int    `json:"concurrency,omitempty"`
	} `json:"webhook,omitempty"`
	StartSaga *struct {
		Definition string `json:"definition"`
		Version    int    `json:"version,omitempty"`
	} `json:"start_saga,omitempty"`
}

func (c GroupConfig) wire() groupConfigWire {
	w := groupConfigWire{Start: c.Start, StartAt: c.StartAt, MaxDeliveries: c.MaxDeliveries, AckTimeout: durText(c.AckTimeout)}
	if c.BackoffInitial != 0 || c.BackoffMax != 0 {
		w.Backoff = &struct {
			Initial string `json:"initial,omitempty"`
			Max     string `json:"max,omitempty"`
		}{durText(c.BackoffInitial), durText(c.BackoffMax)}
	}
	if h := c.Webhook; h != nil {
		w.Webhook = &struct {
			URL         string `json:"url"`
			Timeout     string `json:"timeout,omitempty"`
			Concurrency int    `json:"concurrency,omitempty"`
		}{h.URL, durText(h.Timeout), h.Concurrency}
	}
	if s := c.StartSaga; s != nil {
		w.StartSaga = &struct {
			Definition string `json:"definition"`
			Version    int    `json:"version,omitempty"`
		}{s.Definition, s.Version}
	}
	return w
}

func (w groupConfigWire) config() GroupConfig {
	c := GroupConfig{MaxDeliveries: w.MaxDeliveries, AckTimeout: durOf(w.AckTimeout)}
	if b := w.Backoff; b != nil {
		c.BackoffInitial, c.BackoffMax = durOf(b.Initial), durOf(b.Max)
	}
	if h := w.Webhook; h != nil {
		c.Webhook = &WebhookConfig{URL: h.URL, Timeout: durOf(h.Timeout), Concurrency: h.Concurrency}
	}
	if s := w.StartSaga; s != nil {
		c.StartSaga = &SagaTrigger{Definition: s.Definition, Version: s.Version}
	}
	return c
}

type groupWire struct {
	Topic      string           `json:"topic"`
	Name       string           `json:"name"`
	Config     groupConfigWire  `json:"config"`
	Effective  groupConfigWire  `json:"effective"`
	CreatedAt  time.Time        `json:"created_at"`
	Partitions []GroupPartition `json:"partitions,omitempty"`
}

func (w groupWire) group() Group {
	return Group{Topic: w.Topic, Name: w.Name, Config: w.Config.config(), Effective: w.Effective.config(),
		CreatedAt: w.CreatedAt, Partitions: w.Partitions}
}

func topicPath(topic string, rest ...string) string {
	p := "/v1/topics/" + url.PathEscape(topic)
	for _, r := range rest {
		p += "/" + r
	}
	return p
}

// MarshalJSON writes a topic as the server does, durations as Go duration
// strings.
func (t Topic) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		topicWire
		Created bool `json:"created"`
	}{topicWire{Name: t.Name, Config: t.Config.wire(), Effective: t.Effective.wire(), CreatedAt: t.CreatedAt, UpdatedAt: t.UpdatedAt}, t.Created})
}

// MarshalJSON writes a group as the server does, durations as Go duration
// strings.
func (g Group) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		groupWire
		Created bool `json:"created"`
	}{groupWire{Topic: g.Topic, Name: g.Name, Config: g.Config.wire(), Effective: g.Effective.wire(), CreatedAt: g.CreatedAt,
		Partitions: g.Partitions}, g.Created})
}

// UnmarshalJSON reads a topic as MarshalJSON writes it.
func (t *Topic) UnmarshalJSON(b []byte) error {
	var w struct {
		topicWire
		Created bool `json:"created"`
	}
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	*t = w.topic()
	t.Created = w.Created
	return nil
}

// UnmarshalJSON reads a group as MarshalJSON writes it.
func (g *Group) UnmarshalJSON(b []byte) error {
	var w struct {
		groupWire
		Created bool `json:"created"`
	}
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	*g = w.group()
	g.Created = w.Created
	return nil
}

func groupPath(topic, group string, rest ...string) string {
	return topicPath(topic, append([]string{"groups", url.PathEscape(group)}, rest...)...)
}

// ---- topics

// PutTopic creates a topic (Created true) or replaces its configuration.
func (c *Client) PutTopic(ctx context.Context, name string, cfg TopicConfig) (*Topic, error) {
	var out topicWire
	cl, err := jsonCall(http.MethodPut, topicPath(name), cfg.wire(), retrySafe, &out)
	if err != nil {
		return nil, err
	}
	res, err := c.do(ctx, cl)
	if err != nil {
		return nil, err
	}
	t := out.topic()
	t.Created = res.status == http.StatusCreated
	return &t, nil
}

// GetTopic returns a topic; IsNotFound if there is none.
func (c *Client) GetTopic(ctx context.Context, name string) (*Topic, error) {
	var out topicWire
	if _, err := c.do(ctx, &call{method: http.MethodGet, path: topicPath(name), out: &out}); err != nil {
		return nil, err
	}
	t := out.topic()
	return &t, nil
}

// ListTopics lists every topic by name.
func (c *Client) ListTopics(ctx context.Context) ([]Topic, error) {
	var out struct {
		Topics []topicWire `json:"topics"`
	}
	if _, err := c.do(ctx, &call{method: http.MethodGet, path: "/v1/topics", out: &out}); err != nil {
		return nil, err
	}
	ts := make([]Topic, len(out.Topics))
	for i, t := range out.Topics {
		ts[i] = t.topic()
	}
	return ts, nil
}

// DeleteTopic deletes a topic with its messages, groups and dead letters.
func (c *Client) DeleteTopic(ctx context.Context, name string) error {
	_, err := c.do(ctx, &call{method: http.MethodDelete, path: topicPath(name), retry: retryRefused})
	return err
}

// ---- groups

// CreateGroup creates a consumer group (Created true); creating it again
// with the same configuration returns it. IsConflict (ProblemGroupExists)
// if it exists with another configuration.
func (c *Client) CreateGroup(ctx context.Context, topic, group string, cfg GroupConfig) (*Group, error) {
	var out groupWire
	cl, err := jsonCall(http.MethodPut, groupPath(topic, group), cfg.wire(), retrySafe, &out)
	if err != nil {
		return nil, err
	}
	res, err := c.do(ctx, cl)
	if err != nil {
		return nil, err
	}
	g := out.group()
	g.Created = res.status == http.StatusCreated
	return &g, nil
}

// GetGroup returns a group with its backlog per partition.
func (c *Client) GetGroup(ctx context.Context, topic, group string) (*Group, error) {
	var out groupWire
	if _, err := c.do(ctx, &call{method: http.MethodGet, path: groupPath(topic, group), out: &out}); err != nil {
		return nil, err
	}
	g := out.group()
	return &g, nil
}

// ListGroups lists a topic's groups.
func (c *Client) ListGroups(ctx context.Context, topic string) ([]Group, error) {
	var out struct {
		Groups []groupWire `json:"groups"`
	}
	if _, err := c.do(ctx, &call{method: http.MethodGet, path: topicPath(topic, "groups"), out: &out}); err != nil {
		return nil, err
	}
	gs := make([]Group, len(out.Groups))
	for i, g := range out.Groups {
		gs[i] = g.group()
	}
	return gs, nil
}

// DeleteGroup deletes a group with its deliveries and dead letters.
func (c *Client) DeleteGroup(ctx context.Context, topic, group string) error {
	_, err := c.do(ctx, &call{method: http.MethodDelete, path: groupPath(topic, group), retry: retryRefused})
	return err
}

// ---- publishing

type messageWire struct {
	Key            string            `json:"key,omitempty"`
	ID             string            `json:"id,omitempty"`
	IdempotencyKey string            `json:"idempotency_key,omitempty"`
	CorrelationID  string            `json:"correlation_id,omitempty"`
	Headers        map[string]string `json:"headers,omitempty"`
	Payload        json.RawMessage   `json:"payload,omitempty"`
	Tombstone      bool              `json:"tombstone,omitempty"`
	TTL            string            `json:"ttl,omitempty"`
}

// Publish writes messages (1..1000) to a topic and returns each one's
// fate in order, once they are durable. A publish whose messages all
// carry an IdempotencyKey is retried after a lost connection; others are
// retried only when the server refused them before doing anything, as a
// repeat would publish them twice. IsIdempotencyMismatch: a key was used
// for other content.
func (c *Client) Publish(ctx context.Context, topic string, msgs ...Message) ([]Published, error) {
	body := struct {
		Messages []messageWire `json:"messages"`
	}{Messages: make([]messageWire, len(msgs))}
	retry := retrySafe
	for i, m := range msgs {
		w := messageWire{Key: m.Key, ID: m.ID, IdempotencyKey: m.IdempotencyKey, CorrelationID: m.CorrelationID,
			Headers: m.Headers, Tombstone: m.Tombstone, TTL: durText(m.TTL)}
		if m.Payload != nil {
			b, err := json.Marshal(m.Payload)
			if err != nil {
				return nil, fmt.Errorf("accord: encode payload of message %d: %w", i, err)
			}
			w.Payload = b
		}
		if m.IdempotencyKey == "" {
			retry = retryRefused
		}
		body.Messages[i] = w
	}
	var out struct {
		Results []Published `json:"results"`
	}
	cl, err := jsonCall(http.MethodPost, topicPath(topic, "messages"), body, retry, &out)
	if err != nil {
		return nil, err
	}
	if _, err := c.do(ctx, cl); err != nil {
		return nil, err
	}
	if len(out.Results) != len(msgs) {
		return nil, fmt.Errorf("accord: publish answered %d results for %d messages", len(out.Results), len(msgs))
	}
	return out.Results, nil
}

// ReadMessages returns up to limit of a topic's messages in one partition,
// from a position on (limit 0: the server's default, 100).
func (c *Client) ReadMessages(ctx context.Context, topic string, partition int, from int64, limit int) ([]StoredMessage, error) {
	q := url.Values{"partition": {strconv.Itoa(partition)}, "from": {strconv.FormatInt(from, 10)}}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var out struct {
		Messages []StoredMessage `json:"messages"`
	}
	if _, err := c.do(ctx, &call{method: http.MethodGet, path: topicPath(topic, "messages"), query: q, out: &out}); err != nil {
		return nil, err
	}
	return out.Messages, nil
}

// ---- consuming

// Receive claims up to opts.Max messages of a group, waiting up to
// opts.Wait for one. Like Poll, it is not repeated after a lost
// connection (its messages would stay claimed): the caller receives
// again.
func (c *Client) Receive(ctx context.Context, topic, group string, opts ReceiveOptions) ([]Delivery, error) {
	body := map[string]any{}
	if opts.Max > 0 {
		body["max"] = opts.Max
	}
	if opts.Wait > 0 {
		body["wait"] = opts.Wait.String()
	}
	if opts.Visibility > 0 {
		body["visibility"] = opts.Visibility.String()
	}
	var out struct {
		Messages []Delivery `json:"messages"`
	}
	cl, err := jsonCall(http.MethodPost, groupPath(topic, group, "receive"), body, retryRefused, &out)
	if err != nil {
		return nil, err
	}
	cl.timeout = opts.Wait + longPollMargin
	if _, err := c.do(ctx, cl); err != nil {
		return nil, err
	}
	return out.Messages, nil
}

// Ack acknowledges received messages. The slice has one entry per
// receipt, in order: nil when acked, else an *Error (IsReceiptLost: the
// claim is gone and the message may be handed to another consumer;
// IsInvalid: not a receipt). The error is for the request as a whole.
func (c *Client) Ack(ctx context.Context, topic, group string, receipts ...string) ([]error, error) {
	var out struct {
		Results []struct {
			Status  int    `json:"status"`
			Problem *Error `json:"problem,omitempty"`
		} `json:"results"`
	}
	cl, err := jsonCall(http.MethodPost, groupPath(topic, group, "ack"), map[string]any{"receipts": receipts}, retryRefused, &out)
	if err != nil {
		return nil, err
	}
	if _, err := c.do(ctx, cl); err != nil {
		return nil, err
	}
	if len(out.Results) != len(receipts) {
		return nil, fmt.Errorf("accord: ack answered %d results for %d receipts", len(out.Results), len(receipts))
	}
	errs := make([]error, len(receipts))
	for i, r := range out.Results {
		if r.Status >= 300 {
			errs[i] = itemError(r.Status, r.Problem)
		}
	}
	return errs, nil
}

// Nack reports a received message as failed: it is handed out again after
// opts.Delay (default the group's backoff), or dead-lettered at once with
// opts.DeadLetter. IsReceiptLost: the claim is gone.
func (c *Client) Nack(ctx context.Context, topic, group, receipt string, opts NackOptions) error {
	body := map[string]any{"receipt": receipt}
	if opts.Reason != "" {
		body["reason"] = opts.Reason
	}
	switch {
	case opts.Delay > 0:
		body["delay"] = opts.Delay.String()
	case opts.Delay < 0:
		body["delay"] = "0s"
	}
	if opts.DeadLetter {
		body["dead_letter"] = true
	}
	cl, err := jsonCall(http.MethodPost, groupPath(topic, group, "nack"), body, retryRefused, nil)
	if err != nil {
		return err
	}
	_, err = c.do(ctx, cl)
	return err
}

// HeartbeatMessage extends a received message's claim by extend (0: the
// group's ack timeout). IsReceiptLost: the claim is gone; stop working on
// the message.
func (c *Client) HeartbeatMessage(ctx context.Context, topic, group, receipt string, extend time.Duration) error {
	body := map[string]any{"receipt": receipt}
	if extend > 0 {
		body["extend"] = extend.String()
	}
	cl, err := jsonCall(http.MethodPost, groupPath(topic, group, "heartbeat"), body, retrySafe, nil)
	if err != nil {
		return err
	}
	_, err = c.do(ctx, cl)
	return err
}

// ---- dead letters

// DeadLetters returns one page of a group's dead letters.
func (c *Client) DeadLetters(ctx context.Context, topic, group string, opts DeadLetterOptions) (*DeadLetterPage, error) {
	q := url.Values{}
	if opts.After > 0 {
		q.Set("after", strconv.FormatInt(opts.After, 10))
	}
	if opts.Limit > 0 {
		q.Set("limit", strconv.Itoa(opts.Limit))
	}
	out := &DeadLetterPage{}
	if _, err := c.do(ctx, &call{method: http.MethodGet, path: groupPath(topic, group, "dead-letters"), query: q, out: out}); err != nil {
		return nil, err
	}
	return out, nil
}

// ReplayDeadLetters gives dead letters back to their group and returns how
// many went back. With no ids, every dead letter of the group.
func (c *Client) ReplayDeadLetters(ctx context.Context, topic, group string, ids ...int64) (int, error) {
	return c.deadLetterOp(ctx, topic, group, "replay", ids)
}

// PurgeDeadLetters deletes dead letters and returns how many. With no ids,
// every dead letter of the group.
func (c *Client) PurgeDeadLetters(ctx context.Context, topic, group string, ids ...int64) (int, error) {
	return c.deadLetterOp(ctx, topic, group, "purge", ids)
}

func (c *Client) deadLetterOp(ctx context.Context, topic, group, op string, ids []int64) (int, error) {
	body := map[string]any{"all": true}
	if len(ids) > 0 {
		body = map[string]any{"ids": ids}
	}
	var out struct {
		Count int `json:"count"`
	}
	cl, err := jsonCall(http.MethodPost, groupPath(topic, group, "dead-letters", op), body, retrySafe, &out)
	if err != nil {
		return 0, err
	}
	if _, err := c.do(ctx, cl); err != nil {
		return 0, err
	}
	return out.Count, nil
}

// ---- flows

// Trace returns every message of a flow, in publish order, with each
// group's status for it. IsNotFound when no message has the id.
func (c *Client) Trace(ctx context.Context, correlationID string) (*Trace, error) {
	out := &Trace{}
	if _, err := c.do(ctx, &call{method: http.MethodGet, path: "/v1/traces/" + url.PathEscape(correlationID), out: out}); err != nil {
		return nil, err
	}
	return out, nil
}

// Stalled lists up to limit messages (0: the server's default, 100) that a
// group has not finished with for longer than the server's threshold,
// oldest first.
func (c *Client) Stalled(ctx context.Context, limit int) (*Stalled, error) {
	q := url.Values{}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	out := &Stalled{}
	if _, err := c.do(ctx, &call{method: http.MethodGet, path: "/v1/bus/stalled", query: q, out: out}); err != nil {
		return nil, err
	}
	return out, nil
}
