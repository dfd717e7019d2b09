package subscriber

import (
	"context"
	"errors"
	"time"

	"github.com/accord-saga/accord/sdk/client"
)

// New returns a subscriber of the group of topic that calls the server
// through c and runs h, wrapped in opts.Middleware, on each message. Start
// starts it.
func New(c *client.Client, topic, group string, h Handler, opts Options) *Subscriber {
	return newSubscriber(&clientSource{c: c, topic: topic, group: group}, topic, group, h, opts)
}

// Publish publishes msgs to topic through c, giving those without a
// correlation id the one ctx carries (the CorrelationID middleware puts
// the handled message's there): the events a handler publishes stay in its
// flow.
func Publish(ctx context.Context, c *client.Client, topic string, msgs ...client.Message) ([]client.Published, error) {
	if id := CorrelationIDFrom(ctx); id != "" {
		msgs = append([]client.Message(nil), msgs...)
		for i := range msgs {
			if msgs[i].CorrelationID == "" {
				msgs[i].CorrelationID = id
			}
		}
	}
	return c.Publish(ctx, topic, msgs...)
}

// clientSource is a group of a topic on an Accord server.
type clientSource struct {
	c     *client.Client
	topic string
	group string
}

func (s *clientSource) receive(ctx context.Context, max int, wait, visibility time.Duration) ([]*Message, error) {
	ds, err := s.c.Receive(ctx, s.topic, s.group, client.ReceiveOptions{Max: max, Wait: wait, Visibility: visibility})
	if err != nil {
		return nil, err
	}
	out := make([]*Message, len(ds))
	for i, d := range ds {
		m := &Message{
			Topic: s.topic, Group: s.group, ID: d.ID, Key: d.Key, CorrelationID: d.CorrelationID,
			Headers: d.Headers, Payload: d.Payload, Tombstone: d.Tombstone,
			Partition: d.Partition, Position: d.Position, PublishedAt: d.PublishedAt,
			Attempt: d.Attempt, receipt: d.Receipt,
		}
		for _, a := range d.History {
			m.History = append(m.History, Attempt{Attempt: a.Attempt, At: a.At, Outcome: a.Outcome, Reason: a.Reason})
		}
		out[i] = m
	}
	return out, nil
}

func lost(err error) error {
	if errors.Is(err, client.ErrReceiptLost) {
		return errors.Join(ErrReceiptLost, err)
	}
	return err
}

func (s *clientSource) ack(ctx context.Context, m *Message) error {
	res, err := s.c.Ack(ctx, s.topic, s.group, m.receipt)
	if err != nil {
		return lost(err)
	}
	if len(res) == 1 && res[0] != nil {
		return lost(res[0])
	}
	return nil
}

func (s *clientSource) nack(ctx context.Context, m *Message, reason string, delay time.Duration, deadLetter bool) error {
	return lost(s.c.Nack(ctx, s.topic, s.group, m.receipt, client.NackOptions{Reason: reason, Delay: delay, DeadLetter: deadLetter}))
}

func (s *clientSource) heartbeat(ctx context.Context, m *Message, extend time.Duration) error {
	return lost(s.c.HeartbeatMessage(ctx, s.topic, s.group, m.receipt, extend))
}

func (s *clientSource) ackTimeout(ctx context.Context) (time.Duration, error) {
	g, err := s.c.GetGroup(ctx, s.topic, s.group)
	if err != nil {
		return 0, err
	}
	return g.Effective.AckTimeout, nil
}
