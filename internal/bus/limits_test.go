package bus_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/accord-saga/accord/internal/bus"
)

// TestTopicAndGroupCaps: past --max-topics and --max-groups a creation is
// invalid input (422), naming the field; a topic or group that exists may
// still be put again.
func TestTopicAndGroupCaps(t *testing.T) {
	t.Parallel()
	n := startNode(t, backends[0].open(t), func(c *bus.Config) { c.MaxTopics = 2; c.MaxGroups = 3 })
	b, ctx := n.bus, context.Background()
	mustTopic(t, b, "t1", bus.TopicConfig{})
	mustTopic(t, b, "t2", bus.TopicConfig{})
	var ie *bus.InvalidError
	if _, _, err := b.PutTopic(ctx, "t3", bus.TopicConfig{}); !errors.As(err, &ie) || ie.Field != "topic" || !errors.Is(err, bus.ErrInvalid) {
		t.Fatalf("third topic: %v, want invalid topic", err)
	}
	mustTopic(t, b, "t1", bus.TopicConfig{MaxDeliveries: 3}) // replacing is not creating
	for _, g := range [][2]string{{"t1", "a"}, {"t1", "b"}, {"t2", "a"}} {
		mustGroup(t, b, g[0], g[1], bus.GroupConfig{}, bus.GroupStart{})
	}
	if _, _, err := b.CreateGroup(ctx, "t2", "b", bus.GroupConfig{}, bus.GroupStart{}); !errors.As(err, &ie) || ie.Field != "group" {
		t.Fatalf("fourth group: %v, want invalid group", err)
	}
	mustGroup(t, b, "t1", "a", bus.GroupConfig{}, bus.GroupStart{}) // exists: no-op
	if err := b.DeleteGroup(ctx, "t1", "b"); err != nil {
		t.Fatal(err)
	}
	mustGroup(t, b, "t2", "b", bus.GroupConfig{}, bus.GroupStart{})
}

// TestGroupMetricsBounded: a group's gauges are one series each, not one
// per partition, and a deleted group's series go with it.
func TestGroupMetricsBounded(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	n := startNode(t, backends[0].open(t), func(c *bus.Config) { c.Registerer = reg; c.ScanInterval = 20 * time.Millisecond })
	b := n.bus
	mustTopic(t, b, "t", bus.TopicConfig{})
	const groups = 20
	for i := range groups {
		mustGroup(t, b, "t", fmt.Sprintf("g%d", i), bus.GroupConfig{}, bus.GroupStart{})
	}
	eventually(t, 10*time.Second, "every group's lag gauge", func() bool {
		return series(t, reg, "accord_bus_group_lag") == groups
	})
	if err := b.DeleteGroup(context.Background(), "t", "g0"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the deleted group's gauges gone", func() bool {
		return series(t, reg, "accord_bus_group_lag") == groups-1 &&
			series(t, reg, "accord_bus_group_dead_letters") == groups-1
	})
}

// series counts the series of a metric family in reg.
func series(t *testing.T, reg *prometheus.Registry, name string) int {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return len(mf.GetMetric())
		}
	}
	return 0
}
