package outbox

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/accord-saga/accord/sdk/guard"
	"github.com/accord-saga/accord/sdk/subscriber"
)

// Inbox makes a consumer's effect happen once per message and group, with
// sdk/guard's record in the consumer's own database: the record and the
// effect commit together, so a redelivered message finds the record and
// does nothing. Run the guard's Migrate once before use.
type Inbox struct {
	g *guard.Guard
}

// NewInbox returns an inbox that keeps its records with g.
func NewInbox(g *guard.Guard) (*Inbox, error) {
	if g == nil {
		return nil, errors.New("outbox: inbox: nil guard")
	}
	return &Inbox{g: g}, nil
}

// Do runs fn inside tx unless the group already handled the message (the
// topic's message with messageID): it reports whether fn ran. The caller
// begins tx, and commits it when Do returns no error; when fn fails Do
// records nothing and returns fn's error, and the caller rolls back so
// that the bus redelivers. Database errors that a retry may cure wrap
// guard.ErrBusy.
func (in *Inbox) Do(ctx context.Context, tx *sql.Tx, topic, group, messageID string, fn func() error) (ran bool, err error) {
	if topic == "" || group == "" || messageID == "" {
		return false, errors.New("outbox: inbox: topic, group and message id are required")
	}
	if fn == nil {
		return false, errors.New("outbox: inbox: nil function")
	}
	k := InboxKey(topic, group, messageID)
	_, ran, err = in.g.Action(ctx, tx, k, func() ([]byte, error) { return nil, fn() })
	if err != nil {
		return false, err
	}
	return ran, nil
}

// InboxKey is the guard record of a message handled by a group: the saga
// id "bus/<topic>/<message id>" (or "bus/sha256:<hash of both>" when that
// would exceed guard.MaxSagaIDLength) and the group as the step.
func InboxKey(topic, group, messageID string) guard.Key {
	id := "bus/" + topic + "/" + messageID
	if len(id) > guard.MaxSagaIDLength {
		sum := sha256.Sum256([]byte(topic + "\x00" + messageID))
		id = "bus/sha256:" + hex.EncodeToString(sum[:])
	}
	return guard.Key{SagaID: id, Step: group}
}

// Handler returns a subscriber handler that gives each message of its
// group one effect: it begins a transaction on db, runs fn in it through
// Do, and commits. A message whose effect already committed (a
// redelivery) is acked without running fn. When fn fails the transaction
// is rolled back and fn's error returned, so that subscriber.Permanent
// still dead-letters.
func (in *Inbox) Handler(db *sql.DB, fn func(ctx context.Context, tx *sql.Tx, m *subscriber.Message) error) subscriber.Handler {
	return func(ctx context.Context, m *subscriber.Message) error {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return fmt.Errorf("outbox: inbox: begin: %w", err)
		}
		if _, err := in.Do(ctx, tx, m.Topic, m.Group, m.ID, func() error { return fn(ctx, tx, m) }); err != nil {
			_ = tx.Rollback()
			return err
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("outbox: inbox: commit: %w", err)
		}
		return nil
	}
}
