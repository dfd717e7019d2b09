package outbox

import (
	"cmp"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"time"

	"github.com/accord-saga/accord/sdk/guard"
)

// Dialect names the SQL database the outbox table lives in.
type Dialect = guard.Dialect

// The dialects.
const (
	Postgres = guard.Postgres
	SQLite   = guard.SQLite
)

// TableDefault is the outbox table's name when Options.Table is empty.
const TableDefault = "accord_outbox"

// Limits of a message, the bus's own.
const (
	MaxIDLength      = 256     // key, id, correlation id, idempotency key (bytes)
	MaxPayloadBytes  = 1 << 20 // payload
	MaxHeaders       = 64
	MaxHeaderValue   = 4096
	maxHeaderNameLen = 256
)

// Message is a domain event to publish.
type Message struct {
	// Key orders the topic's messages: the bus hands those of one key to
	// each group one at a time, in publish order. "" means unordered.
	Key string
	// ID is the message's id. Add generates one when it is empty.
	ID string
	// CorrelationID ties the messages of one flow together; empty: the
	// message starts a flow (the bus uses its id).
	CorrelationID string
	Headers       map[string]string
	// Payload is any JSON value; empty means null.
	Payload json.RawMessage
	// TTL overrides the topic's default lifetime (0: the default).
	TTL time.Duration
	// IdempotencyKey makes the publish idempotent. Add generates one when
	// it is empty; the relay publishes every attempt with it.
	IdempotencyKey string
}

// Options name an outbox table.
type Options struct {
	// Table is the table's name: lowercase letters, digits and '_', at
	// most guard.MaxTableLength bytes. Default TableDefault.
	Table string
	// Dialect is the database. Required for Migrate and relays; Add needs
	// none (its statement reads the same in both).
	Dialect Dialect
}

// Outbox is an outbox table. The package-level functions use the default
// table; New names another.
type Outbox struct {
	table   string
	dialect Dialect
	q       queries
}

// New validates opts and returns an Outbox.
func New(opts Options) (*Outbox, error) {
	table := cmp.Or(opts.Table, TableDefault)
	// The guard's rules for table names are the outbox's: reuse them.
	if _, err := guard.New(guard.Options{Table: table, Dialect: guard.SQLite}); err != nil {
		return nil, fmt.Errorf("outbox: %w", err)
	}
	if opts.Dialect != Postgres && opts.Dialect != SQLite {
		return nil, fmt.Errorf("outbox: dialect %v is neither Postgres nor SQLite", opts.Dialect)
	}
	return &Outbox{table: table, dialect: opts.Dialect, q: buildQueries(opts.Dialect, table)}, nil
}

// Table returns the table's name.
func (o *Outbox) Table() string { return o.table }

// Migrate creates the default outbox table in db if it does not exist.
func Migrate(ctx context.Context, db *sql.DB, dialect Dialect) error {
	o, err := New(Options{Dialect: dialect})
	if err != nil {
		return err
	}
	return o.Migrate(ctx, db)
}

// Add writes msg to the default outbox table inside tx, the transaction
// that makes the change msg announces. See Outbox.Add.
func Add(ctx context.Context, tx *sql.Tx, topic string, msg Message) (Message, error) {
	return add(ctx, tx, `"`+TableDefault+`"`, topic, msg)
}

// Migrate creates the table and its indexes if they do not exist. It is
// idempotent and safe to run from several processes at once.
func (o *Outbox) Migrate(ctx context.Context, db *sql.DB) error {
	if db == nil {
		return errors.New("outbox: migrate: nil database")
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("outbox: migrate: begin: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	if o.dialect == Postgres {
		if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, lockID("migrate "+o.table)); err != nil {
			return fmt.Errorf("outbox: migrate: lock: %w", err)
		}
	}
	for _, stmt := range o.q.migrate {
		if _, err := tx.ExecContext(ctx, stmt); err != nil {
			return fmt.Errorf("outbox: migrate table %s: %w", o.table, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("outbox: migrate: commit: %w", err)
	}
	return nil
}

// Add writes msg to the outbox inside tx, the participant's transaction:
// the message is published if and only if tx commits. It fills in the
// message's ID and IdempotencyKey when they are empty and returns the
// message as stored.
func (o *Outbox) Add(ctx context.Context, tx *sql.Tx, topic string, msg Message) (Message, error) {
	return add(ctx, tx, `"`+o.table+`"`, topic, msg)
}

func add(ctx context.Context, tx *sql.Tx, table, topic string, msg Message) (Message, error) {
	if tx == nil {
		return Message{}, errors.New("outbox: add: nil transaction")
	}
	if topic == "" || len(topic) > 128 {
		return Message{}, fmt.Errorf("outbox: add: topic must be 1..128 bytes")
	}
	if msg.ID == "" {
		msg.ID = newID()
	}
	if msg.IdempotencyKey == "" {
		msg.IdempotencyKey = "outbox-" + newID()
	}
	if err := check(msg); err != nil {
		return Message{}, err
	}
	var headers []byte
	if len(msg.Headers) > 0 {
		headers, _ = json.Marshal(msg.Headers) // strings: cannot fail; sorted, so stable
	}
	payload := []byte(msg.Payload)
	if len(payload) == 0 {
		payload = []byte("null")
	}
	// $n placeholders read the same in PostgreSQL and in SQLite (as named
	// parameters bound by position), so Add needs no dialect.
	_, err := tx.ExecContext(ctx, `INSERT INTO `+table+` (topic, msg_key, msg_id, correlation_id, idempotency_key, headers, payload, ttl_ms)
	VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
		topic, msg.Key, msg.ID, msg.CorrelationID, msg.IdempotencyKey, headers, payload, msg.TTL.Milliseconds())
	if err != nil {
		return Message{}, fmt.Errorf("outbox: add: %w", err)
	}
	return msg, nil
}

func check(m Message) error {
	for _, s := range []struct{ f, v string }{{"key", m.Key}, {"id", m.ID}, {"correlation id", m.CorrelationID}, {"idempotency key", m.IdempotencyKey}} {
		if len(s.v) > MaxIDLength {
			return fmt.Errorf("outbox: %s longer than %d bytes", s.f, MaxIDLength)
		}
	}
	if len(m.Payload) > 0 && !json.Valid(m.Payload) {
		return errors.New("outbox: payload is not valid JSON")
	}
	if len(m.Payload) > MaxPayloadBytes {
		return fmt.Errorf("outbox: payload larger than %d bytes", MaxPayloadBytes)
	}
	if len(m.Headers) > MaxHeaders {
		return fmt.Errorf("outbox: more than %d headers", MaxHeaders)
	}
	for k, v := range m.Headers {
		if k == "" || len(k) > maxHeaderNameLen || len(v) > MaxHeaderValue {
			return fmt.Errorf("outbox: header names must be 1..%d bytes and values at most %d", maxHeaderNameLen, MaxHeaderValue)
		}
	}
	if m.TTL < 0 {
		return errors.New("outbox: negative TTL")
	}
	return nil
}

// newID returns 128 random bits in hex.
func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// lockID is an advisory lock key for the table.
func lockID(what string) int64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte("accord/sdk/outbox " + what))
	return int64(h.Sum64())
}
