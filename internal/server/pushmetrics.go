package server

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/accord-saga/accord/internal/dispatch"
)

// pushCollector exports the push dispatcher's counters and each endpoint's
// circuit breaker state at scrape time.
type pushCollector struct {
	push *dispatch.Push
}

var (
	pushTasksDesc   = prometheus.NewDesc("accord_push_tasks_total", "Push tasks by what became of them (dispatched, dropped, success, failure, retryable, abandoned, expired, circuit_open, bulkhead_full, target_not_allowed).", []string{"result"}, nil)
	pushRequests    = prometheus.NewDesc("accord_push_requests_total", "HTTP requests sent to push participants.", nil, nil)
	pushInFlight    = prometheus.NewDesc("accord_push_in_flight", "Push calls in flight.", nil, nil)
	pushQueued      = prometheus.NewDesc("accord_push_queued", "Push tasks waiting for a dispatcher worker.", nil, nil)
	pushBreakerDesc = prometheus.NewDesc("accord_push_breaker_state", "Circuit breaker state per endpoint: 0 closed, 1 half-open, 2 open.", []string{"endpoint"}, nil)
	pushBulkhead    = prometheus.NewDesc("accord_push_bulkhead_in_flight", "Calls in flight per endpoint (bounded by the bulkhead).", []string{"endpoint"}, nil)
)

func (c pushCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{pushTasksDesc, pushRequests, pushInFlight, pushQueued, pushBreakerDesc, pushBulkhead} {
		ch <- d
	}
}

func (c pushCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.push.Stats()
	for result, n := range map[string]uint64{
		"dispatched": s.Dispatched, "dropped": s.Dropped, "success": s.Success, "failure": s.Failure,
		"retryable": s.Retryable, "abandoned": s.Abandoned, "expired": s.Expired, "circuit_open": s.CircuitOpen,
		"bulkhead_full": s.BulkheadFull, "target_not_allowed": s.TargetNotAllowed,
	} {
		ch <- prometheus.MustNewConstMetric(pushTasksDesc, prometheus.CounterValue, float64(n), result)
	}
	ch <- prometheus.MustNewConstMetric(pushRequests, prometheus.CounterValue, float64(s.Requests))
	ch <- prometheus.MustNewConstMetric(pushInFlight, prometheus.GaugeValue, float64(s.InFlight))
	ch <- prometheus.MustNewConstMetric(pushQueued, prometheus.GaugeValue, float64(s.Queued))
	for _, b := range c.push.Breakers() {
		ch <- prometheus.MustNewConstMetric(pushBreakerDesc, prometheus.GaugeValue, breakerValue(b.State), b.Endpoint)
		ch <- prometheus.MustNewConstMetric(pushBulkhead, prometheus.GaugeValue, float64(b.InFlight), b.Endpoint)
	}
}

func breakerValue(state string) float64 {
	switch state {
	case "half-open":
		return 1
	case "open":
		return 2
	}
	return 0
}
