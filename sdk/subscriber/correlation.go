package subscriber

import "context"

type correlationKey struct{}

// CorrelationID puts the message's correlation id in the handler's
// context, where CorrelationIDFrom reads it and Publish copies it onto the
// events the handler publishes: a flow keeps one correlation id from its
// first event to its last.
func CorrelationID(h Handler) Handler {
	return func(ctx context.Context, m *Message) error {
		return h(WithCorrelationID(ctx, m.CorrelationID), m)
	}
}

// WithCorrelationID returns ctx carrying the correlation id id.
func WithCorrelationID(ctx context.Context, id string) context.Context {
	if id == "" {
		return ctx
	}
	return context.WithValue(ctx, correlationKey{}, id)
}

// CorrelationIDFrom returns the correlation id ctx carries, or "".
func CorrelationIDFrom(ctx context.Context) string {
	id, _ := ctx.Value(correlationKey{}).(string)
	return id
}
