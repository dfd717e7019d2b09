// Package outbox publishes a participant's domain events to Accord's bus
// exactly when its own transaction commits: the transactional outbox, its
// relay, and the inbox that makes a redelivered event take effect once.
//
// A service that changes its data and then publishes an event can lose the
// event (it crashes between the two) or publish one for a change that was
// rolled back. With an outbox it writes the event into a table of its own
// database, in the same transaction as the change:
//
//	tx, _ := db.BeginTx(ctx, nil)
//	// ... the change ...
//	_, err := outbox.Add(ctx, tx, "tickets", outbox.Message{Key: id, Payload: doc})
//	// ... tx.Commit()
//
// A Relay, running beside the service, reads the unsent rows in order,
// publishes them with the idempotency key Add gave each one, and marks them
// sent. A relay that dies after publishing and before marking publishes
// again; the bus stores the message once (within the topic's dedup window,
// default 1h). Sent rows are deleted after RelayOptions.Retention.
//
// # Databases
//
// PostgreSQL and SQLite, through any database/sql driver (the dialects are
// sdk/guard's). Several relays may serve one table: on PostgreSQL they
// share the work, each locking the rows it publishes (FOR UPDATE SKIP
// LOCKED) and leaving alone a key whose earlier event another relay holds;
// on SQLite, whose single writer would stall the service while a relay
// publishes, a relay reads without locking, so two relays may both publish
// a row — which the bus deduplicates.
//
// # Order
//
// Events of one key reach the bus in the order of their rows (the order of
// their inserts). Write the event after the change that locks the
// aggregate it is about, so that the rows of one key are inserted in
// commit order.
//
// # Inbox
//
// The bus delivers at least once. Inbox runs a consumer's effect inside
// its own transaction at most once per (topic, message id, group), with
// sdk/guard's record: a redelivered message finds the record and does
// nothing. Inbox.Handler makes a sdk/subscriber handler of it:
//
//	s := subscriber.New(c, "tickets", "notifier", inbox.Handler(db,
//		func(ctx context.Context, tx *sql.Tx, m *subscriber.Message) error {
//			return notify(ctx, tx, m) // its writes go through tx
//		}), subscriber.Options{})
package outbox
