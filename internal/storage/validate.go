package storage

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"unicode"

	"github.com/accord-saga/accord/internal/ident"
)

// Limits on what one call may carry. They keep one transaction, one row and
// one response bounded whatever a caller sends.
const (
	MaxEventsPerCommit = 10_000
	MaxKeyLength       = 512     // stream names, ids, queue names, scopes, keys
	MaxPayloadBytes    = 4 << 20 // event data, task and timer payloads, results
	MaxReadLimit       = 10_000
)

// Validate checks a commit against the store's partition count. Backends
// call it before opening a transaction.
func (p *CommitParams) Validate(partitions int) error {
	if p.Partition < 0 || p.Partition >= partitions {
		return fmt.Errorf("%w: partition %d out of range [0,%d)", ErrInvalid, p.Partition, partitions)
	}
	if p.Epoch <= 0 {
		return fmt.Errorf("%w: epoch must be > 0", ErrInvalid)
	}
	n := 0
	seen := make(map[string]bool, len(p.Appends))
	for i, a := range p.Appends {
		if err := checkKey("stream", a.Stream); err != nil {
			return fmt.Errorf("append %d: %w", i, err)
		}
		if seen[a.Stream] {
			return fmt.Errorf("%w: append %d: stream %q appears twice in one commit", ErrInvalid, i, a.Stream)
		}
		seen[a.Stream] = true
		if a.ExpectedVersion < AnyVersion {
			return fmt.Errorf("%w: append %d: expected version %d", ErrInvalid, i, a.ExpectedVersion)
		}
		if len(a.Events) == 0 {
			return fmt.Errorf("%w: append %d: no events", ErrInvalid, i)
		}
		for j, e := range a.Events {
			if e.Type == "" || len(e.Type) > MaxKeyLength {
				return fmt.Errorf("%w: append %d event %d: type must be 1..%d bytes", ErrInvalid, i, j, MaxKeyLength)
			}
			if len(e.Data)+len(e.Metadata) > MaxPayloadBytes {
				return fmt.Errorf("%w: append %d event %d: larger than %d bytes", ErrInvalid, i, j, MaxPayloadBytes)
			}
		}
		n += len(a.Events)
	}
	if n > MaxEventsPerCommit {
		return fmt.Errorf("%w: %d events in one commit, at most %d", ErrInvalid, n, MaxEventsPerCommit)
	}
	for i, k := range p.IdempotencyKeys {
		if err := checkKey("idempotency scope", k.Scope); err != nil {
			return fmt.Errorf("idempotency key %d: %w", i, err)
		}
		if err := checkKey("idempotency key", k.Key); err != nil {
			return fmt.Errorf("idempotency key %d: %w", i, err)
		}
		if k.TTL <= 0 {
			return fmt.Errorf("%w: idempotency key %d: ttl must be > 0", ErrInvalid, i)
		}
		if len(k.Result) > MaxPayloadBytes {
			return fmt.Errorf("%w: idempotency key %d: result larger than %d bytes", ErrInvalid, i, MaxPayloadBytes)
		}
	}
	for i, t := range p.TaskInserts {
		if err := checkKey("task id", t.ID); err != nil {
			return fmt.Errorf("task %d: %w", i, err)
		}
		if err := checkKey("queue", t.Queue); err != nil {
			return fmt.Errorf("task %d: %w", i, err)
		}
		if t.Delay < 0 || (t.ClaimToken != "" && t.ClaimFor <= 0) {
			return fmt.Errorf("%w: task %d: negative delay, or claim token without a claim duration", ErrInvalid, i)
		}
		if len(t.Payload) > MaxPayloadBytes {
			return fmt.Errorf("%w: task %d: payload larger than %d bytes", ErrInvalid, i, MaxPayloadBytes)
		}
	}
	for i, t := range p.TimerInserts {
		if err := checkKey("timer id", t.ID); err != nil {
			return fmt.Errorf("timer %d: %w", i, err)
		}
		if t.Delay < 0 {
			return fmt.Errorf("%w: timer %d: negative delay", ErrInvalid, i)
		}
		if len(t.Payload) > MaxPayloadBytes {
			return fmt.Errorf("%w: timer %d: payload larger than %d bytes", ErrInvalid, i, MaxPayloadBytes)
		}
	}
	for i, c := range p.ConsumerPositions {
		if err := checkKey("consumer", c.Consumer); err != nil {
			return fmt.Errorf("consumer position %d: %w", i, err)
		}
		if c.Partition < 0 || c.Partition >= partitions || c.Position < 0 {
			return fmt.Errorf("%w: consumer position %d: partition or position out of range", ErrInvalid, i)
		}
	}
	if len(p.Publishes) > MaxEventsPerCommit {
		return fmt.Errorf("%w: %d messages in one commit, at most %d", ErrInvalid, len(p.Publishes), MaxEventsPerCommit)
	}
	for i := range p.Publishes {
		if err := p.Publishes[i].validate(); err != nil {
			return fmt.Errorf("publish %d: %w", i, err)
		}
	}
	for i, s := range p.SagaUpserts {
		if err := checkKey("saga id", s.ID); err != nil {
			return fmt.Errorf("saga %d: %w", i, err)
		}
		if s.Partition != p.Partition {
			return fmt.Errorf("%w: saga %d: partition %d in a commit for partition %d", ErrInvalid, i, s.Partition, p.Partition)
		}
		if s.Status == "" || s.Definition == "" {
			return fmt.Errorf("%w: saga %d: status and definition are required", ErrInvalid, i)
		}
	}
	for i, d := range p.Definitions {
		if err := checkKey("definition name", d.Name); err != nil {
			return fmt.Errorf("definition %d: %w", i, err)
		}
		if d.Version <= 0 {
			return fmt.Errorf("%w: definition %d: version must be > 0", ErrInvalid, i)
		}
	}
	return nil
}

// Validate checks the params of DefinitionSetDisabled.
func (p *DefinitionSetDisabledParams) Validate() error {
	return checkDefinitionRef(p.Name, p.Version)
}

// Validate checks the params of DefinitionDelete.
func (p *DefinitionDeleteParams) Validate() error {
	return checkDefinitionRef(p.Name, p.Version)
}

func checkDefinitionRef(name string, version int) error {
	if err := checkKey("definition name", name); err != nil {
		return err
	}
	if version <= 0 {
		return fmt.Errorf("%w: definition version %d must be > 0", ErrInvalid, version)
	}
	return nil
}

func (m *MessageInput) validate() error {
	if err := CheckTopic(m.Topic); err != nil {
		return err
	}
	if err := checkKey("message id", m.ID); err != nil {
		return err
	}
	if len(m.Key) > MaxKeyLength || len(m.CorrelationID) > MaxKeyLength {
		return fmt.Errorf("%w: message key and correlation id must be at most %d bytes", ErrInvalid, MaxKeyLength)
	}
	if m.TTL < 0 {
		return fmt.Errorf("%w: negative ttl", ErrInvalid)
	}
	if len(m.Payload)+len(m.Headers) > MaxPayloadBytes {
		return fmt.Errorf("%w: message larger than %d bytes", ErrInvalid, MaxPayloadBytes)
	}
	return nil
}

// CheckTopic validates a topic name: 1..MaxKeyLength bytes of UTF-8 without
// control characters or white space.
func CheckTopic(name string) error {
	if err := checkKey("topic", name); err != nil {
		return err
	}
	if err := ident.Check(name); err != nil {
		return fmt.Errorf("%w: topic %w", ErrInvalid, err)
	}
	if strings.IndexFunc(name, unicode.IsSpace) >= 0 {
		return fmt.Errorf("%w: topic %q holds a space character", ErrInvalid, name)
	}
	return nil
}

// CheckGroup validates a topic and consumer group name.
func CheckGroup(topic, group string) error {
	if err := CheckTopic(topic); err != nil {
		return err
	}
	return checkKey("consumer group", group)
}

// Validate checks a topic for TopicPut.
func (t *Topic) Validate() error {
	if t == nil {
		return fmt.Errorf("%w: nil topic", ErrInvalid)
	}
	if err := CheckTopic(t.Name); err != nil {
		return err
	}
	if len(t.Config) > MaxPayloadBytes {
		return fmt.Errorf("%w: topic config larger than %d bytes", ErrInvalid, MaxPayloadBytes)
	}
	return nil
}

// Validate checks GroupCreate's params.
func (p *GroupCreateParams) Validate() error {
	if p == nil {
		return fmt.Errorf("%w: nil params", ErrInvalid)
	}
	if err := CheckGroup(p.Topic, p.Name); err != nil {
		return err
	}
	if len(p.Config) > MaxPayloadBytes {
		return fmt.Errorf("%w: group config larger than %d bytes", ErrInvalid, MaxPayloadBytes)
	}
	switch p.Start {
	case StartEnd, StartBeginning:
	case StartTime:
		if p.StartAt.IsZero() {
			return fmt.Errorf("%w: StartTime without a StartAt", ErrInvalid)
		}
	default:
		return fmt.Errorf("%w: group start %d", ErrInvalid, p.Start)
	}
	return nil
}

// Validate checks MessageRead's params.
func (p *MessageReadParams) Validate(partitions int) error {
	if p == nil {
		return fmt.Errorf("%w: nil params", ErrInvalid)
	}
	if err := CheckTopic(p.Topic); err != nil {
		return err
	}
	if err := CheckPartition(p.Partition, partitions); err != nil {
		return err
	}
	if p.FromPosition < 0 {
		return fmt.Errorf("%w: from position %d", ErrInvalid, p.FromPosition)
	}
	return CheckLimit(p.Limit)
}

// Validate checks MessageSweep's params.
func (p *MessageSweepParams) Validate(partitions int) error {
	if p == nil {
		return fmt.Errorf("%w: nil params", ErrInvalid)
	}
	if err := CheckTopic(p.Topic); err != nil {
		return err
	}
	if err := CheckPartition(p.Partition, partitions); err != nil {
		return err
	}
	if p.MaxBytes < 0 || p.Limit < 0 {
		return fmt.Errorf("%w: negative max bytes or limit", ErrInvalid)
	}
	return nil
}

// Validate checks DeliveryClaim's params.
func (p *DeliveryClaimParams) Validate() error {
	if p == nil {
		return fmt.Errorf("%w: nil params", ErrInvalid)
	}
	if err := CheckGroup(p.Topic, p.Group); err != nil {
		return err
	}
	if err := CheckLimit(p.Limit); err != nil {
		return err
	}
	if p.Visibility <= 0 || p.MaxDeliveries <= 0 {
		return fmt.Errorf("%w: visibility and max deliveries must be > 0", ErrInvalid)
	}
	return nil
}

// Validate checks a delivery reference.
func (r *DeliveryRef) Validate(partitions int) error {
	if err := CheckGroup(r.Topic, r.Group); err != nil {
		return err
	}
	if err := CheckPartition(r.Partition, partitions); err != nil {
		return err
	}
	if r.Position <= 0 {
		return fmt.Errorf("%w: position %d", ErrInvalid, r.Position)
	}
	return checkKey("claim token", r.ClaimToken)
}

// Validate checks DeliveryNack's params.
func (p *DeliveryNackParams) Validate(partitions int) error {
	if p == nil {
		return fmt.Errorf("%w: nil params", ErrInvalid)
	}
	if err := p.Ref.Validate(partitions); err != nil {
		return err
	}
	if p.Delay < 0 {
		return fmt.Errorf("%w: negative delay", ErrInvalid)
	}
	if len(p.History) > MaxPayloadBytes || len(p.Reason) > MaxPayloadBytes {
		return fmt.Errorf("%w: history or reason larger than %d bytes", ErrInvalid, MaxPayloadBytes)
	}
	return nil
}

// Validate checks DeadLetterList's params.
func (p *DeadLetterListParams) Validate() error {
	if p == nil {
		return fmt.Errorf("%w: nil params", ErrInvalid)
	}
	if err := CheckGroup(p.Topic, p.Group); err != nil {
		return err
	}
	if p.AfterID < 0 {
		return fmt.Errorf("%w: after id %d", ErrInvalid, p.AfterID)
	}
	return CheckLimit(p.Limit)
}

// CheckIDs validates the ids given to DeadLetterReplay and DeadLetterPurge
// (nil means all).
func CheckIDs(ids []int64) error {
	if len(ids) > MaxReadLimit {
		return fmt.Errorf("%w: %d ids, at most %d", ErrInvalid, len(ids), MaxReadLimit)
	}
	return nil
}

func checkKey(what, s string) error {
	if s == "" || len(s) > MaxKeyLength {
		return fmt.Errorf("%w: %s must be 1..%d bytes", ErrInvalid, what, MaxKeyLength)
	}
	return nil
}

// CheckLimit validates a read limit.
func CheckLimit(limit int) error {
	if limit <= 0 || limit > MaxReadLimit {
		return fmt.Errorf("%w: limit %d out of range [1,%d]", ErrInvalid, limit, MaxReadLimit)
	}
	return nil
}

// CheckPartition validates a partition number.
func CheckPartition(partition, partitions int) error {
	if partition < 0 || partition >= partitions {
		return fmt.Errorf("%w: partition %d out of range [0,%d)", ErrInvalid, partition, partitions)
	}
	return nil
}

// NewToken returns a random 128-bit token in hex, for claim tokens and ids.
func NewToken() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails on supported platforms
	return hex.EncodeToString(b[:])
}
