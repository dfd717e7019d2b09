package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	_ "modernc.org/sqlite"

	"github.com/accord-saga/accord/examples/choreography/internal/flow"
	"github.com/accord-saga/accord/sdk/client"
	"github.com/accord-saga/accord/sdk/guard"
	"github.com/accord-saga/accord/sdk/outbox"
	"github.com/accord-saga/accord/sdk/subscriber"
)

// Topics and groups.
const (
	topicCreated    = "ticket-created"
	topicClassified = "ticket-classified"
	groupClassifier = "classifier"
	groupNotifier   = "notifier"
)

// Ticket is a support ticket: the TicketCreated event.
type Ticket struct {
	ID      string `json:"id"`
	Subject string `json:"subject"`
	Body    string `json:"body"`
}

// Classified is the TicketClassified event.
type Classified struct {
	Ticket   string `json:"ticket"`
	Category string `json:"category"`
	Team     string `json:"team"`
}

// Notification is an alert the notifier sent.
type Notification struct {
	Ticket        string
	Channel       string
	CorrelationID string
}

// keywords stand in for the language model: the first category whose
// words the ticket mentions wins.
var keywords = []struct {
	category, team string
	words          []string
}{
	{"billing", "#billing", []string{"invoice", "refund", "charge", "payment"}},
	{"technical", "#engineering", []string{"error", "crash", "timeout", "bug"}},
	{"account", "#accounts", []string{"password", "login", "locked"}},
}

func classify(t Ticket) Classified {
	text := strings.ToLower(t.Subject + " " + t.Body)
	for _, k := range keywords {
		for _, w := range k.words {
			if strings.Contains(text, w) {
				return Classified{Ticket: t.ID, Category: k.category, Team: k.team}
			}
		}
	}
	return Classified{Ticket: t.ID, Category: "general", Team: "#support"}
}

// Result is what a run did: the notifications sent, the deliveries that
// found their notification already sent, and each ticket's correlation id.
type Result struct {
	Notifications []Notification
	Duplicates    int
	Flows         map[string]string // ticket id → correlation id
}

// run sets up the topics and groups, starts the three services, opens the
// tickets, and returns once every ticket's flow is done.
func run(ctx context.Context, c *client.Client, dir string, tickets []Ticket, out io.Writer) (Result, error) {
	if err := flow.Topics(ctx, c, topicCreated, topicClassified); err != nil {
		return Result{}, err
	}
	if err := flow.Groups(ctx, c, topicCreated, groupClassifier); err != nil {
		return Result{}, err
	}
	if err := flow.Groups(ctx, c, topicClassified, groupNotifier); err != nil {
		return Result{}, err
	}

	// The ticket service: its database, with the outbox, and the relay.
	ticketsDB, err := flow.OpenSQLite(filepath.Join(dir, "tickets.db"))
	if err != nil {
		return Result{}, err
	}
	defer ticketsDB.Close()
	if _, err := ticketsDB.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS tickets (id TEXT PRIMARY KEY, subject TEXT NOT NULL)`); err != nil {
		return Result{}, err
	}
	if err := outbox.Migrate(ctx, ticketsDB, outbox.SQLite); err != nil {
		return Result{}, err
	}
	relay, err := outbox.NewRelay(ticketsDB, outbox.ClientPublisher(c), outbox.RelayOptions{Dialect: outbox.SQLite, Interval: 200 * time.Millisecond})
	if err != nil {
		return Result{}, err
	}

	// The notifier's database: the alerts it sent, and its inbox.
	notifyDB, err := flow.OpenSQLite(filepath.Join(dir, "notifier.db"))
	if err != nil {
		return Result{}, err
	}
	defer notifyDB.Close()
	if _, err := notifyDB.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS notifications (ticket TEXT NOT NULL, channel TEXT NOT NULL, correlation_id TEXT NOT NULL)`); err != nil {
		return Result{}, err
	}
	g, err := guard.New(guard.Options{Dialect: guard.SQLite})
	if err != nil {
		return Result{}, err
	}
	if err := g.Migrate(ctx, notifyDB); err != nil {
		return Result{}, err
	}
	inbox, err := outbox.NewInbox(g)
	if err != nil {
		return Result{}, err
	}

	var mu sync.Mutex
	printf := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(out, format, args...)
	}

	classifier := subscriber.New(c, topicCreated, groupClassifier, func(ctx context.Context, m *subscriber.Message) error {
		var t Ticket
		if err := m.Decode(&t); err != nil {
			return subscriber.Permanent(err)
		}
		cl := classify(t)
		printf("classifier: %-5s %-28q -> %s\n", t.ID, t.Subject, cl.Category)
		// The event's idempotency key is the incoming message's id: a
		// redelivered TicketCreated publishes no second TicketClassified.
		_, err := subscriber.Publish(ctx, c, topicClassified, client.Message{
			Key: t.ID, IdempotencyKey: "classified-" + m.ID, Payload: flow.JSON(cl),
		})
		return err
	}, subscriber.Options{Concurrency: 4, Wait: time.Second, Middleware: []subscriber.Middleware{
		subscriber.Recoverer, subscriber.CorrelationID,
		subscriber.Retry(subscriber.RetryOptions{InitialInterval: 50 * time.Millisecond}),
	}})

	var duplicates atomic.Int32
	var lostAck atomic.Bool // drop the first ack: its message comes back
	errLostAck := errors.New("connection reset before the ack (on purpose)")
	notifier := subscriber.New(c, topicClassified, groupNotifier, func(ctx context.Context, m *subscriber.Message) error {
		var cl Classified
		if err := m.Decode(&cl); err != nil {
			return subscriber.Permanent(err)
		}
		tx, err := notifyDB.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		ran, err := inbox.Do(ctx, tx, m.Topic, m.Group, m.ID, func() error {
			// A real notifier would call Slack or send an email here, with
			// the message id as the idempotency key of the call.
			_, err := tx.ExecContext(ctx, `INSERT INTO notifications (ticket, channel, correlation_id) VALUES (?, ?, ?)`,
				cl.Ticket, cl.Team, subscriber.CorrelationIDFrom(ctx))
			return err
		})
		if err != nil {
			return errors.Join(err, tx.Rollback())
		}
		if err := tx.Commit(); err != nil {
			return err
		}
		if !ran {
			duplicates.Add(1)
			printf("notifier:   %-5s attempt %d: already notified, nothing sent\n", cl.Ticket, m.Attempt)
			return nil
		}
		printf("notifier:   %-5s -> %s\n", cl.Ticket, cl.Team)
		if lostAck.CompareAndSwap(false, true) {
			return errLostAck
		}
		return nil
	}, subscriber.Options{Concurrency: 4, Wait: time.Second, Middleware: []subscriber.Middleware{
		// No Retry here: the lost ack must go back to the bus, to show
		// a real redelivery.
		subscriber.Recoverer, subscriber.CorrelationID,
	}})

	runCtx, stopRelay := context.WithCancel(ctx)
	var relayDone sync.WaitGroup
	relayDone.Go(func() { _ = relay.Run(runCtx) })
	defer func() { stopRelay(); relayDone.Wait() }()
	for _, s := range []*subscriber.Subscriber{classifier, notifier} {
		if err := s.Start(ctx); err != nil {
			return Result{}, err
		}
		defer func() { _ = s.Stop(context.WithoutCancel(ctx)) }()
	}

	// The ticket service opens the tickets: each ticket and its event in
	// one transaction.
	res := Result{Flows: map[string]string{}}
	for _, t := range tickets {
		tx, err := ticketsDB.BeginTx(ctx, nil)
		if err != nil {
			return res, err
		}
		if _, err := tx.ExecContext(ctx, `INSERT OR REPLACE INTO tickets (id, subject) VALUES (?, ?)`, t.ID, t.Subject); err != nil {
			return res, errors.Join(err, tx.Rollback())
		}
		// The event's id is the flow's correlation id.
		msg, err := outbox.Add(ctx, tx, topicCreated, outbox.Message{Key: t.ID, Payload: flow.JSON(t)})
		if err != nil {
			return res, errors.Join(err, tx.Rollback())
		}
		if err := tx.Commit(); err != nil {
			return res, err
		}
		res.Flows[t.ID] = msg.ID
		relay.Notify()
	}

	for _, t := range tickets {
		if err := flow.WaitDone(ctx, c, res.Flows[t.ID], 2); err != nil {
			return res, fmt.Errorf("ticket %s: %w", t.ID, err)
		}
	}
	rows, err := notifyDB.QueryContext(ctx, `SELECT ticket, channel, correlation_id FROM notifications ORDER BY rowid`)
	if err != nil {
		return res, err
	}
	defer rows.Close()
	for rows.Next() {
		var n Notification
		if err := rows.Scan(&n.Ticket, &n.Channel, &n.CorrelationID); err != nil {
			return res, err
		}
		res.Notifications = append(res.Notifications, n)
	}
	if err := rows.Err(); err != nil {
		return res, err
	}
	res.Duplicates = int(duplicates.Load())
	for _, t := range tickets {
		printf("ticket %-5s done; see its flow with: accord trace %s\n", t.ID, res.Flows[t.ID])
	}
	return res, nil
}

var sampleTickets = []Ticket{
	{ID: "T-1", Subject: "Charged twice", Body: "My card shows two charges for one invoice."},
	{ID: "T-2", Subject: "App crashes on start", Body: "Since the update it shows an error and quits."},
	{ID: "T-3", Subject: "Locked out", Body: "I forgot my password."},
	{ID: "T-4", Subject: "Feature idea", Body: "Dark mode, please."},
}

func main() {
	flow.Main("triage", func(ctx context.Context, c *client.Client) error {
		dir, err := os.MkdirTemp("", "accord-triage-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		_, err = run(ctx, c, dir, sampleTickets, os.Stdout)
		return err
	})
}
