package worker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/accord-saga/accord/sdk/client"
	"github.com/accord-saga/accord/sdk/internal/claimloop"
)

// Options configures a Worker. Zero fields take the documented defaults.
type Options struct {
	// Concurrency bounds the handlers running at once, over all queues.
	// Default 10.
	Concurrency int
	// PollMax bounds the tasks one poll claims; a poll never claims more
	// than there are free handler slots. Default Concurrency.
	PollMax int
	// Visibility is how long a claimed task stays invisible to other
	// workers without a heartbeat. Default 30s.
	Visibility time.Duration
	// HeartbeatEvery is how often a running handler's claim is extended.
	// Default Visibility/3.
	HeartbeatEvery time.Duration
	// PollWait is how long the server holds a poll when no task is ready.
	// Default 20s.
	PollWait time.Duration
	// GracePeriod is how long Run waits, once its context is done, for
	// running handlers to finish; then their contexts are cancelled and
	// their tasks reported retryable. Default 30s.
	GracePeriod time.Duration
	// Logger receives poll and report failures. Default slog.Default().
	Logger *slog.Logger
}

// Defaults.
const (
	DefaultConcurrency = 10
	DefaultVisibility  = 30 * time.Second
	DefaultPollWait    = 20 * time.Second
	DefaultGracePeriod = 30 * time.Second
)

// maxBatch bounds the results one completion request carries.
const maxBatch = 100

// pollBackoff bounds the wait after a failed poll.
const (
	pollBackoffMin = 200 * time.Millisecond
	pollBackoffMax = 10 * time.Second
)

// ErrClaimLost is the cause of a handler's context when the worker learns
// that the task's claim expired and another worker holds it.
var ErrClaimLost = errors.New("worker: task claim lost")

// Worker serves task queues: it long-polls them, runs the registered
// handler of each task with bounded concurrency, heartbeats while a
// handler runs and reports results in batches.
type Worker struct {
	c    *client.Client
	opts Options
	log  *slog.Logger

	mu       sync.Mutex
	handlers map[string]map[string]Handler // queue → operation → handler
	running  bool
}

// New returns a worker that calls the server through c.
func New(c *client.Client, opts Options) *Worker {
	opts.Concurrency = cmp.Or(max(opts.Concurrency, 0), DefaultConcurrency)
	opts.PollMax = min(cmp.Or(max(opts.PollMax, 0), opts.Concurrency), opts.Concurrency)
	opts.Visibility = cmp.Or(max(opts.Visibility, 0), DefaultVisibility)
	opts.HeartbeatEvery = cmp.Or(max(opts.HeartbeatEvery, 0), opts.Visibility/3)
	opts.PollWait = cmp.Or(max(opts.PollWait, 0), DefaultPollWait)
	opts.GracePeriod = cmp.Or(max(opts.GracePeriod, 0), DefaultGracePeriod)
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Worker{c: c, opts: opts, log: opts.Logger, handlers: map[string]map[string]Handler{}}
}

// Handle registers h for the tasks of queue whose operation is operation;
// an empty operation matches every operation of the queue that has no
// handler of its own. Register before Run.
func (w *Worker) Handle(queue, operation string, h Handler) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.handlers[queue] == nil {
		w.handlers[queue] = map[string]Handler{}
	}
	w.handlers[queue][operation] = h
}

func (w *Worker) handler(queue, operation string) Handler {
	w.mu.Lock()
	defer w.mu.Unlock()
	ops := w.handlers[queue]
	if h, ok := ops[operation]; ok {
		return h
	}
	return ops[""]
}

// Run serves every queue that has a handler until ctx is done, then stops
// gracefully: it stops polling, lets running handlers finish within
// GracePeriod (then cancels their contexts), reports their results, and
// returns nil. A worker runs once.
func (w *Worker) Run(ctx context.Context) error {
	w.mu.Lock()
	if w.running {
		w.mu.Unlock()
		return errors.New("worker: Run called twice")
	}
	w.running = true
	queues := make([]string, 0, len(w.handlers))
	for q := range w.handlers {
		queues = append(queues, q)
	}
	w.mu.Unlock()
	if len(queues) == 0 {
		return errors.New("worker: no handlers registered")
	}
	sort.Strings(queues)

	// Handlers outlive ctx by up to the grace period.
	handlerCtx, cancelHandlers := context.WithCancelCause(context.WithoutCancel(ctx))
	defer cancelHandlers(nil)
	rep := newReporter(w.c, w.log)
	slots := make(chan struct{}, w.opts.Concurrency)
	var handlers, pollers sync.WaitGroup
	for _, q := range queues {
		pollers.Go(func() { w.pollLoop(ctx, handlerCtx, q, slots, &handlers, rep) })
	}
	pollers.Wait()

	done := make(chan struct{})
	go func() { handlers.Wait(); close(done) }()
	grace := time.NewTimer(w.opts.GracePeriod)
	defer grace.Stop()
	select {
	case <-done:
	case <-grace.C:
		cancelHandlers(errShutdown)
		<-done
	}
	rep.close()
	return nil
}

var errShutdown = errors.New("worker: stopped before the handler finished")

// pollLoop claims tasks of one queue while there are free slots.
func (w *Worker) pollLoop(ctx, handlerCtx context.Context, queue string, slots chan struct{}, handlers *sync.WaitGroup, rep *reporter) {
	claimloop.Run(ctx, claimloop.Config[client.Task]{
		Slots: slots,
		Max:   w.opts.PollMax,
		Claim: func(ctx context.Context, n int) ([]client.Task, error) {
			return w.c.Poll(ctx, queue, client.PollOptions{Max: n, Visibility: w.opts.Visibility, Wait: w.opts.PollWait})
		},
		Handle: func(ct client.Task) {
			t := taskFrom(ct)
			handlers.Go(func() {
				defer func() { <-slots }()
				w.run(handlerCtx, t, rep)
			})
		},
		Failed: func(err error, retryIn time.Duration) {
			w.log.Warn("worker: poll failed", "queue", queue, "err", err, "retry_in", retryIn)
		},
		BackoffMin: pollBackoffMin,
		BackoffMax: pollBackoffMax,
	})
}

// run runs one task's handler with heartbeats and hands its result to the
// reporter, unless the claim was lost.
func (w *Worker) run(parent context.Context, t *Task, rep *reporter) {
	ctx, cancel := context.WithCancelCause(parent)
	defer cancel(nil)
	if !t.Deadline.IsZero() {
		var cancelDeadline context.CancelFunc
		ctx, cancelDeadline = context.WithDeadline(ctx, t.Deadline)
		defer cancelDeadline()
	}
	hbDone := make(chan struct{})
	var hb sync.WaitGroup
	hb.Go(func() { w.heartbeat(ctx, t, cancel, hbDone) })

	var res Result
	if h := w.handler(t.Queue, t.Operation); h != nil {
		res = Call(ctx, h, t)
	} else {
		res = Result{Outcome: client.OutcomeRetryable, ErrorCode: CodeNoHandler,
			ErrorMessage: fmt.Sprintf("no handler for operation %q of queue %q", t.Operation, t.Queue)}
	}
	close(hbDone)
	hb.Wait()
	if res.Panic != "" {
		w.log.Error("worker: handler panicked", "queue", t.Queue, "operation", t.Operation, "task", t.ID, "panic", res.Panic)
	}
	switch cause := context.Cause(ctx); {
	case errors.Is(cause, ErrClaimLost):
		return // another worker holds the task; its result counts
	case errors.Is(cause, errShutdown) && res.Outcome != client.OutcomeSuccess:
		res = Result{Outcome: client.OutcomeRetryable, ErrorCode: CodeShutdown, ErrorMessage: res.ErrorMessage}
	}
	rep.report(client.TaskResult{
		TaskID: t.ID, ClaimToken: t.claimToken, Outcome: res.Outcome, Output: outputOf(res),
		ErrorCode: res.ErrorCode, ErrorMessage: res.ErrorMessage,
	})
}

func outputOf(res Result) any {
	if len(res.Output) == 0 {
		return nil
	}
	return res.Output
}

// heartbeat extends the task's claim until done is closed; a lost claim
// cancels the handler's context with ErrClaimLost.
func (w *Worker) heartbeat(ctx context.Context, t *Task, cancel context.CancelCauseFunc, done <-chan struct{}) {
	tick := time.NewTicker(w.opts.HeartbeatEvery)
	defer tick.Stop()
	for {
		select {
		case <-done:
			return
		case <-tick.C:
		}
		// A heartbeat must not outlive the handler, but it must go out even
		// while the worker shuts down, so it is bounded on its own.
		hctx, hcancel := context.WithTimeout(context.WithoutCancel(ctx), w.opts.HeartbeatEvery)
		err := w.c.Heartbeat(hctx, t.ID, t.claimToken, w.opts.Visibility)
		hcancel()
		switch {
		case err == nil:
		case client.IsClaimLost(err):
			cancel(ErrClaimLost)
			return
		default:
			w.log.Warn("worker: heartbeat failed", "task", t.ID, "err", err)
		}
	}
}
