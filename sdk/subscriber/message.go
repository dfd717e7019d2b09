package subscriber

import (
	"context"
	"encoding/json"
	"errors"
	"time"
)

// Message is a message handed to a Handler: one delivery of one message of
// the topic to the subscriber's group.
type Message struct {
	Topic string
	Group string
	// ID is the message's id: with Topic and Group, the key of an inbox
	// record (sdk/outbox.Inbox) that makes its effect happen once.
	ID string
	// Key orders the topic's messages: the group gets those of one key one
	// at a time, in publish order.
	Key string
	// CorrelationID names the flow the message belongs to. Events a
	// handler publishes in reaction should carry it (see Publish).
	CorrelationID string
	Headers       map[string]string
	Payload       json.RawMessage
	Tombstone     bool
	Partition     int
	Position      int64
	PublishedAt   time.Time
	// Attempt counts the hand-outs of the message to the group, this one
	// included; History has the earlier ones.
	Attempt int
	History []Attempt

	receipt string
}

// Attempt is one earlier, failed delivery of a message.
type Attempt struct {
	Attempt int
	At      time.Time
	// Outcome is "nack" (a consumer said so) or "expired" (no answer
	// within the claim: the consumer died or was too slow).
	Outcome string
	Reason  string
}

// Decode unmarshals the payload into v.
func (m *Message) Decode(v any) error { return json.Unmarshal(m.Payload, v) }

// Handler handles one message. A nil error acks it; any other error nacks
// it with the error's text as the reason, and the bus hands it out again
// after its backoff — or dead-letters it at once when the error wraps
// Permanent, or after the group's max deliveries. Delay sets the wait
// before the next attempt.
type Handler func(ctx context.Context, m *Message) error

// Middleware wraps a Handler, as net/http middleware wraps an
// http.Handler: Retry, Timeout, CircuitBreaker, Recoverer and
// CorrelationID are this package's.
type Middleware func(Handler) Handler

// Chain applies middleware to h; the first is the outermost.
func Chain(h Handler, mw ...Middleware) Handler {
	for i := len(mw) - 1; i >= 0; i-- {
		h = mw[i](h)
	}
	return h
}

// ErrReceiptLost is the cause of a handler's context when the subscriber
// learns that the message's claim expired (the group handed it to
// another consumer): the handler's result no longer counts.
var ErrReceiptLost = errors.New("subscriber: receipt lost")

type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// Permanent marks err as one that no retry can cure: the message goes to
// the group's dead letters at once, and Retry does not retry it.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err: err}
}

// IsPermanent reports whether err wraps Permanent.
func IsPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

type delayError struct {
	err   error
	delay time.Duration
}

func (e *delayError) Error() string { return e.err.Error() }
func (e *delayError) Unwrap() error { return e.err }

// Delay asks for the next attempt after d rather than after the group's
// backoff.
func Delay(err error, d time.Duration) error {
	if err == nil {
		return nil
	}
	return &delayError{err: err, delay: d}
}

// delayOf returns the delay err asks for, or 0.
func delayOf(err error) time.Duration {
	var d *delayError
	if errors.As(err, &d) {
		return d.delay
	}
	return 0
}
