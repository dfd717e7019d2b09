package e2e

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"sync"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"
	_ "modernc.org/sqlite"

	"github.com/accord-saga/accord/internal/storage/postgres/pgtest"
	"github.com/accord-saga/accord/sdk/client"
	"github.com/accord-saga/accord/sdk/guard"
	"github.com/accord-saga/accord/sdk/outbox"
	"github.com/accord-saga/accord/sdk/subscriber"
)

// openParticipantDB opens a participant's own SQLite database.
func openParticipantDB(t *testing.T, name string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(t.TempDir(), name)+"?_pragma=journal_mode(WAL)&_pragma=busy_timeout(10000)&_txlock=immediate")
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { db.Close() })
	return db
}

// openPostgresSchema opens a participant's PostgreSQL database in a fresh
// schema of the test database (skipped when it is unreachable, except in
// CI).
func openPostgresSchema(t *testing.T) *sql.DB {
	t.Helper()
	base, schema := pgtest.Schema(t)
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	db, err := sql.Open("pgx", u.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	// The name is pgtest's: a prefix and hex digits.
	if _, err := db.Exec("CREATE SCHEMA " + schema); err != nil {
		t.Fatal(err)
	}
	return db
}

// recordingPublisher publishes through the client and remembers what the
// bus answered.
type recordingPublisher struct {
	c  *client.Client
	mu sync.Mutex
	// results of every publish, duplicates included, by message id
	results []client.Published
}

func (p *recordingPublisher) Publish(ctx context.Context, topic string, msgs []outbox.Message) error {
	res, err := outbox.PublishWith(ctx, p.c, topic, msgs)
	p.mu.Lock()
	p.results = append(p.results, res...)
	p.mu.Unlock()
	return err
}

func (p *recordingPublisher) duplicates() (dups, firsts int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, r := range p.results {
		if r.Duplicate {
			dups++
		} else {
			firsts++
		}
	}
	return dups, firsts
}

// TestOutboxRelayKilled is the outbox's promise against a real server: an
// event committed with the participant's change is delivered, and has its
// effect once, even when the relay is killed between the commit and the
// publish, or between the publish and marking the row sent.
//
// The orders service commits orders with their OrderPlaced events in its
// own database. A first relay is stopped (by a hook, as a crash there
// would) after reading the rows and before publishing; a second relay
// publishes them. Then a third relay is stopped after publishing and
// before marking the rows sent; a fourth publishes them again, and the bus
// answers each as a duplicate of the first publish. The billing service
// consumes the topic with an inbox in its own database, and one of its
// acks is lost on purpose, so that message comes back: each order is
// invoiced once.
//
// The orders service's database is SQLite in one run and PostgreSQL in
// the other, where the relays lock the rows they publish.
func TestOutboxRelayKilled(t *testing.T) {
	t.Parallel()
	for _, d := range []outbox.Dialect{outbox.SQLite, outbox.Postgres} {
		t.Run(d.String(), func(t *testing.T) {
			t.Parallel()
			testOutboxRelayKilled(t, d)
		})
	}
}

func testOutboxRelayKilled(t *testing.T, dialect outbox.Dialect) {
	srv := startServer(t, t.TempDir())
	c := srv.client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const topic, group = "orders", "billing"
	if _, err := c.PutTopic(ctx, topic, client.TopicConfig{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateGroup(ctx, topic, group, client.GroupConfig{
		BackoffInitial: 50 * time.Millisecond, BackoffMax: 200 * time.Millisecond,
	}); err != nil {
		t.Fatal(err)
	}

	// The orders service: orders and the outbox, one database.
	var orders *sql.DB
	if dialect == outbox.Postgres {
		orders = openPostgresSchema(t)
	} else {
		orders = openParticipantDB(t, "orders.db")
	}
	if _, err := orders.Exec(`CREATE TABLE orders (id TEXT PRIMARY KEY, amount INTEGER NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	if err := outbox.Migrate(ctx, orders, dialect); err != nil {
		t.Fatal(err)
	}
	place := func(id string, amount int) outbox.Message {
		t.Helper()
		tx, err := orders.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = tx.Rollback() }()
		if _, err := tx.ExecContext(ctx, `INSERT INTO orders (id, amount) VALUES ($1, $2)`, id, amount); err != nil {
			t.Fatal(err)
		}
		m, err := outbox.Add(ctx, tx, topic, outbox.Message{
			Key: id, Payload: json.RawMessage(fmt.Sprintf(`{"order":%q,"amount":%d}`, id, amount)),
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		return m
	}

	// The billing service: invoices and its inbox, another database.
	billing := openParticipantDB(t, "billing.db")
	if _, err := billing.Exec(`CREATE TABLE invoices (order_id TEXT NOT NULL, amount INTEGER NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	g, err := guard.New(guard.Options{Dialect: guard.SQLite})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Migrate(ctx, billing); err != nil {
		t.Fatal(err)
	}
	inbox, err := outbox.NewInbox(g)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	effects, skipped := 0, 0
	invoiced := make(chan string, 100)
	lostAck := "order-2"
	sub := subscriber.New(c, topic, group, func(ctx context.Context, m *subscriber.Message) error {
		var o struct {
			Order  string `json:"order"`
			Amount int    `json:"amount"`
		}
		if err := m.Decode(&o); err != nil {
			return subscriber.Permanent(err)
		}
		tx, err := billing.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		ran, err := inbox.Do(ctx, tx, m.Topic, m.Group, m.ID, func() error {
			_, err := tx.ExecContext(ctx, `INSERT INTO invoices (order_id, amount) VALUES (?, ?)`, o.Order, o.Amount)
			return err
		})
		if err != nil {
			return errors.Join(err, tx.Rollback())
		}
		if err := tx.Commit(); err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		if !ran {
			skipped++
			return nil
		}
		effects++
		invoiced <- o.Order
		if o.Order == lostAck {
			return errors.New("the ack is lost (on purpose)")
		}
		return nil
	}, subscriber.Options{Concurrency: 4, Wait: time.Second})
	if err := sub.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer scancel()
		if err := sub.Stop(sctx); err != nil {
			t.Errorf("stop the subscriber: %v", err)
		}
	})

	pub := &recordingPublisher{c: c}
	errKilled := errors.New("relay killed")
	relay := func(h outbox.Hooks) *outbox.Relay {
		r, err := outbox.NewRelay(orders, pub, outbox.RelayOptions{Dialect: dialect, Hooks: h})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}

	// 1. Killed between the commit and the publish.
	var placed []outbox.Message
	for i := 1; i <= 3; i++ {
		placed = append(placed, place(fmt.Sprint("order-", i), 10*i))
	}
	killedBefore := relay(outbox.Hooks{BeforePublish: func(context.Context, string, []outbox.Message) error { return errKilled }})
	if _, err := killedBefore.Flush(ctx); !errors.Is(err, errKilled) {
		t.Fatalf("first relay: %v, want it killed", err)
	}
	if d, f := pub.duplicates(); d+f != 0 {
		t.Fatalf("the killed relay published %d messages", d+f)
	}
	if n, err := relay(outbox.Hooks{}).Flush(ctx); err != nil || n != 3 {
		t.Fatalf("second relay published %d, %v; want 3", n, err)
	}

	// 2. Killed between the publish and marking the rows sent.
	for i := 4; i <= 5; i++ {
		placed = append(placed, place(fmt.Sprint("order-", i), 10*i))
	}
	killedAfter := relay(outbox.Hooks{AfterPublish: func(context.Context, string, []outbox.Message) error { return errKilled }})
	if _, err := killedAfter.Flush(ctx); !errors.Is(err, errKilled) {
		t.Fatalf("third relay: %v, want it killed", err)
	}
	if p, _ := killedAfter.Pending(ctx); p != 2 {
		t.Fatalf("%d rows unsent after the kill, want 2", p)
	}
	if n, err := relay(outbox.Hooks{}).Flush(ctx); err != nil || n != 2 {
		t.Fatalf("fourth relay published %d, %v; want 2", n, err)
	}
	if d, f := pub.duplicates(); d != 2 || f != 5 {
		t.Fatalf("the bus stored %d and answered %d duplicates; want 5 and 2", f, d)
	}

	// Every order is invoiced once; the lost ack's redelivery is skipped.
	seen := map[string]bool{}
	for len(seen) < len(placed) {
		select {
		case id := <-invoiced:
			if seen[id] {
				t.Fatalf("order %s invoiced twice", id)
			}
			seen[id] = true
		case <-ctx.Done():
			t.Fatalf("invoiced %v of %d orders", seen, len(placed))
		}
	}
	// Each event is one message on the bus, and its group is done with it
	// (the redelivered one too, once its second delivery is acked).
	for _, m := range placed {
		for {
			tr, err := c.Trace(ctx, m.ID)
			if err != nil {
				t.Fatal(err)
			}
			if len(tr.Messages) != 1 {
				t.Fatalf("order event %s is %d messages on the bus, want 1", m.ID, len(tr.Messages))
			}
			if tr.Messages[0].Groups[0].Status == "done" {
				break
			}
			select {
			case <-ctx.Done():
				t.Fatalf("order event %s: %+v", m.ID, tr.Messages[0].Groups)
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	var rows int
	if err := billing.QueryRow(`SELECT count(*) FROM invoices`).Scan(&rows); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if rows != len(placed) || effects != len(placed) || skipped < 1 {
		t.Fatalf("%d invoices from %d effects, %d redeliveries skipped; want %d, %d, at least 1",
			rows, effects, skipped, len(placed), len(placed))
	}
}
