package dispatch

import "sync/atomic"

// Stats is a snapshot of the dispatcher's counters, for metrics. Counters
// only grow; Queued and InFlight are gauges.
type Stats struct {
	// Workers is the size of the worker pool; QueueCap the queue's bound.
	Workers  int
	QueueCap int
	// Queued is the number of tasks waiting for a worker.
	Queued int
	// InFlight is the number of tasks a worker is handling.
	InFlight int64
	// Dispatched counts tasks accepted into the queue.
	Dispatched uint64
	// Dropped counts tasks refused because the queue was full or the
	// dispatcher was stopping; their attempt timeouts retry them.
	Dropped uint64
	// Requests counts HTTP requests sent (a 202 answer leads to several
	// per task).
	Requests uint64
	// Results by outcome.
	Success   uint64
	Failure   uint64
	Retryable uint64
	// Abandoned counts tasks that ended without a result: cut off by a
	// stop, left queued at a stop, expired in the queue, or still working
	// at the attempt timeout.
	Abandoned uint64
	// Unknown counts attempts (among Retryable) whose outcome is unknown —
	// no answer in time, or a 2xx whose body is malformed, over the cap or
	// cut off — left to the engine's attempt timeout rather than reported.
	Unknown uint64
	// Expired counts tasks (among Abandoned) that waited in the queue past
	// their attempt timeout and were not called: a backlog.
	Expired uint64
	// Rejections by this node's resilience guards.
	CircuitOpen      uint64
	BulkheadFull     uint64
	TargetNotAllowed uint64
	// CompleteErrors counts results the engine did not record (claim lost,
	// task gone, storage error).
	CompleteErrors uint64
}

type stats struct {
	inFlight                                                    atomic.Int64
	dispatched, dropped, requests                               atomic.Uint64
	success, failure, retryable, abandoned, expired, unknown    atomic.Uint64
	circuitOpen, bulkheadFull, targetNotAllowed, completeErrors atomic.Uint64
}

func (s *stats) count(v verdict) {
	switch v.outcome {
	case OutcomeSuccess:
		s.success.Add(1)
	case OutcomeFailure:
		s.failure.Add(1)
	case OutcomeRetryable:
		s.retryable.Add(1)
	}
	if v.code == CodeTargetNotAllowed {
		s.targetNotAllowed.Add(1)
	}
}

// Stats returns a snapshot of the counters.
func (p *Push) Stats() Stats {
	s := &p.stats
	return Stats{
		Workers:          p.cfg.Workers,
		QueueCap:         cap(p.queue),
		Queued:           len(p.queue),
		InFlight:         s.inFlight.Load(),
		Dispatched:       s.dispatched.Load(),
		Dropped:          s.dropped.Load(),
		Requests:         s.requests.Load(),
		Success:          s.success.Load(),
		Failure:          s.failure.Load(),
		Retryable:        s.retryable.Load(),
		Abandoned:        s.abandoned.Load(),
		Expired:          s.expired.Load(),
		Unknown:          s.unknown.Load(),
		CircuitOpen:      s.circuitOpen.Load(),
		BulkheadFull:     s.bulkheadFull.Load(),
		TargetNotAllowed: s.targetNotAllowed.Load(),
		CompleteErrors:   s.completeErrors.Load(),
	}
}
