package engine

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/accord-saga/accord/internal/clock"
	"github.com/accord-saga/accord/internal/saga"
	"github.com/accord-saga/accord/internal/storage"
)

// Errors the engine returns; the API maps each to a status code.
var (
	ErrSagaNotFound        = errors.New("engine: saga not found")
	ErrDefinitionNotFound  = errors.New("engine: definition not found")
	ErrDefinitionDisabled  = errors.New("engine: definition version disabled")
	ErrTaskNotFound        = errors.New("engine: task not found or already completed")
	ErrOverloaded          = errors.New("engine: overloaded, retry later")
	ErrStopped             = errors.New("engine: stopped")
	ErrNotOwner            = errors.New("engine: partition not owned by this node")
	ErrIdempotencyMismatch = errors.New("engine: idempotency key was used for a different request")
	ErrInvalidInput        = errors.New("engine: invalid input")
)

// Config configures an Engine. Zero fields take the documented defaults.
type Config struct {
	// Store is required.
	Store storage.Driver
	// NodeID names this node in leases. Default "local".
	NodeID string
	// LeaseTTL is the partition lease lifetime; renewed every third of it.
	// Default 10s.
	LeaseTTL time.Duration
	// MaxBatch bounds the inputs one partition commits at once. Default 512.
	MaxBatch int
	// InboxSize bounds each partition's queue of waiting inputs; a start
	// that finds it full fails with ErrOverloaded. Default 4096.
	InboxSize int
	// IdempotencyTTL is how long a start's idempotency key is kept.
	// Default 24h.
	IdempotencyTTL time.Duration
	// Retention is how long a finished saga is kept. Default 30 days.
	Retention time.Duration
	// MaxDeliveries is how often a task may be claimed without a result
	// before its attempt fails as a poison task. Default 5.
	MaxDeliveries int
	// TaskPollInterval is how often a long poll re-checks the store for
	// tasks that became visible without a local signal (delays, expired
	// claims, other nodes). Default 250ms.
	TaskPollInterval time.Duration
	// ReconcileInterval is how often each partition checks that every
	// timer and task its sagas wait on is in the store, and re-creates any
	// that is missing. Default 1m.
	ReconcileInterval time.Duration
	// RetentionInterval is how often finished sagas past Retention and
	// expired idempotency keys are deleted. Default 1m.
	RetentionInterval time.Duration
	// Push receives tasks whose target is an HTTP endpoint. Optional: without
	// it such tasks wait in the push queue for a node that has one.
	Push PushDispatcher
	// Logger. Default slog.Default().
	Logger *slog.Logger
	// Clock drives the engine's timers, tickers and poll deadlines. Default
	// clock.Real (the host's clock).
	Clock Clock
	// CheckTarget, if set, vets every http target of a definition at
	// registration (the push allowlist), so a definition that could never
	// run is refused up front.
	CheckTarget func(url string) error
	// Registerer receives the engine's Prometheus metrics. Optional.
	Registerer prometheus.Registerer
	// OnFinish, if set, is called after a saga reaches a terminal state
	// (from the partition loop: it must not block).
	OnFinish func(id, status string)
	// OnPublish, if set, is called after a commit that published messages
	// to a topic, once per topic (from the partition loop: it must not
	// block).
	OnPublish func(topic string)
	// Tracer, if set, is shown every commit's saga events and gives each
	// attempt its trace context (package tracing). Optional: without it
	// tasks carry no traceparent.
	Tracer Tracer
}

// Defaults.
const (
	DefaultLeaseTTL         = 10 * time.Second
	DefaultMaxBatch         = 512
	DefaultInboxSize        = 4096
	DefaultIdempotencyTTL   = 24 * time.Hour
	DefaultRetention        = 30 * 24 * time.Hour
	DefaultMaxDeliveries    = 5
	DefaultTaskPollInterval = 250 * time.Millisecond
)

// PushQueue is the queue name push attempts carry (they are never stored in
// a task queue); PollTasks refuses it.
const PushQueue = "_push"

// Clock is the engine's source of time: every timer, ticker and deadline
// of the engine follows it. Tests give a clock.Manual and move it.
type Clock = clock.Clock

// PushDispatcher takes tasks to deliver over HTTP. Dispatch must not block
// for long; the engine calls it after the task is durable.
type PushDispatcher interface {
	Dispatch(t Task)
}

// Tracer observes the engine for tracing. Its methods are called from
// partition loops, several at once: they must be safe for concurrent use
// and must not block.
type Tracer interface {
	// Traceparent returns the W3C traceparent handed out with an attempt
	// (taskID) of a saga, in its task and its push call.
	Traceparent(sagaID, taskID string) string
	// Committed is called after each commit, once per saga whose events
	// the commit wrote, with the saga's state after the commit and those
	// events in log order. It must not modify or keep either.
	Committed(state *saga.State, events []saga.Event)
}

// Engine runs sagas. See the package documentation.
type Engine struct {
	cfg   Config
	store storage.Driver
	log   *slog.Logger
	clock Clock
	parts int
	// exclusive: this process alone has the store open (see leaseTTL).
	exclusive bool

	metrics *metrics
	pushes  *pushTracker
	defs    *definitionCache
	queues  *queueSignals
	topics  *topicCache
	waiters *waiters

	mu       sync.RWMutex
	owned    map[int]*partition // partitions this node runs now
	stopping bool

	quiesceOnce sync.Once
	quiesced    chan struct{} // closed by Quiesce: hand out no new work

	lifeMu  sync.Mutex
	started bool
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

// New returns an engine; Start runs it.
func New(cfg Config) (*Engine, error) {
	if cfg.Store == nil {
		return nil, errors.New("engine: Config.Store is required")
	}
	cfg.NodeID = cmp.Or(cfg.NodeID, "local")
	cfg.LeaseTTL = cmp.Or(cfg.LeaseTTL, DefaultLeaseTTL)
	cfg.MaxBatch = cmp.Or(cfg.MaxBatch, DefaultMaxBatch)
	cfg.InboxSize = cmp.Or(cfg.InboxSize, DefaultInboxSize)
	cfg.IdempotencyTTL = cmp.Or(cfg.IdempotencyTTL, DefaultIdempotencyTTL)
	cfg.Retention = cmp.Or(cfg.Retention, DefaultRetention)
	cfg.MaxDeliveries = cmp.Or(cfg.MaxDeliveries, DefaultMaxDeliveries)
	cfg.TaskPollInterval = cmp.Or(cfg.TaskPollInterval, DefaultTaskPollInterval)
	cfg.ReconcileInterval = cmp.Or(cfg.ReconcileInterval, time.Minute)
	cfg.RetentionInterval = cmp.Or(cfg.RetentionInterval, time.Minute)
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	if cfg.LeaseTTL < 100*time.Millisecond || cfg.MaxBatch < 1 || cfg.InboxSize < 1 || cfg.MaxDeliveries < 1 {
		return nil, fmt.Errorf("engine: config out of range: lease ttl %s, max batch %d, inbox %d, max deliveries %d",
			cfg.LeaseTTL, cfg.MaxBatch, cfg.InboxSize, cfg.MaxDeliveries)
	}
	e := &Engine{
		cfg:     cfg,
		store:   cfg.Store,
		log:     cfg.Logger,
		clock:   cfg.Clock,
		parts:   cfg.Store.Info().Partitions,
		defs:    newDefinitionCache(cfg.Store),
		queues:  newQueueSignals(),
		topics:  &topicCache{store: cfg.Store, seen: map[string]time.Time{}},
		waiters: newWaiters(),
		owned:   map[int]*partition{},

		quiesced: make(chan struct{}),
	}
	e.exclusive = cfg.Store.Info().Exclusive
	e.metrics = newMetrics(e, cfg.Registerer)
	e.pushes = newPushTracker(e)
	return e, nil
}

// Start takes every partition lease it can and starts their loops, the
// lease manager and the retention sweeper. It returns once the first round
// of acquisitions is done, so a single node is ready when Start returns.
func (e *Engine) Start(ctx context.Context) error {
	e.lifeMu.Lock()
	defer e.lifeMu.Unlock()
	if e.started {
		return errors.New("engine: already started")
	}
	e.started = true
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	e.cancel = cancel
	e.acquireFree(runCtx, true)
	e.wg.Add(2)
	go func() { defer e.wg.Done(); e.leaseLoop(runCtx) }()
	go func() { defer e.wg.Done(); e.retentionLoop(runCtx) }()
	return nil
}

// Quiesce makes the engine hand out no new work, the first step of a
// graceful shutdown: from then on it dispatches no push attempt, and task
// polls claim nothing and return at once. Everything else goes on: the
// results of calls and tasks in flight are still recorded, and timers
// still fire, but the attempts they decide are only recorded, not handed
// out: whoever runs the partition next (this node after a restart, or
// another) dispatches them again from the store, as after a crash. It
// returns at once and is safe to call more than once; Stop quiesces too.
func (e *Engine) Quiesce() {
	e.quiesceOnce.Do(func() { close(e.quiesced) })
}

// quiescing reports whether Quiesce was called.
func (e *Engine) quiescing() bool {
	select {
	case <-e.quiesced:
		return true
	default:
		return false
	}
}

// Stop quiesces the engine, stops intake, lets every partition loop finish
// its current batch, releases the leases and waits for every goroutine.
// Safe to call twice.
func (e *Engine) Stop(ctx context.Context) error {
	e.Quiesce()
	e.lifeMu.Lock()
	defer e.lifeMu.Unlock()
	if !e.started || e.cancel == nil {
		return nil
	}
	e.mu.Lock()
	e.stopping = true
	parts := make([]*partition, 0, len(e.owned))
	for _, p := range e.owned {
		parts = append(parts, p)
	}
	e.mu.Unlock()
	e.cancel()
	for _, p := range parts {
		p.stop()
	}
	done := make(chan struct{})
	go func() { e.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		return fmt.Errorf("engine: stop: %w", ctx.Err())
	}
	for _, p := range parts {
		err := e.store.LeaseRelease(ctx, &storage.LeaseReleaseParams{Partition: p.id, Owner: e.cfg.NodeID, Epoch: p.epoch})
		if err != nil && !errors.Is(err, storage.ErrFenced) {
			e.log.Warn("release lease", "partition", p.id, "err", err)
		}
	}
	e.mu.Lock()
	e.owned = map[int]*partition{}
	e.mu.Unlock()
	e.cancel = nil
	return nil
}

// OwnedPartitions returns how many partitions this node runs now.
func (e *Engine) OwnedPartitions() int {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return len(e.owned)
}

// Partitions returns the store's partition count.
func (e *Engine) Partitions() int { return e.parts }

// partitionFor returns the running loop of a partition.
func (e *Engine) partitionFor(id int) (*partition, error) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	if e.stopping {
		return nil, ErrStopped
	}
	p := e.owned[id]
	if p == nil {
		return nil, errNotOwner(id)
	}
	return p, nil
}

func errNotOwner(partition int) error {
	return fmt.Errorf("%w: partition %d", ErrNotOwner, partition)
}
