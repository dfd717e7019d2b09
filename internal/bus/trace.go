package bus

import (
	"context"
	"fmt"
	"time"

	"github.com/accord-saga/accord/internal/storage"
)

// TraceMessage is one message of a flow, with what each group of its topic
// has made of it.
type TraceMessage struct {
	Message storage.Message
	Groups  []TraceGroup
}

// TraceGroup is one group's handling of a message.
type TraceGroup struct {
	Group string
	// Status is "pending" (waiting to be handed out, or delayed after a
	// nack), "blocked" (behind an earlier message of its key), "in_flight"
	// (claimed by a consumer), "dead_lettered", or "done" (acked — or, if
	// it expired or was swept, no longer deliverable).
	Status   string
	Attempts int
	// Age is how long the message has been waiting for this group (0 once
	// done).
	Age time.Duration
}

// MaxTrace bounds the messages of one trace.
const MaxTrace = 1000

// Trace follows one flow: every message with the correlation id, in
// publish order, and where each stands in each group of its topic.
func (b *Bus) Trace(ctx context.Context, correlationID string) ([]TraceMessage, error) {
	if correlationID == "" || len(correlationID) > 256 {
		return nil, invalid("correlation_id", "must be 1..256 bytes")
	}
	msgs, err := b.store.MessagesByCorrelation(ctx, correlationID, MaxTrace)
	if err != nil {
		return nil, fmt.Errorf("bus: trace: %w", err)
	}
	now, err := b.store.Now(ctx)
	if err != nil {
		return nil, fmt.Errorf("bus: trace: %w", err)
	}
	groups := map[string][]storage.Group{}
	dead := map[string]map[[2]int64]bool{} // topic/group → dead (partition, position)
	out := make([]TraceMessage, 0, len(msgs))
	for _, m := range msgs {
		gs, ok := groups[m.Topic]
		if !ok {
			gs, err = b.store.GroupList(ctx, m.Topic)
			if err != nil {
				return nil, fmt.Errorf("bus: trace: %w", err)
			}
			groups[m.Topic] = gs
		}
		ds, err := b.store.DeliveriesOf(ctx, m.Topic, m.Partition, m.Position)
		if err != nil {
			return nil, fmt.Errorf("bus: trace: %w", err)
		}
		open := map[string]storage.Delivery{}
		for _, d := range ds {
			open[d.Group] = d
		}
		tm := TraceMessage{Message: m}
		for _, g := range gs {
			tg := TraceGroup{Group: g.Name, Status: "done"}
			if d, ok := open[g.Name]; ok {
				tg.Attempts = d.Deliveries
				tg.Age = now.Sub(m.PublishedAt)
				switch {
				case d.Blocked:
					tg.Status = "blocked"
				case d.ClaimToken != "" && d.VisibleAt.After(now):
					tg.Status = "in_flight"
				default:
					tg.Status = "pending"
				}
			} else {
				key := g.Topic + "/" + g.Name
				if _, ok := dead[key]; !ok {
					dead[key], err = b.deadSet(ctx, g.Topic, g.Name)
					if err != nil {
						return nil, err
					}
				}
				if dead[key][[2]int64{int64(m.Partition), m.Position}] {
					tg.Status = "dead_lettered"
				}
			}
			tm.Groups = append(tm.Groups, tg)
		}
		out = append(out, tm)
	}
	return out, nil
}

// deadSet returns the (partition, position) of a group's dead letters, up
// to a bound (a trace of a group with more dead letters shows the rest as
// done).
func (b *Bus) deadSet(ctx context.Context, topic, group string) (map[[2]int64]bool, error) {
	set := map[[2]int64]bool{}
	var after int64
	for len(set) < 10_000 {
		dl, err := b.store.DeadLetterList(ctx, &storage.DeadLetterListParams{Topic: topic, Group: group, AfterID: after, Limit: 1000})
		if err != nil {
			return nil, fmt.Errorf("bus: trace: %w", err)
		}
		for _, d := range dl {
			set[[2]int64{int64(d.Partition), d.Position}] = true
			after = d.ID
		}
		if len(dl) < 1000 {
			break
		}
	}
	return set, nil
}

// Stalled is a message some group has not finished with for longer than
// the bus's StallAfter.
type Stalled struct {
	Group    string
	Attempts int
	Age      time.Duration
	Message  storage.Message
}

// Stalled lists up to limit stalled messages, oldest first: flows that
// stopped moving (a consumer that is down, a key blocked behind a failing
// message, a group nobody consumes).
func (b *Bus) Stalled(ctx context.Context, limit int) ([]Stalled, error) {
	if limit < 1 || limit > 1000 {
		return nil, invalid("limit", "must be 1..1000")
	}
	now, err := b.store.Now(ctx)
	if err != nil {
		return nil, fmt.Errorf("bus: stalled: %w", err)
	}
	ds, err := b.store.DeliveryStalled(ctx, now.Add(-b.cfg.StallAfter), limit)
	if err != nil {
		return nil, fmt.Errorf("bus: stalled: %w", err)
	}
	out := make([]Stalled, len(ds))
	for i, d := range ds {
		out[i] = Stalled{Group: d.Group, Attempts: d.Deliveries, Age: now.Sub(d.Message.PublishedAt), Message: d.Message}
	}
	return out, nil
}

// StallAfter is the age past which an unfinished message counts as
// stalled.
func (b *Bus) StallAfter() time.Duration { return b.cfg.StallAfter }
