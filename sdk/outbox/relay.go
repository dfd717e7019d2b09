package outbox

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Publisher publishes a batch of one topic's messages, in order, with their
// idempotency keys. ClientPublisher adapts an Accord client.
type Publisher interface {
	Publish(ctx context.Context, topic string, msgs []Message) error
}

// PublisherFunc is a function that is a Publisher.
type PublisherFunc func(ctx context.Context, topic string, msgs []Message) error

// Publish calls f.
func (f PublisherFunc) Publish(ctx context.Context, topic string, msgs []Message) error {
	return f(ctx, topic, msgs)
}

// Hooks are points where a test stops a relay, as a crash would: an error
// ends the pass with nothing marked sent, and the rows stay for the next
// pass or relay.
type Hooks struct {
	// BeforePublish runs after a batch was read, before it is published.
	BeforePublish func(ctx context.Context, topic string, msgs []Message) error
	// AfterPublish runs after a batch was published, before it is marked
	// sent.
	AfterPublish func(ctx context.Context, topic string, msgs []Message) error
}

// Defaults of RelayOptions.
const (
	DefaultBatch           = 100
	MaxBatch               = 1000
	DefaultInterval        = time.Second
	DefaultMaxBackoff      = 30 * time.Second
	DefaultRetention       = 24 * time.Hour
	DefaultCleanupInterval = time.Minute
)

// RelayOptions configure a Relay. Zero fields take the defaults.
type RelayOptions struct {
	// Table and Dialect name the outbox (see Options).
	Table   string
	Dialect Dialect
	// Batch bounds the rows one pass reads and one publish sends.
	Batch int
	// Interval is how often Run looks for unsent rows when nothing wakes
	// it (Notify).
	Interval time.Duration
	// MaxBackoff bounds the wait after failed passes, which doubles from
	// Interval.
	MaxBackoff time.Duration
	// Retention is how long sent rows are kept before Run deletes them.
	Retention time.Duration
	// CleanupInterval is how often Run deletes expired sent rows.
	CleanupInterval time.Duration
	Logger          *slog.Logger
	Hooks           Hooks
}

// Relay publishes an outbox's rows to the bus. It is safe for concurrent
// use; several relays, in one process or many, may serve one table.
type Relay struct {
	db   *sql.DB
	pub  Publisher
	o    *Outbox
	opts RelayOptions
	log  *slog.Logger
	wake chan struct{}
}

// NewRelay returns a relay of the outbox opts names, publishing with pub.
func NewRelay(db *sql.DB, pub Publisher, opts RelayOptions) (*Relay, error) {
	if db == nil || pub == nil {
		return nil, errors.New("outbox: relay: database and publisher are required")
	}
	o, err := New(Options{Table: opts.Table, Dialect: opts.Dialect})
	if err != nil {
		return nil, err
	}
	opts.Batch = cmp.Or(opts.Batch, DefaultBatch)
	if opts.Batch < 1 || opts.Batch > MaxBatch {
		return nil, fmt.Errorf("outbox: relay: batch must be 1..%d", MaxBatch)
	}
	opts.Interval = cmp.Or(opts.Interval, DefaultInterval)
	opts.MaxBackoff = max(cmp.Or(opts.MaxBackoff, DefaultMaxBackoff), opts.Interval)
	opts.Retention = cmp.Or(opts.Retention, DefaultRetention)
	opts.CleanupInterval = cmp.Or(opts.CleanupInterval, DefaultCleanupInterval)
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Relay{db: db, pub: pub, o: o, opts: opts, log: log, wake: make(chan struct{}, 1)}, nil
}

// Notify wakes Run: call it after committing a transaction that added
// messages, so that they go out without waiting for the next interval.
func (r *Relay) Notify() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Run publishes unsent rows until ctx is done, then returns nil. A failed
// pass is logged and retried with backoff; sent rows past the retention
// are deleted every CleanupInterval. A row the bus refuses (its topic does
// not exist, say) is retried the same way, and holds back the later rows
// of its topic, in order; Pending counts them.
func (r *Relay) Run(ctx context.Context) error {
	failures := 0
	var lastCleanup time.Time
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		case <-r.wake:
		}
		wait := r.opts.Interval
		n, err := r.Flush(ctx)
		switch {
		case err == nil:
			failures = 0
		case ctx.Err() != nil:
			return nil
		case n == 0:
			// Back off only when nothing goes through: a topic the bus
			// refuses must not slow the others down.
			failures++
			wait = min(r.opts.Interval<<min(failures, 16), r.opts.MaxBackoff)
			r.log.Warn("outbox relay: publish failed", "table", r.o.table, "err", err, "retry_in", wait)
		default:
			failures = 0
			r.log.Warn("outbox relay: publish failed for some rows", "table", r.o.table, "err", err, "published", n)
		}
		if time.Since(lastCleanup) >= r.opts.CleanupInterval {
			lastCleanup = time.Now()
			if _, err := r.Cleanup(ctx); err != nil && ctx.Err() == nil {
				r.log.Warn("outbox relay: cleanup failed", "table", r.o.table, "err", err)
			}
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(wait)
	}
}

// Flush publishes the rows unsent now, batch after batch, and returns how
// many it published, with the last publish error if any. Rows another
// relay holds are left to it.
func (r *Relay) Flush(ctx context.Context) (int, error) {
	total := 0
	var last error
	for {
		published, read, err := r.pass(ctx)
		total += published
		if err != nil {
			last = err
		}
		// A pass that published nothing ends the flush; one that failed
		// for some topics but published others goes on.
		if read < r.opts.Batch || published == 0 {
			return total, last
		}
	}
}

// row is an outbox row.
type row struct {
	seq   int64
	topic string
	msg   Message
	ahead int64
}

// querier is what a pass needs of a *sql.DB or a *sql.Tx.
type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// pass reads one batch, publishes what it may, marks it sent, and reports
// how many rows it published and read.
func (r *Relay) pass(ctx context.Context) (published, read int, err error) {
	var q querier = r.db
	var tx *sql.Tx
	if r.o.dialect == Postgres {
		// The transaction holds the rows' locks while they are published.
		tx, err = r.db.BeginTx(ctx, nil)
		if err != nil {
			return 0, 0, fmt.Errorf("outbox: relay: begin: %w", err)
		}
		defer func() { _ = tx.Rollback() }()
		q = tx
	}
	rows, err := r.read(ctx, q)
	if err != nil {
		return 0, 0, err
	}
	read = len(rows)
	// Keep a key's rows only if no earlier row of it is held by another
	// relay (PostgreSQL: on SQLite no relay holds rows).
	held := map[[2]string]int64{} // (topic, key) → rows of it kept so far
	blocked := map[[2]string]bool{}
	var order []string
	byTopic := map[string][]row{}
	for _, rw := range rows {
		if rw.msg.Key != "" && r.o.dialect == Postgres {
			tk := [2]string{rw.topic, rw.msg.Key}
			if blocked[tk] || rw.ahead != held[tk] {
				blocked[tk] = true
				continue
			}
			held[tk]++
		}
		if _, ok := byTopic[rw.topic]; !ok {
			order = append(order, rw.topic)
		}
		byTopic[rw.topic] = append(byTopic[rw.topic], rw)
	}
	// Topics are independent: one that fails (say, it does not exist)
	// does not hold the others back.
	var sent []int64
	var pubErr error
	for _, topic := range order {
		batch := byTopic[topic]
		msgs := make([]Message, len(batch))
		for i, rw := range batch {
			msgs[i] = rw.msg
		}
		if err := r.publish(ctx, topic, msgs); err != nil {
			pubErr = errors.Join(pubErr, err)
			continue
		}
		for _, rw := range batch {
			sent = append(sent, rw.seq)
		}
	}
	if len(sent) > 0 {
		args := make([]any, len(sent))
		for i, s := range sent {
			args[i] = s
		}
		if _, err := q.ExecContext(ctx, r.o.q.markSent(r.o.table, len(sent)), args...); err != nil {
			return 0, read, errors.Join(pubErr, fmt.Errorf("outbox: relay: mark sent: %w", err))
		}
	}
	if tx != nil {
		if err := tx.Commit(); err != nil {
			return 0, read, errors.Join(pubErr, fmt.Errorf("outbox: relay: commit: %w", err))
		}
	}
	return len(sent), read, pubErr
}

func (r *Relay) publish(ctx context.Context, topic string, msgs []Message) error {
	if h := r.opts.Hooks.BeforePublish; h != nil {
		if err := h(ctx, topic, msgs); err != nil {
			return err
		}
	}
	if err := r.pub.Publish(ctx, topic, msgs); err != nil {
		return fmt.Errorf("outbox: relay: publish to %s: %w", topic, err)
	}
	if h := r.opts.Hooks.AfterPublish; h != nil {
		if err := h(ctx, topic, msgs); err != nil {
			return err
		}
	}
	return nil
}

func (r *Relay) read(ctx context.Context, q querier) ([]row, error) {
	rs, err := q.QueryContext(ctx, r.o.q.claim, r.opts.Batch)
	if err != nil {
		return nil, fmt.Errorf("outbox: relay: read: %w", err)
	}
	defer rs.Close()
	var out []row
	for rs.Next() {
		var rw row
		var headers, payload []byte
		var ttl int64
		if err := rs.Scan(&rw.seq, &rw.topic, &rw.msg.Key, &rw.msg.ID, &rw.msg.CorrelationID, &rw.msg.IdempotencyKey,
			&headers, &payload, &ttl, &rw.ahead); err != nil {
			return nil, fmt.Errorf("outbox: relay: read: %w", err)
		}
		if len(headers) > 0 {
			if err := json.Unmarshal(headers, &rw.msg.Headers); err != nil {
				return nil, fmt.Errorf("outbox: relay: row %d: headers: %w", rw.seq, err)
			}
		}
		rw.msg.Payload = json.RawMessage(payload)
		rw.msg.TTL = time.Duration(ttl) * time.Millisecond
		out = append(out, rw)
	}
	if err := rs.Err(); err != nil {
		return nil, fmt.Errorf("outbox: relay: read: %w", err)
	}
	return out, nil
}

// Cleanup deletes the rows sent longer ago than the retention, in batches,
// and returns how many it deleted.
func (r *Relay) Cleanup(ctx context.Context) (int, error) {
	total := 0
	const batch = 1000
	for {
		res, err := r.db.ExecContext(ctx, r.o.q.cleanup, r.opts.Retention.Milliseconds(), batch)
		if err != nil {
			return total, fmt.Errorf("outbox: cleanup: %w", err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return total, fmt.Errorf("outbox: cleanup: %w", err)
		}
		total += int(n)
		if n < batch {
			return total, nil
		}
	}
}

// Pending returns how many rows are not sent yet.
func (r *Relay) Pending(ctx context.Context) (int, error) {
	var n int
	if err := r.db.QueryRowContext(ctx, r.o.q.pending).Scan(&n); err != nil {
		return 0, fmt.Errorf("outbox: pending: %w", err)
	}
	return n, nil
}
