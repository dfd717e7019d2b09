package storage

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
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
