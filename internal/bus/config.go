package bus

import (
	"encoding/json"
	"fmt"
	"regexp"
	"time"

	"github.com/accord-saga/accord/internal/saga"
)

// Duration is a JSON duration written as a Go duration string ("30s").
type Duration = saga.Duration

// TopicConfig is a topic's configuration. Zero fields take the defaults
// below.
type TopicConfig struct {
	// DefaultTTL is the lifetime of a message that gives none; 0: messages
	// do not expire.
	DefaultTTL Duration `json:"default_ttl,omitzero"`
	// RetentionAge deletes messages older than it. Default 7 days (set
	// KeepForever to keep messages regardless of age).
	RetentionAge Duration `json:"retention_age,omitzero"`
	// KeepForever disables age retention.
	KeepForever bool `json:"keep_forever,omitzero"`
	// RetentionBytes keeps, per partition, the newest messages whose
	// payloads sum to at most this many bytes; 0: no size limit.
	RetentionBytes int64 `json:"retention_bytes,omitzero"`
	// Compact keeps only the newest message of each key (a tombstone
	// deletes its key once TombstoneRetention has passed).
	Compact            bool     `json:"compact,omitzero"`
	TombstoneRetention Duration `json:"tombstone_retention,omitzero"`
	// DedupWindow is how long a publish's idempotency key is remembered.
	// Default 1h.
	DedupWindow Duration `json:"dedup_window,omitzero"`
	// MaxDeliveries is the default of the topic's groups. Default 5.
	MaxDeliveries int `json:"max_deliveries,omitzero"`
}

// Defaults.
const (
	DefaultRetentionAge       = 7 * 24 * time.Hour
	DefaultTombstoneRetention = 24 * time.Hour
	DefaultDedupWindow        = time.Hour
	DefaultMaxDeliveries      = 5
	DefaultAckTimeout         = 30 * time.Second
	DefaultBackoffInitial     = time.Second
	DefaultBackoffMax         = 5 * time.Minute
	DefaultWebhookTimeout     = 10 * time.Second
	DefaultWebhookConcurrency = 4
	// MaxDuration bounds every duration of a configuration.
	MaxDuration = 365 * 24 * time.Hour
	// MaxDeliveriesLimit bounds MaxDeliveries.
	MaxDeliveriesLimit = 1000
)

func (c TopicConfig) withDefaults() TopicConfig {
	if c.RetentionAge == 0 && !c.KeepForever {
		c.RetentionAge = Duration(DefaultRetentionAge)
	}
	if c.TombstoneRetention == 0 {
		c.TombstoneRetention = Duration(DefaultTombstoneRetention)
	}
	if c.DedupWindow == 0 {
		c.DedupWindow = Duration(DefaultDedupWindow)
	}
	if c.MaxDeliveries == 0 {
		c.MaxDeliveries = DefaultMaxDeliveries
	}
	return c
}

func (c TopicConfig) validate() error {
	if c.KeepForever && c.RetentionAge != 0 {
		return invalid("retention_age", "must be absent when keep_forever is true")
	}
	for _, d := range []struct {
		field string
		v     Duration
	}{
		{"default_ttl", c.DefaultTTL}, {"retention_age", c.RetentionAge},
		{"tombstone_retention", c.TombstoneRetention}, {"dedup_window", c.DedupWindow},
	} {
		if err := checkDuration(d.field, d.v); err != nil {
			return err
		}
	}
	if c.RetentionBytes < 0 {
		return invalid("retention_bytes", "must be >= 0")
	}
	if c.MaxDeliveries < 0 || c.MaxDeliveries > MaxDeliveriesLimit {
		return invalid("max_deliveries", fmt.Sprintf("must be 1..%d", MaxDeliveriesLimit))
	}
	return nil
}

// GroupConfig is a consumer group's configuration.
type GroupConfig struct {
	// MaxDeliveries is how often a message is handed out before it goes to
	// the dead letters. Default: the topic's.
	MaxDeliveries int `json:"max_deliveries,omitzero"`
	// AckTimeout is how long a received message stays claimed without an
	// ack, nack or heartbeat. Default 30s.
	AckTimeout Duration `json:"ack_timeout,omitzero"`
	// Backoff is the delay before a nacked message is handed out again:
	// Initial × 2^(attempt−1), at most Max, with up to 20 % jitter.
	Backoff Backoff `json:"backoff,omitzero"`
	// Webhook, if set, makes Accord push each message to an HTTP endpoint
	// instead of waiting for consumers to receive them.
	Webhook *Webhook `json:"webhook,omitempty"`
	// StartSaga, if set, starts a saga for each message (its payload is the
	// saga's input; the message id makes the start idempotent).
	StartSaga *Trigger `json:"start_saga,omitempty"`
}

// Backoff configures nack redelivery delays.
type Backoff struct {
	Initial Duration `json:"initial,omitzero"`
	Max     Duration `json:"max,omitzero"`
}

// Webhook is a push subscription.
type Webhook struct {
	URL         string   `json:"url"`
	Timeout     Duration `json:"timeout,omitzero"`
	Concurrency int      `json:"concurrency,omitzero"`
}

// Trigger starts sagas from a topic.
type Trigger struct {
	Definition string `json:"definition"`
	Version    int    `json:"version,omitzero"` // 0: the latest at each start
}

func (c GroupConfig) withDefaults(topic TopicConfig) GroupConfig {
	if c.MaxDeliveries == 0 {
		c.MaxDeliveries = topic.withDefaults().MaxDeliveries
	}
	if c.AckTimeout == 0 {
		c.AckTimeout = Duration(DefaultAckTimeout)
	}
	if c.Backoff.Initial == 0 {
		c.Backoff.Initial = Duration(DefaultBackoffInitial)
	}
	if c.Backoff.Max == 0 {
		c.Backoff.Max = Duration(max(DefaultBackoffMax, time.Duration(c.Backoff.Initial)))
	}
	if w := c.Webhook; w != nil {
		cp := *w
		if cp.Timeout == 0 {
			cp.Timeout = Duration(DefaultWebhookTimeout)
		}
		if cp.Concurrency == 0 {
			cp.Concurrency = DefaultWebhookConcurrency
		}
		c.Webhook = &cp
	}
	return c
}

func (c GroupConfig) validate(checkURL func(string) error) error {
	if c.MaxDeliveries < 0 || c.MaxDeliveries > MaxDeliveriesLimit {
		return invalid("max_deliveries", fmt.Sprintf("must be 1..%d", MaxDeliveriesLimit))
	}
	if c.AckTimeout != 0 && (c.AckTimeout < Duration(100*time.Millisecond) || c.AckTimeout > Duration(12*time.Hour)) {
		return invalid("ack_timeout", "must be 100ms..12h")
	}
	for _, d := range []struct {
		field string
		v     Duration
	}{{"backoff.initial", c.Backoff.Initial}, {"backoff.max", c.Backoff.Max}} {
		if err := checkDuration(d.field, d.v); err != nil {
			return err
		}
	}
	if c.Backoff.Max != 0 && c.Backoff.Max < c.Backoff.Initial {
		return invalid("backoff.max", "must be >= backoff.initial")
	}
	if c.Webhook != nil && c.StartSaga != nil {
		return invalid("webhook", "a group either pushes to a webhook or starts sagas, not both")
	}
	if w := c.Webhook; w != nil {
		if w.URL == "" {
			return invalid("webhook.url", "is required")
		}
		if checkURL != nil {
			if err := checkURL(w.URL); err != nil {
				return invalid("webhook.url", err.Error())
			}
		}
		if w.Timeout != 0 && (w.Timeout < Duration(10*time.Millisecond) || w.Timeout > Duration(10*time.Minute)) {
			return invalid("webhook.timeout", "must be 10ms..10m")
		}
		if w.Concurrency < 0 || w.Concurrency > 256 {
			return invalid("webhook.concurrency", "must be 1..256")
		}
	}
	if t := c.StartSaga; t != nil {
		if t.Definition == "" {
			return invalid("start_saga.definition", "is required")
		}
		if t.Version < 0 {
			return invalid("start_saga.version", "must be >= 0")
		}
	}
	return nil
}

func checkDuration(field string, d Duration) error {
	if d < 0 || time.Duration(d) > MaxDuration {
		return invalid(field, "must be between 0 and 8760h")
	}
	return nil
}

// namePattern is what topic and group names may be: they appear in URLs,
// metrics labels and idempotency scopes.
var namePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

func checkName(field, s string) error {
	if !namePattern.MatchString(s) {
		return invalid(field, "must be 1..128 characters of [A-Za-z0-9._-], starting with a letter or digit")
	}
	return nil
}

// decodeConfig reads a stored configuration document.
func decodeConfig[T any](b []byte) (T, error) {
	var c T
	if len(b) == 0 {
		return c, nil
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return c, fmt.Errorf("bus: stored configuration: %w", err)
	}
	return c, nil
}
