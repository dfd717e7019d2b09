package outbox_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"log"

	"github.com/accord-saga/accord/sdk/client"
	"github.com/accord-saga/accord/sdk/guard"
	"github.com/accord-saga/accord/sdk/outbox"
	"github.com/accord-saga/accord/sdk/subscriber"
)

// A participant publishes TicketCreated with the ticket's insert, and a
// relay beside it sends the event to Accord.
func Example() {
	ctx := context.Background()
	db, _ := sql.Open("sqlite", "file:tickets.db?_pragma=busy_timeout(5000)&_txlock=immediate")
	c, _ := client.New("http://127.0.0.1:7780")
	if err := outbox.Migrate(ctx, db, outbox.SQLite); err != nil {
		log.Fatal(err)
	}
	relay, _ := outbox.NewRelay(db, outbox.ClientPublisher(c), outbox.RelayOptions{Dialect: outbox.SQLite})
	go func() { _ = relay.Run(ctx) }()

	tx, _ := db.BeginTx(ctx, nil)
	defer func() { _ = tx.Rollback() }()
	if _, err := tx.ExecContext(ctx, `INSERT INTO tickets (id, subject) VALUES (?, ?)`, "T-1", "Charged twice"); err != nil {
		log.Fatal(err)
	}
	payload, _ := json.Marshal(map[string]string{"id": "T-1"})
	if _, err := outbox.Add(ctx, tx, "ticket-created", outbox.Message{Key: "T-1", Payload: payload}); err != nil {
		log.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		log.Fatal(err)
	}
	relay.Notify() // publish now rather than at the next interval
}

// A consumer sends each notification once, however often the bus delivers
// its event.
func ExampleInbox_Handler() {
	ctx := context.Background()
	db, _ := sql.Open("sqlite", "file:notifier.db?_pragma=busy_timeout(5000)&_txlock=immediate")
	c, _ := client.New("http://127.0.0.1:7780")
	g, _ := guard.New(guard.Options{Dialect: guard.SQLite})
	if err := g.Migrate(ctx, db); err != nil {
		log.Fatal(err)
	}
	inbox, _ := outbox.NewInbox(g)
	s := subscriber.New(c, "ticket-classified", "notifier", inbox.Handler(db,
		func(ctx context.Context, tx *sql.Tx, m *subscriber.Message) error {
			_, err := tx.ExecContext(ctx, `INSERT INTO notifications (message) VALUES (?)`, m.ID)
			return err
		}), subscriber.Options{Concurrency: 4})
	if err := s.Start(ctx); err != nil {
		log.Fatal(err)
	}
	defer func() { _ = s.Stop(ctx) }()
}
