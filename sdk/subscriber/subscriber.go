package subscriber

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/accord-saga/accord/sdk/internal/claimloop"
)

// Options configure a Subscriber. Zero fields take the defaults.
type Options struct {
	// Concurrency bounds the messages being handled at once. Default 10.
	Concurrency int
	// Max bounds the messages one receive claims; a receive never claims
	// more than there are free handler slots. Default Concurrency.
	Max int
	// Wait is how long the server holds a receive when no message is
	// ready (at most 60s). Default 20s.
	Wait time.Duration
	// Visibility is how long a received message stays claimed without a
	// heartbeat. Default: the group's ack timeout, which Start reads.
	Visibility time.Duration
	// HeartbeatEvery is how often a running handler's claim is extended
	// by Visibility. Default Visibility/3.
	HeartbeatEvery time.Duration
	// Middleware wraps the handler; the first is the outermost.
	Middleware []Middleware
	// Logger receives receive, ack and nack failures. Default
	// slog.Default().
	Logger *slog.Logger
}

// Defaults.
const (
	DefaultConcurrency = 10
	DefaultWait        = 20 * time.Second
	// MaxReason bounds the nack reason taken from a handler's error.
	MaxReason = 1024
)

// Backoff after failed receives.
const (
	receiveBackoffMin = 200 * time.Millisecond
	receiveBackoffMax = 10 * time.Second
)

// fallbackVisibility is the claim asked for when the group reports no ack
// timeout.
const fallbackVisibility = 30 * time.Second

// answerTimeout bounds one ack, nack or heartbeat call.
const answerTimeout = 30 * time.Second

// source is what a subscriber needs of the bus: one group of one topic.
type source interface {
	receive(ctx context.Context, max int, wait, visibility time.Duration) ([]*Message, error)
	ack(ctx context.Context, m *Message) error
	nack(ctx context.Context, m *Message, reason string, delay time.Duration, deadLetter bool) error
	heartbeat(ctx context.Context, m *Message, extend time.Duration) error
	// ackTimeout returns the group's effective ack timeout; it fails if
	// the group does not exist.
	ackTimeout(ctx context.Context) (time.Duration, error)
}

// Subscriber consumes a topic's messages as a member of a consumer group.
// It owns its goroutines: Start starts them and Stop ends them all.
type Subscriber struct {
	src     source
	topic   string
	group   string
	handler Handler
	opts    Options
	log     *slog.Logger

	mu       sync.Mutex
	started  bool
	stopped  bool
	stopDone chan struct{} // closed when the first Stop has finished
	stopErr  error
	stopRecv context.CancelFunc
	cancelH  context.CancelCauseFunc
	recv     sync.WaitGroup
	handlers sync.WaitGroup
}

func newSubscriber(src source, topic, group string, h Handler, opts Options) *Subscriber {
	opts.Concurrency = cmp.Or(max(opts.Concurrency, 0), DefaultConcurrency)
	opts.Max = min(cmp.Or(max(opts.Max, 0), opts.Concurrency), opts.Concurrency)
	opts.Wait = min(cmp.Or(max(opts.Wait, 0), DefaultWait), time.Minute)
	opts.Visibility = max(opts.Visibility, 0)
	opts.HeartbeatEvery = max(opts.HeartbeatEvery, 0)
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Subscriber{
		src: src, topic: topic, group: group,
		handler: Chain(h, opts.Middleware...),
		opts:    opts, log: opts.Logger,
	}
}

// errStopped is the cause of the handlers' contexts when Stop gave up
// waiting for them.
var errStopped = errors.New("subscriber: stopped before the handler finished")

// Start reads the group's configuration (failing if it does not exist)
// and starts receiving and handling messages. Handlers' contexts derive
// from ctx's values but not its cancellation: Stop ends them.
func (s *Subscriber) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started || s.stopped {
		return errors.New("subscriber: started twice, or after Stop")
	}
	if s.opts.Visibility == 0 {
		d, err := s.src.ackTimeout(ctx)
		if err != nil {
			return fmt.Errorf("subscriber: group %s of topic %s: %w", s.group, s.topic, err)
		}
		s.opts.Visibility = cmp.Or(max(d, 0), fallbackVisibility)
	}
	s.opts.HeartbeatEvery = max(cmp.Or(s.opts.HeartbeatEvery, s.opts.Visibility/3), time.Millisecond)
	s.started = true
	recvCtx, stopRecv := context.WithCancel(context.WithoutCancel(ctx))
	handlerCtx, cancelH := context.WithCancelCause(context.WithoutCancel(ctx))
	s.stopRecv, s.cancelH = stopRecv, cancelH
	s.recv.Go(func() { s.receiveLoop(recvCtx, handlerCtx) })
	return nil
}

// Stop stops receiving, waits for the running handlers to finish and
// answers their messages (ack or nack), and returns. When ctx is done
// first it cancels the handlers' contexts, waits for them to return, nacks
// the messages they did not finish, and returns ctx's error. After Stop
// returns the subscriber has no goroutine left. Stop may be called more
// than once; later calls wait for the first to finish.
func (s *Subscriber) Stop(ctx context.Context) error {
	s.mu.Lock()
	if !s.started && !s.stopped {
		// A subscriber stopped before it started never starts.
		s.stopped = true
		s.stopDone = make(chan struct{})
		close(s.stopDone)
		s.mu.Unlock()
		return nil
	}
	if s.stopped {
		done := s.stopDone
		s.mu.Unlock()
		select {
		case <-done:
			return s.stopErr
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	s.stopped = true
	s.stopDone = make(chan struct{})
	s.mu.Unlock()
	defer close(s.stopDone)
	s.stopRecv()
	s.recv.Wait()
	done := make(chan struct{})
	go func() { s.handlers.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		s.cancelH(errStopped)
		<-done
		err = ctx.Err()
	}
	s.cancelH(nil)
	s.stopErr = err
	return err
}

// Run starts the subscriber, and when ctx is done stops it, giving
// running handlers up to grace to finish.
func (s *Subscriber) Run(ctx context.Context, grace time.Duration) error {
	if err := s.Start(ctx); err != nil {
		return err
	}
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), grace)
	defer cancel()
	return s.Stop(sctx)
}

func (s *Subscriber) receiveLoop(ctx, handlerCtx context.Context) {
	slots := make(chan struct{}, s.opts.Concurrency)
	claimloop.Run(ctx, claimloop.Config[*Message]{
		Slots: slots,
		Max:   s.opts.Max,
		Claim: func(ctx context.Context, n int) ([]*Message, error) {
			return s.src.receive(ctx, n, s.opts.Wait, s.opts.Visibility)
		},
		Handle: func(m *Message) {
			s.handlers.Go(func() {
				defer func() { <-slots }()
				s.handle(handlerCtx, m)
			})
		},
		Failed: func(err error, retryIn time.Duration) {
			s.log.Warn("subscriber: receive failed", "topic", s.topic, "group", s.group, "err", err, "retry_in", retryIn)
		},
		BackoffMin: receiveBackoffMin,
		BackoffMax: receiveBackoffMax,
	})
}

// handle runs the handler on one message with heartbeats, then acks or
// nacks it, unless its claim was lost.
func (s *Subscriber) handle(parent context.Context, m *Message) {
	ctx, cancel := context.WithCancelCause(parent)
	defer cancel(nil)
	hbDone := make(chan struct{})
	var hb sync.WaitGroup
	hb.Go(func() { s.heartbeat(ctx, m, cancel, hbDone) })
	err := s.handler(ctx, m)
	close(hbDone)
	hb.Wait()
	if errors.Is(context.Cause(ctx), ErrReceiptLost) {
		return // the group handed the message to another consumer
	}
	actx, acancel := context.WithTimeout(context.WithoutCancel(ctx), answerTimeout)
	defer acancel()
	if err == nil {
		if aerr := s.src.ack(actx, m); aerr != nil && !errors.Is(aerr, ErrReceiptLost) {
			s.log.Warn("subscriber: ack failed", "topic", s.topic, "group", s.group, "message", m.ID, "err", aerr)
		}
		return
	}
	if errors.Is(context.Cause(ctx), errStopped) && !IsPermanent(err) {
		err = fmt.Errorf("%w: %w", errStopped, err)
	}
	if nerr := s.src.nack(actx, m, reason(err), delayOf(err), IsPermanent(err)); nerr != nil && !errors.Is(nerr, ErrReceiptLost) {
		s.log.Warn("subscriber: nack failed", "topic", s.topic, "group", s.group, "message", m.ID, "err", nerr)
	}
}

// reason is an error's text, cut to MaxReason bytes.
func reason(err error) string {
	r := err.Error()
	if len(r) <= MaxReason {
		return r
	}
	r = r[:MaxReason]
	for len(r) > 0 && !utf8.ValidString(r) {
		r = r[:len(r)-1]
	}
	return r
}

// heartbeat extends the message's claim until done is closed; a lost
// claim cancels the handler's context with ErrReceiptLost.
func (s *Subscriber) heartbeat(ctx context.Context, m *Message, cancel context.CancelCauseFunc, done <-chan struct{}) {
	tick := time.NewTicker(s.opts.HeartbeatEvery)
	defer tick.Stop()
	for {
		select {
		case <-done:
			return
		case <-tick.C:
		}
		hctx, hcancel := context.WithTimeout(context.WithoutCancel(ctx), s.opts.HeartbeatEvery)
		err := s.src.heartbeat(hctx, m, s.opts.Visibility)
		hcancel()
		switch {
		case err == nil:
		case errors.Is(err, ErrReceiptLost):
			cancel(ErrReceiptLost)
			return
		default:
			s.log.Warn("subscriber: heartbeat failed", "topic", s.topic, "group", s.group, "message", m.ID, "err", err)
		}
	}
}
