package storage

import (
	"context"
	"time"
)

// The bus: topics, messages, consumer groups, deliveries and dead letters.
//
// A message lives in one partition of the store (the bus layer picks it from
// the message key) and is written by that partition's fenced Commit, with a
// position from the partition's message counter: gap-free and strictly
// increasing among the partition's messages (of every topic), from 1, and
// separate from the event log's positions.
//
// Every consumer group of a topic gets one delivery per message. Deliveries
// are created in the transaction that makes the message (or the group)
// exist, so no message is ever missed by a group that existed when it was
// committed:
//
//   - Commit inserts, for every message it publishes, one delivery for every
//     group of the message's topic that exists at that moment.
//   - GroupCreate inserts, in its own transaction, one delivery for every
//     stored message the group starts from (StartBeginning, StartTime;
//     expired messages included, the claim drops them) and none for the
//     rest (StartEnd). A publish commit running at the same
//     time is ordered entirely before or entirely after it.
//
// Per-key order: among the deliveries of one group, partition and message
// key (a non-empty key), only the one with the lowest position is claimable;
// the others are "blocked" until it is acked, dead-lettered, expired or
// swept. A nacked delivery keeps its place: later messages with its key wait
// for it. Messages without a key are not ordered and never blocked. Exactly
// one delivery of a key is unblocked at a time: when it goes, the one with
// the lowest position among the rest becomes claimable. A replayed dead
// letter (DeadLetterReplay) therefore waits behind the key's delivery that
// is unblocked when it is replayed, whatever their positions.
//
// A delivery is claimed with a token, like a task: it is invisible until
// the claim's visibility passes; its delivery count grows by one at each
// claim, in the claiming transaction, so a count survives a consumer that
// dies mid-message. DeliveryClaim moves to the group's dead letters every
// candidate whose count already equals MaxDeliveries (the next claim would
// exceed it) and drops every candidate whose message has expired (expiry at
// or before the database's now). A delivery unblocked by such a drop may be
// claimed by the same call.
type BusStore interface {
	// TopicPut creates a topic or replaces its configuration (an opaque
	// document of the bus layer); created reports which.
	TopicPut(ctx context.Context, t *Topic) (stored Topic, created bool, err error)
	// TopicGet returns a topic; ErrNotFound if absent.
	TopicGet(ctx context.Context, name string) (Topic, error)
	// TopicList lists topics by name.
	TopicList(ctx context.Context) ([]Topic, error)
	// TopicDelete deletes a topic with its messages, groups, deliveries and
	// dead letters; ErrNotFound if absent.
	TopicDelete(ctx context.Context, name string) error

	// GroupCreate creates a consumer group of an existing topic (ErrNotFound
	// if the topic is absent) and its deliveries, as described above.
	// Creating a group that exists with the same Config returns it with
	// created=false (its start is not applied again); with another Config it
	// fails with ErrGroupExists.
	GroupCreate(ctx context.Context, params *GroupCreateParams) (stored Group, created bool, err error)
	// GroupGet returns a group; ErrNotFound if absent.
	GroupGet(ctx context.Context, topic, name string) (Group, error)
	// GroupList lists a topic's groups by name ("" lists every topic's).
	GroupList(ctx context.Context, topic string) ([]Group, error)
	// GroupDelete deletes a group with its deliveries and dead letters;
	// ErrNotFound if absent.
	GroupDelete(ctx context.Context, topic, name string) error
	// GroupStats describes a group's backlog, one entry per partition that
	// has deliveries or dead letters, in partition order; ErrNotFound if the
	// group is absent.
	GroupStats(ctx context.Context, topic, name string) ([]GroupPartitionStats, error)
	// GroupBacklogs describes every group's backlog summed over its
	// partitions, one entry per group in (topic, name) order, in one
	// query whatever the number of groups.
	GroupBacklogs(ctx context.Context) ([]GroupBacklog, error)
	// GroupsDue lists, in (topic, name) order, the groups that have a
	// delivery a claim would take now: unblocked and visible at or before
	// the database's now (not yet claimed, nacked with a delay that has
	// passed, or claimed with a claim that has expired).
	GroupsDue(ctx context.Context) ([]GroupKey, error)

	// MessageRead returns a topic's messages in one partition from a
	// position on (inclusive), in position order.
	MessageRead(ctx context.Context, params *MessageReadParams) ([]Message, error)
	// MessageHead returns the last message position written in a partition
	// (0 if none), for every topic together.
	MessageHead(ctx context.Context, partition int) (int64, error)
	// MessagesByCorrelation returns up to limit messages with a correlation
	// id, of every topic, in publish order (database time, then partition
	// and position).
	MessagesByCorrelation(ctx context.Context, correlationID string, limit int) ([]Message, error)
	// MessageSweep applies a topic's retention and compaction to one
	// partition and returns how many messages it deleted. The deliveries of
	// deleted messages are deleted too (and the next delivery of their key
	// unblocked); their dead letters stay. The rules are judged together on
	// the messages stored when the call starts (with Limit, the lowest
	// positions go first), then the tombstone rule on what is left.
	MessageSweep(ctx context.Context, params *MessageSweepParams) (int, error)

	// DeliveryClaim claims up to Limit claimable deliveries of a group,
	// oldest visible first, as described above.
	DeliveryClaim(ctx context.Context, params *DeliveryClaimParams) (*DeliveryClaimResult, error)
	// DeliveryHeartbeat extends a claim; ErrTaskClaimLost if the delivery
	// is gone or the token is no longer current.
	DeliveryHeartbeat(ctx context.Context, ref DeliveryRef, visibility time.Duration) error
	// DeliveryAck deletes claimed deliveries and unblocks the next delivery
	// of each one's key. The result has one entry per ref, in order: nil or
	// ErrTaskClaimLost (gone, or claimed again by someone else). The acks
	// that succeed are applied even when others fail.
	DeliveryAck(ctx context.Context, refs []DeliveryRef) ([]error, error)
	// DeliveryNack gives a claimed delivery back: visible again after Delay,
	// keeping its place in its key's order, with History replacing the
	// stored history; or, with DeadLetter, moves it to the group's dead
	// letters with Reason (and History as the dead letter's history).
	// Either way the claim ends: its token stops working. ErrTaskClaimLost
	// as for DeliveryHeartbeat.
	DeliveryNack(ctx context.Context, params *DeliveryNackParams) error
	// DeliveryStalled returns up to limit deliveries (of every group) whose
	// message was published before olderThan and that are still
	// outstanding, oldest message first, with their messages.
	DeliveryStalled(ctx context.Context, olderThan time.Time, limit int) ([]Delivery, error)
	// DeliveriesOf returns the outstanding deliveries of one message, one
	// per group that has not acked it (without the message).
	DeliveriesOf(ctx context.Context, topic string, partition int, position int64) ([]Delivery, error)

	// DeadLetterList pages through a group's dead letters by id.
	DeadLetterList(ctx context.Context, params *DeadLetterListParams) ([]DeadLetter, error)
	// DeadLetterReplay gives dead letters back to their group as fresh
	// deliveries (delivery count 0, the dead letter's history, after any
	// delivery of their key already outstanding) and deletes them; ids nil
	// replays them all, ids of other groups are ignored. It returns
	// how many it replayed; a dead letter whose message has since been
	// deleted (retention, compaction) is left in place and not counted.
	DeadLetterReplay(ctx context.Context, topic, group string, ids []int64) (int, error)
	// DeadLetterPurge deletes dead letters; ids nil deletes them all. It
	// returns how many it deleted.
	DeadLetterPurge(ctx context.Context, topic, group string, ids []int64) (int, error)
}

// Topic is a bus topic. Config is the bus layer's document (retention, TTL,
// compaction, dedup window, max deliveries); the store keeps it as given.
type Topic struct {
	Name      string
	Config    []byte
	CreatedAt time.Time
	UpdatedAt time.Time
}

// GroupStart says where a new group starts reading its topic.
type GroupStart int

const (
	// StartEnd delivers only messages committed after the group.
	StartEnd GroupStart = iota
	// StartBeginning delivers every stored message as well.
	StartBeginning
	// StartTime delivers stored messages published at or after StartAt.
	StartTime
)

// GroupCreateParams creates a consumer group.
type GroupCreateParams struct {
	Topic   string
	Name    string
	Config  []byte // the bus layer's document (webhook, max deliveries, ...)
	Start   GroupStart
	StartAt time.Time // for StartTime
}

// Group is a consumer group of a topic.
type Group struct {
	Topic     string
	Name      string
	Config    []byte
	CreatedAt time.Time
}

// GroupPartitionStats is a group's backlog in one partition.
type GroupPartitionStats struct {
	Partition int
	// Pending counts outstanding deliveries: claimable, blocked behind
	// their key, delayed after a nack, or claimed.
	Pending  int
	InFlight int // claimed, claim not expired
	Blocked  int // waiting behind an earlier delivery of their key
	// Position is the group's committed position: every message of the
	// topic in the partition up to it has been acked, dead-lettered,
	// expired or swept (the lowest outstanding position minus one; the
	// partition's message head if nothing is outstanding).
	Position    int64
	OldestAge   time.Duration // age of the oldest outstanding message (0 if none)
	DeadLetters int
}

// GroupKey names a consumer group.
type GroupKey struct {
	Topic string
	Name  string
}

// GroupBacklog is a group's backlog over all partitions.
type GroupBacklog struct {
	Topic       string
	Name        string
	Pending     int           // outstanding deliveries, as in GroupPartitionStats
	OldestAge   time.Duration // age of the oldest outstanding message (0 if none)
	DeadLetters int
}

// MessageInput is a message to publish, in CommitParams.Publishes. Its
// partition is the commit's.
type MessageInput struct {
	Topic string // must exist (ErrInvalid otherwise)
	// Key orders the topic's messages: deliveries of one key are handed out
	// one at a time, in position order. "" means unordered.
	Key string
	// ID is the message's unique id (the bus layer's), returned to
	// consumers.
	ID            string
	CorrelationID string // "" if none
	Headers       []byte // a JSON object, or nil
	Payload       []byte
	// Tombstone marks a deletion of Key for compacted topics (Payload is
	// ignored).
	Tombstone bool
	// TTL, if > 0, makes the message expire at the commit's time + TTL:
	// from then on it is never delivered.
	TTL time.Duration
}

// Message is a stored message.
type Message struct {
	Topic         string
	Partition     int
	Position      int64
	Key           string
	ID            string
	CorrelationID string
	Headers       []byte
	Payload       []byte
	Tombstone     bool
	PublishedAt   time.Time
	ExpiresAt     time.Time // zero if it never expires
}

// MessageReadParams selects a topic's messages in a partition.
type MessageReadParams struct {
	Topic        string
	Partition    int
	FromPosition int64 // inclusive
	Limit        int   // must be > 0
}

// MessageSweepParams applies retention and compaction to one topic and
// partition. Zero fields disable their rule.
type MessageSweepParams struct {
	Topic     string
	Partition int
	// PublishedBefore deletes messages published before it (age retention).
	PublishedBefore time.Time
	// MaxBytes keeps the newest messages whose payloads sum to at most
	// MaxBytes (size retention, per partition).
	MaxBytes int64
	// Compact deletes every message that has a newer message with the same
	// non-empty key.
	Compact bool
	// TombstonesBefore, with Compact, deletes tombstones published before
	// it (once nothing older of their key remains).
	TombstonesBefore time.Time
	// Limit bounds the messages deleted by one call (0: no bound).
	Limit int
}

// DeliveryRef names a claimed delivery.
type DeliveryRef struct {
	Topic      string
	Group      string
	Partition  int
	Position   int64
	ClaimToken string
}

// Delivery is a message handed to a group.
type Delivery struct {
	Topic      string
	Group      string
	Partition  int
	Position   int64
	Key        string
	Deliveries int // claims so far, this one included (replays do not reset it)
	// DeliveredBefore is Deliveries when the delivery last came back from
	// the dead letters (0 if never): MaxDeliveries counts claims from here.
	DeliveredBefore int
	ClaimToken      string // "" if not claimed
	VisibleAt       time.Time
	Blocked         bool
	History         []byte // the bus layer's attempt history, as last stored by a nack
	Message         Message
}

// DeliveryClaimParams claims a group's deliveries.
type DeliveryClaimParams struct {
	Topic         string
	Group         string
	Limit         int           // must be > 0
	Visibility    time.Duration // must be > 0
	MaxDeliveries int           // must be > 0
}

// DeliveryClaimResult is what one claim did.
type DeliveryClaimResult struct {
	Deliveries   []Delivery
	Expired      int // deliveries dropped because their message expired
	DeadLettered int // deliveries moved to dead letters (MaxDeliveries)
}

// DeliveryNackParams gives a claim back or dead-letters it.
type DeliveryNackParams struct {
	Ref        DeliveryRef
	Delay      time.Duration
	History    []byte
	DeadLetter bool
	Reason     string // for DeadLetter
}

// DeadLetter is a delivery a group gave up on, with a copy of its message.
type DeadLetter struct {
	ID         int64 // increasing within the store
	Topic      string
	Group      string
	Partition  int
	Position   int64
	Deliveries int
	Reason     string
	History    []byte
	DeadAt     time.Time
	Message    Message
}

// DeadLetterListParams pages through dead letters.
type DeadLetterListParams struct {
	Topic   string
	Group   string
	AfterID int64
	Limit   int // must be > 0
}
