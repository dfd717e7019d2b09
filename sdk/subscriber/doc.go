// Package subscriber consumes a topic of Accord's event bus as a member of
// a consumer group.
//
//	c, _ := client.New("http://127.0.0.1:7780")
//	s := subscriber.New(c, "tickets", "classifier", func(ctx context.Context, m *subscriber.Message) error {
//		var t Ticket
//		if err := m.Decode(&t); err != nil {
//			return subscriber.Permanent(err) // can never succeed: dead-letter it
//		}
//		return classify(ctx, t)
//	}, subscriber.Options{
//		Concurrency: 8,
//		Middleware:  []subscriber.Middleware{subscriber.Recoverer, subscriber.CorrelationID, subscriber.Retry(subscriber.RetryOptions{})},
//	})
//	_ = s.Start(ctx)
//	...
//	_ = s.Stop(ctx) // finishes running handlers, then returns
//
// # Delivery
//
// The subscriber long-polls the group, claiming no more messages than it
// has free handler slots (Options.Concurrency), and runs the handler on
// each. While a handler runs, the message's claim is extended every
// HeartbeatEvery, so a long handler keeps its message; if the server says
// the claim is lost (it expired and went to another consumer), the
// handler's context is cancelled with cause ErrReceiptLost and its result
// dropped. A nil error acks the message. Any other error nacks it with the
// error's text as the reason: the bus hands it out again after the
// group's backoff (or after Delay's), and dead-letters it after the
// group's max deliveries; an error wrapping Permanent dead-letters it at
// once.
//
// Delivery is at least once, and a message may arrive again after its
// handler succeeded (the ack was lost, the claim expired). Make the effect
// idempotent: sdk/outbox.Inbox records the message in the consumer's own
// database transaction, so the effect happens once.
//
// # Middleware
//
// Middleware wraps the handler, in the style of net/http and watermill:
// Recoverer (a panic becomes an error), CorrelationID (the message's
// correlation id in the context, for CorrelationIDFrom and Publish),
// Retry (in-process retries with backoff before the message is nacked),
// Timeout, and CircuitBreaker (github.com/sony/gobreaker/v2).
//
// # Flows
//
// A correlation id follows one business flow through every topic. Publish
// copies the handler's correlation id onto the events it publishes, so
// `accord trace <id>` shows the flow end to end.
//
// # Lifecycle
//
// Start starts the subscriber's goroutines; Stop stops receiving at once
// (an outstanding long poll is abandoned), waits for running handlers and
// answers their messages, and returns with no goroutine left. If Stop's
// context ends first, the handlers' contexts are cancelled and their
// messages nacked. Run does both around a context.
package subscriber
