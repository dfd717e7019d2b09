package bus

import (
	"context"
	"fmt"
)

// Defaults of the caps on the number of topics and consumer groups. Every
// topic and group costs memory, work in the background loops and series in
// /metrics: the caps keep those bounded whatever clients create.
const (
	DefaultMaxTopics = 1_000
	DefaultMaxGroups = 10_000 // over all topics
)

// checkTopicCap refuses to create a topic past Config.MaxTopics; replacing
// an existing topic's configuration is always allowed. The caller holds
// capMu, so that one node never goes past the cap (the nodes of a cluster
// may, by the creations they run at the same moment).
func (b *Bus) checkTopicCap(ctx context.Context, name string) error {
	ts, err := b.store.TopicList(ctx)
	if err != nil {
		return fmt.Errorf("bus: count topics: %w", err)
	}
	for _, t := range ts {
		if t.Name == name {
			return nil
		}
	}
	if len(ts) >= b.cfg.MaxTopics {
		return invalid("topic", fmt.Sprintf("the bus holds its maximum of %d topics (--max-topics); delete one first", b.cfg.MaxTopics))
	}
	return nil
}

// checkGroupCap refuses to create a consumer group past Config.MaxGroups
// (over all topics); an existing group is always allowed. The caller holds
// capMu.
func (b *Bus) checkGroupCap(ctx context.Context, topic, name string) error {
	gs, err := b.store.GroupList(ctx, "")
	if err != nil {
		return fmt.Errorf("bus: count groups: %w", err)
	}
	for _, g := range gs {
		if g.Topic == topic && g.Name == name {
			return nil
		}
	}
	if len(gs) >= b.cfg.MaxGroups {
		return invalid("group", fmt.Sprintf("the bus holds its maximum of %d consumer groups (--max-groups); delete one first", b.cfg.MaxGroups))
	}
	return nil
}
