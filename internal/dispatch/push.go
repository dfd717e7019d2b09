package dispatch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/accord-saga/accord/internal/engine"
)

// Errors of the dispatcher's life cycle.
var (
	ErrAlreadyStarted = errors.New("dispatch: already started")
	ErrStopped        = errors.New("dispatch: stopped")
)

// Push delivers push tasks to HTTP participants. It implements
// engine.PushDispatcher. See the package documentation for its contract.
type Push struct {
	cfg       Config
	log       *slog.Logger
	allow     *Allowlist
	eps       *endpoints
	client    *http.Client
	transport *http.Transport
	userAgent string
	poll      pollTiming

	queue chan queued
	quit  chan struct{} // closed by Stop: take no more tasks
	stats stats

	lifeMu   sync.Mutex
	started  bool
	stopping bool
	cancel   context.CancelFunc // cancels the workers' context
	done     chan struct{}      // closed when every worker has returned
	wg       sync.WaitGroup
}

var _ engine.PushDispatcher = (*Push)(nil)

// New builds a dispatcher. It starts nothing: call Start.
func New(cfg Config) (*Push, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	allow, err := NewAllowlist(cfg.Allow)
	if err != nil {
		return nil, err
	}
	dialer := &net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 30 * time.Second}
	tr := &http.Transport{
		// No proxy: a proxy would connect on our behalf, past the
		// connect-time allowlist check.
		Proxy:                  nil,
		DialContext:            allow.dialer(dialer),
		TLSClientConfig:        cfg.TLS.Clone(),
		ForceAttemptHTTP2:      true,
		MaxIdleConns:           2 * max(cfg.Workers, cfg.Bulkhead.MaxConcurrent),
		MaxIdleConnsPerHost:    cfg.Bulkhead.MaxConcurrent,
		IdleConnTimeout:        cfg.IdleConnTimeout,
		TLSHandshakeTimeout:    cfg.DialTimeout,
		ExpectContinueTimeout:  time.Second,
		MaxResponseHeaderBytes: 64 << 10,
	}
	p := &Push{
		cfg:       cfg,
		log:       cfg.Logger,
		allow:     allow,
		eps:       newEndpoints(cfg),
		transport: tr,
		client: &http.Client{
			Transport: tr,
			// Redirects are not followed: the registered URL is the
			// target, and a redirect could lead past the allowlist.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		userAgent: "accord/" + cfg.Version,
		poll:      pollTiming{def: cfg.PollInterval, max: cfg.MaxRetryAfter},
		queue:     make(chan queued, cfg.QueueSize),
		quit:      make(chan struct{}),
		done:      make(chan struct{}),
	}
	return p, nil
}

// Start starts the worker pool. Cancelling ctx abandons in-flight calls at
// once (they report no result); for a graceful shutdown call Stop. Tasks
// dispatched before Start wait in the queue.
func (p *Push) Start(ctx context.Context) error {
	p.lifeMu.Lock()
	defer p.lifeMu.Unlock()
	if p.stopping {
		return ErrStopped
	}
	if p.started {
		return ErrAlreadyStarted
	}
	p.started = true
	wctx, cancel := context.WithCancel(ctx)
	p.cancel = cancel
	p.wg.Add(p.cfg.Workers)
	for range p.cfg.Workers {
		go p.worker(wctx)
	}
	go func() {
		p.wg.Wait()
		close(p.done)
	}()
	return nil
}

// Quiesce stops intake at once, without waiting: no call starts from now
// on (tasks queued or dispatched later are abandoned to their attempt
// timeouts), while calls in flight go on and report. Stop waits for them.
// Safe to call more than once.
func (p *Push) Quiesce() {
	p.lifeMu.Lock()
	defer p.lifeMu.Unlock()
	if !p.stopping {
		p.stopping = true
		close(p.quit)
	}
}

// Stop stops intake, lets calls in flight finish until ctx ends, then
// cancels the rest and waits for every goroutine. Tasks still queued are
// abandoned to their attempt timeouts. Calls cut off report no result. Stop returns an error wrapping ctx's when it had to cut
// calls off. It is safe to call twice and concurrently.
func (p *Push) Stop(ctx context.Context) error {
	p.Quiesce()
	p.lifeMu.Lock()
	started := p.started
	p.lifeMu.Unlock()
	if !started {
		p.drain()
		p.transport.CloseIdleConnections()
		return nil
	}
	var err error
	select {
	case <-p.done:
	default:
		select {
		case <-p.done:
		case <-ctx.Done():
			p.cancel()
			<-p.done
			err = fmt.Errorf("dispatch: stop: in-flight calls abandoned: %w", ctx.Err())
		}
	}
	p.cancel()
	p.drain()
	p.transport.CloseIdleConnections()
	return err
}

// drain empties the queue after the workers are gone, counting the tasks
// abandoned to their attempt timeouts.
func (p *Push) drain() {
	for {
		select {
		case <-p.queue:
			p.stats.abandoned.Add(1)
		default:
			return
		}
	}
}

// Dispatch queues a task for a call. It never blocks: when the queue is
// full, or the dispatcher is stopping, the task is dropped and counted; the
// attempt's timeout then retries it.
func (p *Push) Dispatch(t engine.Task) {
	select {
	case <-p.quit:
		p.drop(t, "stopping")
		return
	default:
	}
	select {
	case p.queue <- queued{task: t, at: time.Now()}:
		p.stats.dispatched.Add(1)
	default:
		p.drop(t, "queue full")
	}
}

func (p *Push) drop(t engine.Task, why string) {
	n := p.stats.dropped.Add(1)
	// One line for the first drop and every thousandth after: drops come
	// in bursts, and the counter carries the rest.
	if n == 1 || n%1000 == 0 {
		p.log.Warn("push task dropped; its attempt timeout will retry it",
			"reason", why, "task", t.ID, "dropped_total", n)
	}
}

// CheckURL reports whether raw may be a push target under the allowlist;
// see Allowlist.CheckURL.
func (p *Push) CheckURL(raw string) error { return p.allow.CheckURL(raw) }

// Allowlist returns the dispatcher's allowlist.
func (p *Push) Allowlist() *Allowlist { return p.allow }

// Breakers returns the state of every endpoint called so far, by endpoint.
func (p *Push) Breakers() []BreakerState { return p.eps.states() }

func (p *Push) worker(ctx context.Context) {
	defer p.wg.Done()
	for {
		select {
		case <-p.quit:
			return
		case <-ctx.Done():
			return
		case q := <-p.queue:
			// select picks at random among ready cases: check again so
			// that no call starts after Stop.
			select {
			case <-p.quit:
				p.stats.abandoned.Add(1)
				return
			default:
			}
			p.handle(ctx, &q.task, q.at)
		}
	}
}

// queued is a task waiting for a worker, with the time it was dispatched:
// its attempt's clock started then.
type queued struct {
	task engine.Task
	at   time.Time
}

// handle performs one task's attempt and reports its result.
func (p *Push) handle(ctx context.Context, t *engine.Task, dispatched time.Time) {
	start := time.Now()
	p.stats.inFlight.Add(1)
	defer p.stats.inFlight.Add(-1)
	v, key := p.perform(ctx, t, dispatched)
	if v.abandoned {
		p.stats.abandoned.Add(1)
		p.observe(key, OutcomeAbandoned, start)
		return
	}
	p.stats.count(v)
	p.observe(key, v.outcome, start)
	if v.unknown && t.AttemptTimeoutMS > 0 {
		// The participant may have acted: not a result to report, but an
		// unknown outcome, which the attempt's own timeout records as such
		// (so the step is retried, and compensated if the saga rolls
		// back). An attempt without a timeout has nothing to record it:
		// it is reported retryable.
		p.stats.unknown.Add(1)
		return
	}
	p.complete(ctx, t, v)
}

func (p *Push) perform(ctx context.Context, t *engine.Task, dispatched time.Time) (verdict, string) {
	tgt, err := parseTarget(t.URL)
	if err != nil {
		return verdict{outcome: OutcomeFailure, code: CodeInvalidTarget, message: errText(err)}, "invalid"
	}
	key := tgt.endpoint()
	if err := p.allow.checkTarget(tgt); err != nil {
		return verdict{outcome: OutcomeFailure, code: CodeTargetNotAllowed, message: errText(err)}, key
	}
	if err := checkHeaderValues(t); err != nil {
		return verdict{outcome: OutcomeFailure, code: CodeInvalidTask, message: errText(err)}, key
	}
	// The attempt's clock started when the engine dispatched the task, not
	// when a worker took it: a task that waited out its attempt timeout in
	// the queue is not called at all (the engine has timed it out).
	deadline := dispatched.Add(p.attemptTimeout(t))
	if !time.Now().Before(deadline) {
		p.stats.expired.Add(1)
		p.log.Debug("push task expired in the queue", "task", t.ID, "endpoint", key)
		return verdict{abandoned: true}, key
	}
	c := &call{task: t, tgt: tgt}
	if t.AttemptTimeoutMS > 0 {
		c.deadline = deadline.UTC().Format("2006-01-02T15:04:05.000Z07:00")
	}
	body, err := encodeBody(t, c.deadline)
	if err != nil {
		return verdict{outcome: OutcomeFailure, code: CodeInvalidTask, message: errText(err)}, key
	}
	c.body = body
	ep := p.eps.get(key)
	callCtx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	for {
		v := p.exchange(ctx, callCtx, ep, c)
		if !v.again {
			return v, key
		}
		// 202 Accepted: the participant is still working. Call again
		// while the attempt has time; past it, the engine's own attempt
		// timeout decides.
		deadline, _ := callCtx.Deadline()
		if time.Until(deadline) <= v.retryAfter {
			p.log.Debug("push call still working at the attempt timeout", "task", t.ID, "endpoint", key)
			return verdict{abandoned: true}, key
		}
		wait := time.NewTimer(v.retryAfter)
		select {
		case <-wait.C:
		case <-callCtx.Done():
			wait.Stop()
			return verdict{abandoned: true}, key
		case <-p.quit:
			// Stopping: a call between polls is not in flight.
			wait.Stop()
			return verdict{abandoned: true}, key
		}
	}
}

func (p *Push) attemptTimeout(t *engine.Task) time.Duration {
	d := p.cfg.DefaultAttemptTimeout
	if t.AttemptTimeoutMS > 0 && t.AttemptTimeoutMS < int64(p.cfg.MaxAttemptTimeout/time.Millisecond) {
		d = time.Duration(t.AttemptTimeoutMS) * time.Millisecond
	} else if t.AttemptTimeoutMS > 0 {
		d = p.cfg.MaxAttemptTimeout
	}
	return d
}

func (p *Push) complete(ctx context.Context, t *engine.Task, v verdict) {
	cctx, cancel := context.WithTimeout(ctx, p.cfg.CompleteTimeout)
	defer cancel()
	err := p.cfg.Complete(cctx, engine.Result{
		TaskID:       t.ID,
		ClaimToken:   t.ClaimToken,
		Outcome:      v.outcome,
		Output:       v.output,
		ErrorCode:    v.code,
		ErrorMessage: v.message,
	})
	if err != nil {
		p.stats.completeErrors.Add(1)
		p.log.Warn("record push result", "task", t.ID, "saga", t.SagaID, "step", t.Step, "outcome", v.outcome, "err", err)
	}
}

func (p *Push) observe(endpoint, outcome string, start time.Time) {
	if p.cfg.Observe != nil {
		p.cfg.Observe(endpoint, outcome, time.Since(start))
	}
}
