package outbox

import (
	"context"

	"github.com/accord-saga/accord/sdk/client"
)

// ClientPublisher publishes through an Accord client.
func ClientPublisher(c *client.Client) Publisher {
	return PublisherFunc(func(ctx context.Context, topic string, msgs []Message) error {
		_, err := PublishWith(ctx, c, topic, msgs)
		return err
	})
}

// PublishWith publishes msgs to topic through c, with their ids,
// idempotency keys and correlation ids, and returns the bus's answer (a
// message the bus already had is Duplicate).
func PublishWith(ctx context.Context, c *client.Client, topic string, msgs []Message) ([]client.Published, error) {
	out := make([]client.Message, len(msgs))
	for i, m := range msgs {
		out[i] = client.Message{
			Key: m.Key, ID: m.ID, IdempotencyKey: m.IdempotencyKey, CorrelationID: m.CorrelationID,
			Headers: m.Headers, Payload: m.Payload, TTL: m.TTL,
		}
	}
	return c.Publish(ctx, topic, out...)
}
