package outbox_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/accord-saga/accord/sdk/guard"
	"github.com/accord-saga/accord/sdk/outbox"
	"github.com/accord-saga/accord/sdk/subscriber"
)

// fakeBus stores published messages once per idempotency key, as Accord's
// bus does within its dedup window.
type fakeBus struct {
	mu       sync.Mutex
	stored   []outbox.Message
	topics   []string
	seen     map[string]bool
	attempts int // messages published, duplicates included
	fail     error
}

func newFakeBus() *fakeBus { return &fakeBus{seen: map[string]bool{}} }

func (b *fakeBus) Publish(_ context.Context, topic string, msgs []outbox.Message) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.fail != nil {
		return b.fail
	}
	for _, m := range msgs {
		b.attempts++
		if m.IdempotencyKey == "" {
			return errors.New("no idempotency key")
		}
		if b.seen[topic+"/"+m.IdempotencyKey] {
			continue
		}
		b.seen[topic+"/"+m.IdempotencyKey] = true
		b.stored = append(b.stored, m)
		b.topics = append(b.topics, topic)
	}
	return nil
}

func (b *fakeBus) snapshot() (stored []outbox.Message, attempts int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.stored), b.attempts
}

// addEvents commits one transaction per event, each adding one message.
func addEvents(t *testing.T, db *sql.DB, topic string, n int, key func(i int) string) []outbox.Message {
	t.Helper()
	var out []outbox.Message
	for i := range n {
		tx, err := db.Begin()
		if err != nil {
			t.Fatal(err)
		}
		m, err := outbox.Add(context.Background(), tx, topic, outbox.Message{
			Key:     key(i),
			Payload: json.RawMessage(fmt.Sprintf(`{"n": %d}`, i)),
			Headers: map[string]string{"type": "Counted"},
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

func newRelay(t *testing.T, db *sql.DB, d outbox.Dialect, pub outbox.Publisher, hooks outbox.Hooks) *outbox.Relay {
	t.Helper()
	r, err := outbox.NewRelay(db, pub, outbox.RelayOptions{Dialect: d, Batch: 7, Hooks: hooks})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestRelayPublishesCommittedEventsInOrder(t *testing.T) {
	eachDialect(t, func(t *testing.T, d outbox.Dialect, db *sql.DB) {
		ctx := context.Background()
		added := addEvents(t, db, "counts", 20, func(i int) string { return fmt.Sprint("k", i%3) })
		// A rolled-back transaction's event is never published.
		tx, err := db.Begin()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := outbox.Add(ctx, tx, "counts", outbox.Message{Payload: json.RawMessage(`"rolled back"`)}); err != nil {
			t.Fatal(err)
		}
		if err := tx.Rollback(); err != nil {
			t.Fatal(err)
		}
		bus := newFakeBus()
		r := newRelay(t, db, d, bus, outbox.Hooks{})
		n, err := r.Flush(ctx)
		if err != nil || n != 20 {
			t.Fatalf("Flush = %d, %v; want 20", n, err)
		}
		stored, _ := bus.snapshot()
		if len(stored) != 20 {
			t.Fatalf("stored %d messages, want 20", len(stored))
		}
		for i, m := range stored {
			a := added[i]
			if m.ID != a.ID || m.IdempotencyKey != a.IdempotencyKey || m.Key != a.Key ||
				string(m.Payload) != fmt.Sprintf(`{"n": %d}`, i) || m.Headers["type"] != "Counted" {
				t.Errorf("message %d = %+v, want %+v", i, m, a)
			}
		}
		if p, err := r.Pending(ctx); err != nil || p != 0 {
			t.Errorf("Pending = %d, %v; want 0", p, err)
		}
		if n, err := r.Flush(ctx); err != nil || n != 0 {
			t.Errorf("second Flush = %d, %v; want 0", n, err)
		}
	})
}

// A relay that stops after publishing and before marking the rows sent
// (as a crash there would) leaves them for the next relay, which publishes
// them again with the same idempotency keys: the bus stores each once.
func TestRelayStoppedAfterPublishRepublishesOnce(t *testing.T) {
	eachDialect(t, func(t *testing.T, d outbox.Dialect, db *sql.DB) {
		ctx := context.Background()
		addEvents(t, db, "counts", 5, func(int) string { return "" })
		bus := newFakeBus()
		errKilled := errors.New("killed")
		first := newRelay(t, db, d, bus, outbox.Hooks{
			AfterPublish: func(context.Context, string, []outbox.Message) error { return errKilled },
		})
		if _, err := first.Flush(ctx); !errors.Is(err, errKilled) {
			t.Fatalf("first relay: %v, want %v", err, errKilled)
		}
		if p, _ := first.Pending(ctx); p != 5 {
			t.Fatalf("pending after the stop = %d, want 5", p)
		}
		second := newRelay(t, db, d, bus, outbox.Hooks{})
		if n, err := second.Flush(ctx); err != nil || n != 5 {
			t.Fatalf("second relay: %d, %v", n, err)
		}
		stored, attempts := bus.snapshot()
		if len(stored) != 5 || attempts != 10 {
			t.Fatalf("stored %d (want 5) of %d publishes (want 10)", len(stored), attempts)
		}
	})
}

// A relay that stops before it publishes publishes nothing; the next one
// publishes every row once.
func TestRelayStoppedBeforePublish(t *testing.T) {
	eachDialect(t, func(t *testing.T, d outbox.Dialect, db *sql.DB) {
		ctx := context.Background()
		addEvents(t, db, "counts", 3, func(int) string { return "k" })
		bus := newFakeBus()
		errKilled := errors.New("killed")
		first := newRelay(t, db, d, bus, outbox.Hooks{
			BeforePublish: func(context.Context, string, []outbox.Message) error { return errKilled },
		})
		if _, err := first.Flush(ctx); !errors.Is(err, errKilled) {
			t.Fatalf("first relay: %v, want %v", err, errKilled)
		}
		if _, attempts := bus.snapshot(); attempts != 0 {
			t.Fatalf("%d publishes before the stop", attempts)
		}
		if n, err := newRelay(t, db, d, bus, outbox.Hooks{}).Flush(ctx); err != nil || n != 3 {
			t.Fatalf("second relay: %d, %v", n, err)
		}
		if stored, attempts := bus.snapshot(); len(stored) != 3 || attempts != 3 {
			t.Fatalf("stored %d of %d publishes, want 3 of 3", len(stored), attempts)
		}
	})
}

func TestRelayPublishFailureKeepsRows(t *testing.T) {
	eachDialect(t, func(t *testing.T, d outbox.Dialect, db *sql.DB) {
		ctx := context.Background()
		addEvents(t, db, "counts", 4, func(int) string { return "" })
		bus := newFakeBus()
		bus.fail = errors.New("unavailable")
		r := newRelay(t, db, d, bus, outbox.Hooks{})
		if _, err := r.Flush(ctx); err == nil {
			t.Fatal("Flush succeeded while the bus fails")
		}
		bus.mu.Lock()
		bus.fail = nil
		bus.mu.Unlock()
		if n, err := r.Flush(ctx); err != nil || n != 4 {
			t.Fatalf("Flush = %d, %v; want 4", n, err)
		}
	})
}

// Several relays and several writers at once: every event is stored once,
// and the events of each key in the order they were added.
func TestConcurrentRelays(t *testing.T) {
	eachDialect(t, func(t *testing.T, d outbox.Dialect, db *sql.DB) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		bus := newFakeBus()
		const writers, perWriter, relays = 4, 25, 3
		var rs []*outbox.Relay
		for range relays {
			r, err := outbox.NewRelay(db, bus, outbox.RelayOptions{Dialect: d, Batch: 5, Interval: 5 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			rs = append(rs, r)
		}
		runCtx, stop := context.WithCancel(ctx)
		var wg sync.WaitGroup
		for _, r := range rs {
			wg.Go(func() { _ = r.Run(runCtx) })
		}
		var wwg sync.WaitGroup
		for w := range writers {
			wwg.Go(func() {
				for i := range perWriter {
					tx, err := db.BeginTx(ctx, nil)
					if err != nil {
						t.Error(err)
						return
					}
					_, err = outbox.Add(ctx, tx, "counts", outbox.Message{
						Key: fmt.Sprint("w", w), Payload: json.RawMessage(fmt.Sprint(i)),
					})
					if err == nil {
						err = tx.Commit()
					} else {
						_ = tx.Rollback()
					}
					if err != nil {
						t.Error(err)
						return
					}
					rs[i%relays].Notify()
				}
			})
		}
		wwg.Wait()
		for {
			p, err := rs[0].Pending(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if p == 0 {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("%d rows still unsent", p)
			}
			rs[0].Notify()
			time.Sleep(10 * time.Millisecond) // polling a bounded wait
		}
		stop()
		wg.Wait()
		stored, _ := bus.snapshot()
		if len(stored) != writers*perWriter {
			t.Fatalf("stored %d, want %d", len(stored), writers*perWriter)
		}
		next := map[string]int{}
		for _, m := range stored {
			var n int
			if err := json.Unmarshal(m.Payload, &n); err != nil {
				t.Fatal(err)
			}
			if n != next[m.Key] {
				t.Fatalf("key %s: event %d stored when %d was next", m.Key, n, next[m.Key])
			}
			next[m.Key]++
		}
	})
}

func TestCleanupDeletesSentRows(t *testing.T) {
	eachDialect(t, func(t *testing.T, d outbox.Dialect, db *sql.DB) {
		ctx := context.Background()
		addEvents(t, db, "counts", 3, func(int) string { return "" })
		r, err := outbox.NewRelay(db, newFakeBus(), outbox.RelayOptions{Dialect: d, Retention: time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		addEvents(t, db, "counts", 1, func(int) string { return "" }) // unsent: kept
		deadline := time.Now().Add(10 * time.Second)
		deleted := 0
		for deleted < 3 && time.Now().Before(deadline) {
			n, err := r.Cleanup(ctx)
			if err != nil {
				t.Fatal(err)
			}
			deleted += n
		}
		var rows int
		if err := db.QueryRow(`SELECT count(*) FROM accord_outbox`).Scan(&rows); err != nil {
			t.Fatal(err)
		}
		if deleted != 3 || rows != 1 {
			t.Fatalf("deleted %d (want 3), %d rows left (want 1)", deleted, rows)
		}
	})
}

func TestAddValidates(t *testing.T) {
	db := openDB(t, outbox.SQLite)
	ctx := context.Background()
	if err := outbox.Migrate(ctx, db, outbox.SQLite); err != nil {
		t.Fatal(err)
	}
	if err := outbox.Migrate(ctx, db, outbox.SQLite); err != nil {
		t.Fatalf("second Migrate: %v", err)
	}
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback() }()
	for _, m := range []outbox.Message{
		{Payload: json.RawMessage(`{`)},
		{Key: string(make([]byte, 300))},
		{TTL: -time.Second},
	} {
		if _, err := outbox.Add(ctx, tx, "t", m); err == nil {
			t.Errorf("Add(%+v) succeeded", m)
		}
	}
	if _, err := outbox.Add(ctx, tx, "", outbox.Message{}); err == nil {
		t.Error("Add without a topic succeeded")
	}
	if _, err := outbox.New(outbox.Options{Table: "Bad-Name", Dialect: outbox.SQLite}); err == nil {
		t.Error("New accepted a bad table name")
	}
}

// newInbox migrates the guard's table and runs the consumer's own DDL.
func newInbox(t *testing.T, d outbox.Dialect, db *sql.DB, ddl string) *outbox.Inbox {
	t.Helper()
	g, err := guard.New(guard.Options{Dialect: d})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Migrate(context.Background(), db); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(ddl); err != nil {
		t.Fatal(err)
	}
	in, err := outbox.NewInbox(g)
	if err != nil {
		t.Fatal(err)
	}
	return in
}

// The inbox runs an effect once per (topic, group, message), in the
// consumer's transaction; a failed effect is not recorded.
func TestInbox(t *testing.T) {
	eachDialect(t, func(t *testing.T, d outbox.Dialect, db *sql.DB) {
		ctx := context.Background()
		in := newInbox(t, d, db, `CREATE TABLE effects (msg TEXT NOT NULL, grp TEXT NOT NULL)`)
		deliver := func(group, id string, fail error) (bool, error) {
			tx, err := db.BeginTx(ctx, nil)
			if err != nil {
				return false, err
			}
			ran, err := in.Do(ctx, tx, "tickets", group, id, func() error {
				if _, err := tx.ExecContext(ctx, `INSERT INTO effects (msg, grp) VALUES ($1, $2)`, id, group); err != nil {
					return err
				}
				return fail
			})
			if err != nil {
				return false, errors.Join(err, tx.Rollback())
			}
			return ran, tx.Commit()
		}
		boom := errors.New("boom")
		if _, err := deliver("notify", "m1", boom); !errors.Is(err, boom) {
			t.Fatalf("failing effect: %v", err)
		}
		long := strings.Repeat("x", 250) // hashed into the key
		for i, c := range []struct {
			group, id string
			ran       bool
		}{
			{"notify", "m1", true}, {"notify", "m1", false}, {"audit", "m1", true},
			{"notify", "m2", true}, {"notify", "m2", false},
			{"notify", long, true}, {"notify", long, false},
		} {
			ran, err := deliver(c.group, c.id, nil)
			if err != nil || ran != c.ran {
				t.Errorf("delivery %d (%s, %.8s): ran %v, %v; want %v", i, c.group, c.id, ran, err, c.ran)
			}
		}
		var n int
		if err := db.QueryRow(`SELECT count(*) FROM effects`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 4 {
			t.Errorf("%d effects, want 4", n)
		}
	})
}

// Inbox.Handler wraps a subscriber handler in the consumer's transaction:
// a redelivered message is acked without a second effect, a failed effect
// leaves nothing, and a permanent error stays permanent.
func TestInboxHandler(t *testing.T) {
	eachDialect(t, func(t *testing.T, d outbox.Dialect, db *sql.DB) {
		ctx := context.Background()
		in := newInbox(t, d, db, `CREATE TABLE effects (msg TEXT NOT NULL)`)
		var fail error
		h := in.Handler(db, func(ctx context.Context, tx *sql.Tx, m *subscriber.Message) error {
			if _, err := tx.ExecContext(ctx, `INSERT INTO effects (msg) VALUES ($1)`, m.ID); err != nil {
				return err
			}
			return fail
		})
		m := &subscriber.Message{Topic: "orders", Group: "billing", ID: "m1"}
		fail = subscriber.Permanent(errors.New("bad order"))
		if err := h(ctx, m); !subscriber.IsPermanent(err) {
			t.Fatalf("failed effect: %v, want the permanent error", err)
		}
		fail = nil
		for range 3 {
			if err := h(ctx, m); err != nil {
				t.Fatal(err)
			}
		}
		var n int
		if err := db.QueryRow(`SELECT count(*) FROM effects`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 1 {
			t.Fatalf("%d effects of three deliveries after a failed one, want 1", n)
		}
	})
}

// While one relay holds an event of a key (PostgreSQL row locks), another
// relay publishes other keys' events but none of that key's later ones:
// they would overtake it.
func TestRelaysKeepKeyOrder(t *testing.T) {
	t.Parallel()
	db := openDB(t, outbox.Postgres)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := outbox.Migrate(ctx, db, outbox.Postgres); err != nil {
		t.Fatal(err)
	}
	a1 := addEvents(t, db, "counts", 1, func(int) string { return "a" })[0]
	bus := newFakeBus()
	holding, release := make(chan struct{}), make(chan struct{})
	first, err := outbox.NewRelay(db, bus, outbox.RelayOptions{Dialect: outbox.Postgres, Hooks: outbox.Hooks{
		BeforePublish: func(context.Context, string, []outbox.Message) error {
			close(holding)
			<-release
			return nil
		},
	}})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := first.Flush(ctx)
		done <- err
	}()
	<-holding // the first relay holds a's first event
	later := addEvents(t, db, "counts", 4, func(i int) string { return []string{"a", "b", "a", "c"}[i] })
	second := newRelay(t, db, outbox.Postgres, bus, outbox.Hooks{})
	n, err := second.Flush(ctx)
	if err != nil || n != 2 {
		t.Fatalf("second relay published %d, %v; want b's and c's events", n, err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n, err := second.Flush(ctx); err != nil || n != 2 {
		t.Fatalf("after the first relay: %d, %v; want a's two later events", n, err)
	}
	stored, _ := bus.snapshot()
	var got []string
	for _, m := range stored {
		got = append(got, m.ID)
	}
	want := []string{later[1].ID, later[3].ID, a1.ID, later[0].ID, later[2].ID} // b, c, then a's in order
	if !slices.Equal(got, want) {
		t.Fatalf("stored %v, want %v", got, want)
	}
}

// A topic the bus refuses does not hold back the other topics' events.
func TestRelayFailingTopicDoesNotBlockOthers(t *testing.T) {
	eachDialect(t, func(t *testing.T, d outbox.Dialect, db *sql.DB) {
		ctx := context.Background()
		addEvents(t, db, "missing", 2, func(int) string { return "" })
		addEvents(t, db, "counts", 3, func(int) string { return "" })
		bus := newFakeBus()
		errNoTopic := errors.New("no such topic")
		pub := outbox.PublisherFunc(func(ctx context.Context, topic string, msgs []outbox.Message) error {
			if topic == "missing" {
				return errNoTopic
			}
			return bus.Publish(ctx, topic, msgs)
		})
		r := newRelay(t, db, d, pub, outbox.Hooks{})
		n, err := r.Flush(ctx)
		if !errors.Is(err, errNoTopic) || n != 3 {
			t.Fatalf("Flush = %d, %v; want 3 and the missing topic's error", n, err)
		}
		if p, _ := r.Pending(ctx); p != 2 {
			t.Fatalf("%d pending, want the missing topic's 2", p)
		}
	})
}
