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
	db, _ := openSQLite(t, filepath.Join(t.TempDir(), name))
	return db
}

// openSQLite opens the SQLite database at path and returns it with its
// DSN.
func openSQLite(t testing.TB, path string) (*sql.DB, string) {
	t.Helper()
	dsn := "file:" + path + "?_pragma=journal_mode(WAL)&_pragma=busy_timeout(10000)&_txlock=immediate"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { db.Close() })
	return db, dsn
}

// openPostgresSchema opens a participant's PostgreSQL database in a fresh
// schema of the test database (skipped when it is unreachable, except in
// CI).
func openPostgresSchema(t *testing.T) (*sql.DB, string) {
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
	return db, u.String()
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
// own database. A first relay dies after reading the rows and before
// publishing; a second relay publishes them. Then a third relay dies after
// publishing and before marking the rows sent; a fourth publishes them
// again, and the bus answers each as a duplicate of the first publish. The
// billing service consumes the topic with an inbox in its own database,
// and one of its acks is lost on purpose, so that message comes back: each
// order is invoiced once.
//
// The orders service's database is SQLite or PostgreSQL (where relays
// lock the rows they publish), and the relays that die are either stopped
// by a hook in this process, or a relay process that is sent SIGKILL when
// it reaches the point.
func TestOutboxRelayKilled(t *testing.T) {
	t.Parallel()
	relayProc := buildRelayProc(t)
	for _, d := range []outbox.Dialect{outbox.SQLite, outbox.Postgres} {
		for _, how := range []string{"hook", "sigkill"} {
			t.Run(d.String()+"/"+how, func(t *testing.T) {
				t.Parallel()
				bin := relayProc
				if how == "hook" {
					bin = ""
				}
				testOutboxRelayKilled(t, d, bin)
			})
		}
	}
}

// testOutboxRelayKilled runs the scenario; the relays that die are
// relayProc processes killed with SIGKILL, or, when it is "", relays in
// this process stopped by a hook.
func testOutboxRelayKilled(t *testing.T, dialect outbox.Dialect, relayProc string) {
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
	var ordersDSN string
	if dialect == outbox.Postgres {
		orders, ordersDSN = openPostgresSchema(t)
	} else {
		orders, ordersDSN = openSQLite(t, filepath.Join(t.TempDir(), "orders.db"))
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
	// die runs a relay over the outbox that dies at stage: "before" (it
	// has read the rows and not published them) or "after" (it has
	// published them and not marked them sent).
	die := func(stage string) {
		t.Helper()
		if relayProc != "" {
			killRelayProcess(t, ctx, relayProc, relaySpec{Dialect: dialect.String(), DSN: ordersDSN, Server: srv.url, Stage: stage})
			return
		}
		errKilled := errors.New("relay killed")
		stop := func(context.Context, string, []outbox.Message) error { return errKilled }
		h := outbox.Hooks{BeforePublish: stop}
		if stage == "after" {
			h = outbox.Hooks{AfterPublish: stop}
		}
		r, err := outbox.NewRelay(orders, pub, outbox.RelayOptions{Dialect: dialect, Hooks: h})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.Flush(ctx); !errors.Is(err, errKilled) {
			t.Fatalf("relay dying %s the publish: %v", stage, err)
		}
	}
	// finish runs a healthy relay until it has published want rows. On
	// PostgreSQL the rows of a killed relay stay locked until the server
	// sees its connection close.
	finish := func(want int) {
		t.Helper()
		r, err := outbox.NewRelay(orders, pub, outbox.RelayOptions{Dialect: dialect})
		if err != nil {
			t.Fatal(err)
		}
		got := 0
		for got < want {
			n, err := r.Flush(ctx)
			if err != nil {
				t.Fatal(err)
			}
			got += n
			if got < want {
				select {
				case <-ctx.Done():
					t.Fatalf("the relay published %d rows, want %d", got, want)
				case <-time.After(20 * time.Millisecond):
				}
			}
		}
		if got != want {
			t.Fatalf("the relay published %d rows, want %d", got, want)
		}
	}
	onBus := func(m outbox.Message) int {
		t.Helper()
		tr, err := c.Trace(ctx, m.ID)
		if errors.Is(err, client.ErrNotFound) {
			return 0 // no message of the flow
		}
		if err != nil {
			t.Fatal(err)
		}
		return len(tr.Messages)
	}

	// 1. Killed between the commit and the publish.
	var placed []outbox.Message
	for i := 1; i <= 3; i++ {
		placed = append(placed, place(fmt.Sprint("order-", i), 10*i))
	}
	die("before")
	for _, m := range placed {
		if n := onBus(m); n != 0 {
			t.Fatalf("the relay killed before publishing published %s", m.ID)
		}
	}
	finish(3)

	// 2. Killed between the publish and marking the rows sent.
	for i := 4; i <= 5; i++ {
		placed = append(placed, place(fmt.Sprint("order-", i), 10*i))
	}
	die("after")
	for _, m := range placed[3:] {
		if n := onBus(m); n != 1 {
			t.Fatalf("event %s is %d messages on the bus after the relay published it, want 1", m.ID, n)
		}
	}
	finish(2)
	if d, _ := pub.duplicates(); d != 2 {
		t.Fatalf("the bus answered %d publishes as duplicates, want 2", d)
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
