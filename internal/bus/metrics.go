package bus

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/accord-saga/accord/internal/storage"
)

type metrics struct {
	published    *prometheus.CounterVec
	duplicates   *prometheus.CounterVec
	delivered    *prometheus.CounterVec
	acked        *prometheus.CounterVec
	nacked       *prometheus.CounterVec
	deadLettered *prometheus.CounterVec
	expired      *prometheus.CounterVec
	swept        *prometheus.CounterVec
	lag          *prometheus.GaugeVec
	oldest       *prometheus.GaugeVec
	deadLetters  *prometheus.GaugeVec
	stalled      prometheus.Gauge

	// observed holds the groups whose gauges are set, so that a deleted
	// group's series go with it.
	observedMu sync.Mutex
	observed   map[[2]string]bool
}

func newMetrics(reg prometheus.Registerer) *metrics {
	tg := []string{"topic", "group"}
	m := &metrics{
		published: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "accord_bus_published_total", Help: "Messages stored by publishes, by topic.",
		}, []string{"topic"}),
		duplicates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "accord_bus_publish_duplicates_total", Help: "Publishes answered from their idempotency key (not stored again), by topic.",
		}, []string{"topic"}),
		delivered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "accord_bus_deliveries_total", Help: "Messages handed to consumers (redeliveries included), by topic and group.",
		}, tg),
		acked: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "accord_bus_acked_total", Help: "Messages acknowledged, by topic and group.",
		}, tg),
		nacked: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "accord_bus_nacked_total", Help: "Negative acknowledgements (the message is retried), by topic and group.",
		}, tg),
		deadLettered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "accord_bus_dead_lettered_total", Help: "Messages moved to a group's dead letters, by topic and group.",
		}, tg),
		expired: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "accord_bus_expired_total", Help: "Deliveries dropped because their message's TTL passed, by topic and group.",
		}, tg),
		swept: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "accord_bus_swept_total", Help: "Messages deleted by retention or compaction, by topic.",
		}, []string{"topic"}),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "accord_bus_group_lag", Help: "Messages a group has not finished with, by topic and group (measured every scan interval).",
		}, tg),
		oldest: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "accord_bus_group_oldest_age_seconds", Help: "Age of the oldest message a group has not finished with, by topic and group.",
		}, tg),
		deadLetters: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "accord_bus_group_dead_letters", Help: "Messages in a group's dead letters, by topic and group.",
		}, tg),
		stalled: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "accord_bus_stalled_messages", Help: "Messages a group has not finished with for longer than the stall threshold (up to 1000 counted).",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.published, m.duplicates, m.delivered, m.acked, m.nacked, m.deadLettered, m.expired, m.swept,
			m.lag, m.oldest, m.deadLetters, m.stalled)
	}
	return m
}

func (m *metrics) claimed(g Group, res *storage.DeliveryClaimResult) {
	if n := len(res.Deliveries); n > 0 {
		m.delivered.WithLabelValues(g.Topic, g.Name).Add(float64(n))
	}
	if res.Expired > 0 {
		m.expired.WithLabelValues(g.Topic, g.Name).Add(float64(res.Expired))
	}
	if res.DeadLettered > 0 {
		m.deadLettered.WithLabelValues(g.Topic, g.Name).Add(float64(res.DeadLettered))
	}
}

// observeGroup sets a group's backlog gauges from its stats. They carry no
// partition label: a series per group and partition would multiply
// /metrics by the partition count (64 by default) for every group; the
// API's group stats give the per-partition view.
func (m *metrics) observeGroup(b storage.GroupBacklog) {
	topic, group := b.Topic, b.Name
	oldest, dead, pending := b.OldestAge.Seconds(), b.DeadLetters, b.Pending
	m.observedMu.Lock()
	if m.observed == nil {
		m.observed = map[[2]string]bool{}
	}
	m.observed[[2]string{topic, group}] = true
	m.observedMu.Unlock()
	m.lag.WithLabelValues(topic, group).Set(float64(pending))
	m.oldest.WithLabelValues(topic, group).Set(oldest)
	m.deadLetters.WithLabelValues(topic, group).Set(float64(dead))
}

// retainGroups drops the gauges of the groups not in present.
func (m *metrics) retainGroups(present map[[2]string]bool) {
	m.observedMu.Lock()
	defer m.observedMu.Unlock()
	for g := range m.observed {
		if !present[g] {
			delete(m.observed, g)
			m.forgetGroup(g[0], g[1])
		}
	}
}

func (m *metrics) forgetGroup(topic, group string) {
	l := prometheus.Labels{"topic": topic, "group": group}
	m.lag.DeletePartialMatch(l)
	m.oldest.DeletePartialMatch(l)
	m.deadLetters.DeletePartialMatch(l)
}
