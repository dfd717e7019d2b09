package engine

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the engine's Prometheus metrics. They are registered on
// Config.Registerer; without one they are kept but not exported.
type metrics struct {
	sagasStarted     *prometheus.CounterVec
	sagasFinished    *prometheus.CounterVec
	stepResults      *prometheus.CounterVec
	stepLatency      *prometheus.HistogramVec
	commitBatch      prometheus.Histogram
	commitDuration   prometheus.Histogram
	commitErrors     *prometheus.CounterVec
	timersFired      prometheus.Counter
	pushRedispatched prometheus.Counter
	poisonTasks      prometheus.Counter
	reconciled       prometheus.Counter
}

func newMetrics(e *Engine, reg prometheus.Registerer) *metrics {
	m := &metrics{
		sagasStarted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "accord_sagas_started_total", Help: "Sagas started, by definition.",
		}, []string{"definition"}),
		sagasFinished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "accord_sagas_finished_total", Help: "Sagas that reached a terminal status (completed, compensated, cancelled, needs_operator), by definition and status.",
		}, []string{"definition", "status"}),
		stepResults: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "accord_step_results_total", Help: "Step attempt results reported by participants, by phase and outcome.",
		}, []string{"phase", "outcome"}),
		stepLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "accord_step_attempt_seconds",
			Help:    "Time from an attempt's dispatch to its recorded result, by phase.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 18), // 0.5 ms .. ~65 s
		}, []string{"phase"}),
		commitBatch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "accord_commit_batch_inputs", Help: "Inputs (starts, results, timers, cancels) written by one partition commit.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 11), // 1 .. 1024
		}),
		commitDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "accord_commit_seconds", Help: "Duration of one partition commit.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16), // 0.1 ms .. ~3 s
		}),
		commitErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "accord_commit_errors_total", Help: "Failed partition commits, by kind (fenced, other).",
		}, []string{"kind"}),
		timersFired: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "accord_timers_fired_total", Help: "Durable timers fired (retries, timeouts, deadlines).",
		}),
		pushRedispatched: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "accord_push_redispatched_total", Help: "Push attempts found in flight when a partition was taken over, and dispatched again.",
		}),
		poisonTasks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "accord_poison_tasks_total", Help: "Task attempts failed because they were delivered MaxDeliveries times without a result.",
		}),
		reconciled: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "accord_reconciled_total", Help: "Pull tasks found missing from the store and re-created by the reconciler.",
		}),
	}
	// Both kinds exist from the start at 0, so that rate() and increase()
	// over them (the alert rules) see the first error.
	m.commitErrors.WithLabelValues("fenced")
	m.commitErrors.WithLabelValues("other")
	if reg == nil {
		return m
	}
	reg.MustRegister(m.sagasStarted, m.sagasFinished, m.stepResults, m.stepLatency, m.commitBatch,
		m.commitDuration, m.commitErrors, m.timersFired, m.pushRedispatched, m.poisonTasks, m.reconciled,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "accord_partitions_owned", Help: "Partitions this node holds the lease of.",
		}, func() float64 { return float64(e.OwnedPartitions()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "accord_sagas_active", Help: "Unfinished sagas held in memory by this node.",
		}, func() float64 { return float64(e.activeSagas()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "accord_sagas_quarantined", Help: "Sagas of this node's partitions set aside because their stored state cannot be decoded; each waits for an operator (docs/operations.md).",
		}, func() float64 { return float64(e.quarantinedSagas()) }),
		&queueCollector{e: e},
	)
	return m
}

// queueCollector reads task queue depth and age from the store at scrape
// time: the scale-out signal for workers (R42).
type queueCollector struct{ e *Engine }

var (
	queueDepthDesc = prometheus.NewDesc("accord_queue_tasks", "Tasks in a queue, by state (visible, in_flight, delayed).", []string{"queue", "state"}, nil)
	queueAgeDesc   = prometheus.NewDesc("accord_queue_oldest_task_seconds", "Age of the oldest visible task of a queue.", []string{"queue"}, nil)
)

func (c *queueCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- queueDepthDesc
	ch <- queueAgeDesc
}

func (c *queueCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	stats, err := c.e.store.TaskQueueStats(ctx)
	if err != nil {
		return // the scrape shows the queue metrics missing; storage health is in /readyz
	}
	for _, s := range stats {
		ch <- prometheus.MustNewConstMetric(queueDepthDesc, prometheus.GaugeValue, float64(s.Visible), s.Queue, "visible")
		ch <- prometheus.MustNewConstMetric(queueDepthDesc, prometheus.GaugeValue, float64(s.InFlight), s.Queue, "in_flight")
		ch <- prometheus.MustNewConstMetric(queueDepthDesc, prometheus.GaugeValue, float64(s.Delayed), s.Queue, "delayed")
		ch <- prometheus.MustNewConstMetric(queueAgeDesc, prometheus.GaugeValue, s.OldestAge.Seconds(), s.Queue)
	}
}

// ActiveSagas returns how many unfinished sagas this node holds in memory.
func (e *Engine) ActiveSagas() int { return e.activeSagas() }

// activeSagas counts the sagas held in memory. It reads each partition's
// map size without the loop's cooperation; the count is approximate by
// nature and only for the gauge.
func (e *Engine) activeSagas() int {
	return e.sumOwned(func(p *partition) int64 { return p.active.Load() })
}

// sumOwned adds up a counter the partitions this node owns keep for the
// gauges.
func (e *Engine) sumOwned(count func(*partition) int64) int {
	e.mu.RLock()
	defer e.mu.RUnlock()
	n := 0
	for _, p := range e.owned {
		n += int(count(p))
	}
	return n
}
