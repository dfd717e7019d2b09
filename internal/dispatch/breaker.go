package dispatch

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sony/gobreaker/v2"
)

// Verdicts reported to an endpoint's breaker when a request ends.
var (
	// errEndpointFailure marks a request that counts against the endpoint:
	// a transport error, a timeout, a 5xx or a 429.
	errEndpointFailure = errors.New("dispatch: endpoint failure")
	// errNoVerdict marks a request whose end says nothing about the
	// endpoint (abandoned at shutdown): it counts neither way.
	errNoVerdict = errors.New("dispatch: no verdict")
)

// BreakerState is the state of one endpoint's circuit breaker and bulkhead.
type BreakerState struct {
	// Endpoint is scheme://host:port.
	Endpoint string `json:"endpoint"`
	// State is "closed", "open" or "half-open".
	State string `json:"state"`
	// Counts of the current window (closed) or of the current state
	// (half-open); reset at every state change.
	Requests            uint32 `json:"requests"`
	Successes           uint32 `json:"successes"`
	Failures            uint32 `json:"failures"`
	ConsecutiveFailures uint32 `json:"consecutive_failures"`
	// InFlight is the number of calls holding a bulkhead slot.
	InFlight int `json:"in_flight"`
	// Waiting is the number of calls waiting for a bulkhead slot.
	Waiting int `json:"waiting"`
}

// endpoint holds the breaker and the bulkhead of one scheme://host:port.
type endpoint struct {
	key     string
	breaker *gobreaker.TwoStepCircuitBreaker[struct{}]
	bulk    *bulkhead
}

// endpoints is the registry of endpoints, created on first use. Entries are
// kept for the life of the dispatcher: their number is bounded by the push
// targets the allowlist admits.
type endpoints struct {
	cfg Config
	log *slog.Logger

	mu sync.Mutex
	m  map[string]*endpoint
}

func newEndpoints(cfg Config) *endpoints {
	return &endpoints{cfg: cfg, log: cfg.Logger, m: map[string]*endpoint{}}
}

func (e *endpoints) get(key string) *endpoint {
	e.mu.Lock()
	defer e.mu.Unlock()
	if ep, ok := e.m[key]; ok {
		return ep
	}
	ep := &endpoint{key: key, breaker: e.newBreaker(key), bulk: newBulkhead(e.cfg.Bulkhead.MaxConcurrent)}
	e.m[key] = ep
	return ep
}

func (e *endpoints) newBreaker(key string) *gobreaker.TwoStepCircuitBreaker[struct{}] {
	bc := e.cfg.Breaker
	ratioOn := e.cfg.ratioOn()
	st := gobreaker.Settings{
		Name:        key,
		MaxRequests: bc.HalfOpenProbes,
		Interval:    bc.Window,
		Timeout:     bc.OpenTimeout,
		ReadyToTrip: func(c gobreaker.Counts) bool {
			if c.ConsecutiveFailures >= bc.ConsecutiveFailures {
				return true
			}
			ended := c.TotalSuccesses + c.TotalFailures
			return ratioOn && ended >= bc.MinRequests && float64(c.TotalFailures) >= bc.FailureRatio*float64(ended)
		},
		IsSuccessful: func(err error) bool { return err == nil },
		IsExcluded:   func(err error) bool { return errors.Is(err, errNoVerdict) },
		OnStateChange: func(name string, from, to gobreaker.State) {
			// Called under the breaker's lock: log and notify only.
			level := slog.LevelInfo
			if to == gobreaker.StateOpen {
				level = slog.LevelWarn
			}
			e.log.Log(context.Background(), level, "push endpoint circuit breaker", "endpoint", name, "from", from.String(), "to", to.String())
			if e.cfg.OnBreakerChange != nil {
				e.cfg.OnBreakerChange(name, from.String(), to.String())
			}
		},
	}
	// A rolling window in ten buckets, so the ratio rule sees the last
	// Window rather than whatever is left of a fixed period.
	if bucket := bc.Window / 10; bucket >= time.Millisecond {
		st.BucketPeriod = bucket
	}
	return gobreaker.NewTwoStepCircuitBreaker[struct{}](st)
}

func (e *endpoints) states() []BreakerState {
	e.mu.Lock()
	eps := make([]*endpoint, 0, len(e.m))
	for _, ep := range e.m {
		eps = append(eps, ep)
	}
	e.mu.Unlock()
	slices.SortFunc(eps, func(a, b *endpoint) int { return strings.Compare(a.key, b.key) })
	out := make([]BreakerState, 0, len(eps))
	for _, ep := range eps {
		c := ep.breaker.Counts()
		out = append(out, BreakerState{
			Endpoint:            ep.key,
			State:               ep.breaker.State().String(),
			Requests:            c.Requests,
			Successes:           c.TotalSuccesses,
			Failures:            c.TotalFailures,
			ConsecutiveFailures: c.ConsecutiveFailures,
			InFlight:            ep.bulk.inFlight(),
			Waiting:             ep.bulk.waitingCount(),
		})
	}
	return out
}
