package storage

import (
	"context"
	"errors"
	"hash/fnv"
	"time"
)

// Stream version sentinels for StreamAppend.ExpectedVersion.
const (
	// AnyVersion skips the version check.
	AnyVersion int64 = -1
	// NoStream requires that the stream does not exist yet.
	NoStream int64 = 0
)

// DefaultPartitions is the partition count of a new store when none is given.
const DefaultPartitions = 64

// MaxPartitions bounds the partition count: every node holds a loop per owned
// partition, and more than this buys nothing on the machines Accord targets.
const MaxPartitions = 4096

// PartitionFor maps a key (a saga id, a message key, a stream name) to one of
// n partitions. The mapping is part of the on-disk format: it never changes.
func PartitionFor(key string, n int) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(key))
	return int(h.Sum32() % uint32(n))
}

// Driver is a durable backend. See the package documentation for the
// contract every implementation keeps.
type Driver interface {
	// Info describes the open store.
	Info() Info
	// Now is the database's clock. Lease expiry, task visibility and timer
	// due times are all judged by it.
	Now(ctx context.Context) (time.Time, error)
	// Close releases the store. It is safe to call twice.
	Close() error

	// Commit writes, in one transaction, everything in params: stream
	// appends (with their partition-log positions), idempotency keys, task
	// and timer inserts and deletes, consumer positions and saga records.
	// It fails with ErrFenced unless params.Epoch is the partition's current,
	// unexpired lease epoch; with *VersionConflictError when an expected
	// version does not match; with *IdempotencyKeyExistsError when a key is
	// already stored and unexpired. On any error nothing is written.
	//
	// The checks run in this order, so that the error a caller sees does
	// not depend on the backend: params validation (ErrInvalid), fencing
	// (ErrFenced), idempotency keys (*IdempotencyKeyExistsError — a
	// retried commit reports its key even though its expected versions no
	// longer match), then the appends (ErrWrongPartition,
	// *VersionConflictError) and the rest. Deletes of tasks and timers are
	// applied before inserts, so one commit may replace a row by deleting
	// and inserting its id; a task or timer id that exists after the
	// deletes fails the commit with ErrInvalid.
	Commit(ctx context.Context, params *CommitParams) (*CommitResult, error)

	// StreamRead returns a stream's events from a version on, in order; no
	// events and no error for a stream that has none.
	StreamRead(ctx context.Context, params *StreamReadParams) ([]Event, error)
	// StreamInfo returns a stream's partition and version, ErrNotFound if it
	// has no events.
	StreamInfo(ctx context.Context, stream string) (StreamInfo, error)
	// PartitionRead returns a partition's events from a position on, in
	// position order.
	PartitionRead(ctx context.Context, params *PartitionReadParams) ([]Event, error)
	// PartitionHead returns the last position written in a partition (0 if
	// none).
	PartitionHead(ctx context.Context, partition int) (int64, error)

	// IdempotencyKeyGet returns a stored, unexpired key; ErrNotFound
	// otherwise.
	IdempotencyKeyGet(ctx context.Context, scope, key string) (IdempotencyKey, error)
	// IdempotencyKeyDeleteExpired deletes up to limit expired keys and
	// returns how many it deleted.
	IdempotencyKeyDeleteExpired(ctx context.Context, limit int) (int, error)

	// TaskClaim claims up to params.Limit visible tasks of a queue, oldest
	// first: each gets a fresh claim token, its delivery count grows by one
	// and it stays invisible for params.Visibility. Concurrent claimers
	// never receive the same task while its claim is valid.
	TaskClaim(ctx context.Context, params *TaskClaimParams) ([]Task, error)
	// TaskHeartbeat extends a claim; ErrTaskClaimLost if the task is gone or
	// the token is no longer current.
	TaskHeartbeat(ctx context.Context, params *TaskHeartbeatParams) (Task, error)
	// TaskRelease gives a claimed task back, visible again after
	// params.Delay; ErrTaskClaimLost as for TaskHeartbeat.
	TaskRelease(ctx context.Context, params *TaskReleaseParams) error
	// TaskGet returns one task; ErrNotFound if it does not exist.
	TaskGet(ctx context.Context, id string) (Task, error)
	// TaskQueueStats returns depth, in-flight count and oldest visible age
	// per queue that has tasks.
	TaskQueueStats(ctx context.Context) ([]QueueStats, error)

	// TimerDue returns up to params.Limit timers of a partition whose fire
	// time is at or before the database's now, earliest first.
	TimerDue(ctx context.Context, params *TimerDueParams) ([]Timer, error)
	// TimerList returns up to limit timers of a partition, earliest first,
	// due or not (for recovery and for the reconciler).
	TimerList(ctx context.Context, params *TimerListParams) ([]Timer, error)

	// ConsumerPositionGet returns a consumer's committed position in a
	// partition (0 if none).
	ConsumerPositionGet(ctx context.Context, consumer string, partition int) (int64, error)

	// LeaseAcquire takes a partition's lease for owner if it is free,
	// expired, or already owner's; the epoch grows by one. ErrLeaseHeld if
	// another owner holds it unexpired.
	LeaseAcquire(ctx context.Context, params *LeaseAcquireParams) (Lease, error)
	// LeaseRenew extends a lease that owner holds at epoch; ErrFenced if the
	// lease expired or was taken over.
	LeaseRenew(ctx context.Context, params *LeaseRenewParams) (Lease, error)
	// LeaseRelease ends a lease early so another owner may take it at once;
	// ErrFenced if owner no longer holds it at epoch. The released lease
	// reads back as expired, and its epoch stays until the next acquisition.
	LeaseRelease(ctx context.Context, params *LeaseReleaseParams) error
	// LeaseList returns every partition's lease, in partition order.
	LeaseList(ctx context.Context) ([]Lease, error)

	// DefinitionPut registers a definition version. Re-registering identical
	// content (same hash) returns the stored record and created=false;
	// different content under an existing name and version is
	// ErrDefinitionConflict.
	DefinitionPut(ctx context.Context, def *Definition) (stored Definition, created bool, err error)
	// DefinitionPut of a deleted version revives it (created=true) when the
	// content is identical, and is ErrDefinitionConflict otherwise: a
	// (name, version) never stands for two definitions.
	//
	// DefinitionGet returns a definition version, disabled or not; version
	// 0 means the latest enabled version. ErrNotFound if absent or deleted.
	DefinitionGet(ctx context.Context, name string, version int) (Definition, error)
	// DefinitionList lists definitions ordered by name, then version;
	// deleted versions are left out.
	DefinitionList(ctx context.Context, params *DefinitionListParams) ([]Definition, error)
	// DefinitionSetDisabled disables a version (no saga may start on it,
	// and it is never the latest) or enables it again, and returns it.
	// ErrNotFound if absent or deleted. Sagas running on it go on.
	DefinitionSetDisabled(ctx context.Context, params *DefinitionSetDisabledParams) (Definition, error)
	// DefinitionDelete deletes a version that no unfinished saga runs on
	// (one not terminal, or in one of params.InUseStatuses);
	// *DefinitionInUseError (counting them) otherwise, ErrNotFound if absent
	// or deleted. A Commit that starts a saga on the version and a delete
	// never both succeed (see CommitParams.Definitions).
	DefinitionDelete(ctx context.Context, params *DefinitionDeleteParams) error

	// SagaGet returns a saga's record; ErrNotFound if absent.
	SagaGet(ctx context.Context, id string) (Saga, error)
	// SagaList lists sagas newest first (created_at, then id, descending),
	// filtered by params.
	SagaList(ctx context.Context, params *SagaListParams) ([]Saga, error)
	// SagaDeleteEnded deletes up to params.Limit sagas that ended before
	// params.EndedBefore, with their streams' events, and returns how many.
	SagaDeleteEnded(ctx context.Context, params *SagaDeleteEndedParams) (int, error)

	// BusStore is the event bus's part of the store (bus.go).
	BusStore
}

// Info describes an open store.
type Info struct {
	Backend       string // "sqlite" or "postgres"
	Partitions    int    // fixed at creation
	SchemaVersion int
	// Exclusive says one process alone has the store open (an embedded
	// store behind a lock): no other node can take a lease while it runs,
	// so a lease of another owner found at start is a dead process's.
	Exclusive bool
}

// StreamInfo is a stream's partition and current version.
type StreamInfo struct {
	Stream    string
	Partition int
	Version   int64
}

// EventInput is an event to append.
type EventInput struct {
	Type     string
	Data     []byte
	Metadata []byte
}

// Event is an appended event.
type Event struct {
	Partition  int
	Position   int64 // gap-free and strictly increasing inside Partition, from 1
	Stream     string
	Version    int64 // the event's place in its stream, from 1
	Type       string
	Data       []byte
	Metadata   []byte
	RecordedAt time.Time // database time of the commit
}

// StreamAppend appends events to one stream.
type StreamAppend struct {
	Stream string
	// ExpectedVersion is the stream's version before this append: NoStream
	// (0) for a new stream, AnyVersion to skip the check.
	ExpectedVersion int64
	Events          []EventInput
}

// IdempotencyKeyInsert stores a key with the result it stands for.
type IdempotencyKeyInsert struct {
	Scope  string
	Key    string
	Result []byte
	TTL    time.Duration // from the database's now; must be > 0
}

// IdempotencyKey is a stored key.
type IdempotencyKey struct {
	Scope     string
	Key       string
	Partition int
	Result    []byte
	CreatedAt time.Time
	ExpiresAt time.Time
}

// TaskInsert creates a task in the commit's partition.
type TaskInsert struct {
	ID      string // unique across the store (ErrInvalid if it exists)
	Queue   string
	Payload []byte
	// Delay before the task becomes visible (0: at once).
	Delay time.Duration
	// ClaimToken, when set, inserts the task already claimed with that
	// token for ClaimFor (delivery count 1): the committer dispatches it
	// itself, and it becomes visible to others only if that claim expires.
	ClaimToken string
	ClaimFor   time.Duration
}

// Task is a unit of work waiting in, or claimed from, a queue.
type Task struct {
	ID         string
	Partition  int
	Queue      string
	Payload    []byte
	Deliveries int    // how many times it has been claimed
	ClaimToken string // current claim token ("" if not claimed: never, or released)
	VisibleAt  time.Time
	CreatedAt  time.Time
}

// TimerInsert creates a timer in the commit's partition.
type TimerInsert struct {
	ID      string        // unique across the store (ErrInvalid if it exists)
	Delay   time.Duration // fire at the database's now + Delay
	Payload []byte
}

// Timer is a durable timer.
type Timer struct {
	ID        string
	Partition int
	FireAt    time.Time
	Payload   []byte
}

// ConsumerPosition is a consumer's committed position in a partition.
type ConsumerPosition struct {
	Consumer  string
	Partition int
	Position  int64
}

// Saga is the queryable record of a saga, kept beside its event stream and
// written in the same commits. State is the engine's snapshot of the saga,
// so that recovery need not replay whole streams.
type Saga struct {
	ID                string
	Partition         int
	Stream            string
	Definition        string
	DefinitionVersion int
	Status            string
	Terminal          bool
	IdempotencyKey    string
	State             []byte
	CreatedAt         time.Time
	UpdatedAt         time.Time
	EndedAt           time.Time // zero while not terminal
}

// CommitParams is one atomic write for one partition.
type CommitParams struct {
	Partition int
	Epoch     int64

	Appends         []StreamAppend
	IdempotencyKeys []IdempotencyKeyInsert
	TaskInserts     []TaskInsert
	TaskDeletes     []string // ids; a missing id is not an error
	TimerInserts    []TimerInsert
	TimerDeletes    []string // ids; a missing id is not an error
	// ConsumerPositions may name any partition (the partition read from,
	// not the one written to).
	ConsumerPositions []ConsumerPosition
	// SagaUpserts insert or replace saga records; CreatedAt is the commit
	// time of the first insert and is kept after it, UpdatedAt is set to
	// the commit's time, and EndedAt to the commit's time when Terminal
	// first becomes true (the time fields given are ignored).
	SagaUpserts []Saga
	// Definitions are the definition versions the sagas this commit starts
	// run on. The commit fails with ErrDefinitionDeleted if one is absent
	// or deleted; DefinitionDelete is serialized with the commit, so a
	// delete either sees the started sagas or makes the commit fail.
	Definitions []DefinitionRef
	// Publishes are bus messages written to this partition, each with a
	// delivery for every group of its topic (see BusStore). Their topics
	// must exist (ErrInvalid otherwise).
	Publishes []MessageInput
}

// CommitResult reports what a commit wrote.
type CommitResult struct {
	Events   []Event   // in the order given, with positions and versions
	Messages []Message // the Publishes, in the order given, with positions
	Now      time.Time // database time of the commit
}

// StreamReadParams selects events of a stream.
type StreamReadParams struct {
	Stream      string
	FromVersion int64 // inclusive; 0 or 1 reads from the start
	Limit       int   // 0: no limit
}

// PartitionReadParams selects events of a partition.
type PartitionReadParams struct {
	Partition    int
	FromPosition int64 // inclusive
	Limit        int   // must be > 0
}

// TaskClaimParams selects tasks to claim.
type TaskClaimParams struct {
	Queue      string
	Limit      int           // must be > 0
	Visibility time.Duration // must be > 0
}

// TaskHeartbeatParams extends a claim.
type TaskHeartbeatParams struct {
	ID         string
	ClaimToken string
	Visibility time.Duration
}

// TaskReleaseParams gives a claim back.
type TaskReleaseParams struct {
	ID         string
	ClaimToken string
	Delay      time.Duration
}

// QueueStats describes a task queue.
type QueueStats struct {
	Queue     string
	Visible   int           // tasks ready to be claimed
	InFlight  int           // tasks claimed and not yet visible again
	Delayed   int           // tasks not claimed (never, or released) whose delay has not passed
	OldestAge time.Duration // age of the oldest visible task (0 if none)
}

// TimerDueParams selects due timers.
type TimerDueParams struct {
	Partition int
	Limit     int // must be > 0
}

// TimerListParams lists timers, ordered by fire time, then id.
type TimerListParams struct {
	Partition int
	// Cursor: the (FireAt, ID) of the last timer of the previous page,
	// exclusive. AfterID alone cannot page, as ids are ordered only among
	// timers with the same fire time; with both zero the list starts at the
	// beginning.
	AfterFireAt time.Time
	AfterID     string
	Limit       int // must be > 0
}

// LeaseAcquireParams asks for a partition's lease.
type LeaseAcquireParams struct {
	Partition int
	Owner     string
	TTL       time.Duration
}

// LeaseRenewParams extends a lease.
type LeaseRenewParams struct {
	Partition int
	Owner     string
	Epoch     int64
	TTL       time.Duration
}

// LeaseReleaseParams ends a lease.
type LeaseReleaseParams struct {
	Partition int
	Owner     string
	Epoch     int64
}

// Lease is a partition's lease. Owner is "" if it was never taken.
type Lease struct {
	Partition int
	Owner     string
	Epoch     int64
	ExpiresAt time.Time
}

// Definition is a registered saga definition version.
type Definition struct {
	Name      string
	Version   int
	Content   []byte // canonical JSON
	Hash      string // of Content
	CreatedAt time.Time
	// Disabled: no saga may start on this version, and it is never the
	// latest. DefinitionPut ignores it (a new version is enabled).
	Disabled bool
}

// DefinitionRef names a definition version.
type DefinitionRef struct {
	Name    string
	Version int
}

// DefinitionSetDisabledParams disables or enables a definition version.
type DefinitionSetDisabledParams struct {
	Name     string
	Version  int // must be > 0
	Disabled bool
}

// DefinitionDeleteParams deletes a definition version.
type DefinitionDeleteParams struct {
	Name    string
	Version int // must be > 0
	// InUseStatuses are terminal statuses whose sagas still count as using
	// the version, besides every saga that is not terminal: the engine
	// names needs_operator, from which an operator can resume a saga.
	InUseStatuses []string
}

// DefinitionListParams pages through definitions.
type DefinitionListParams struct {
	Name         string // only this name, if set
	AfterName    string // cursor, exclusive together with AfterVersion
	AfterVersion int
	Limit        int // must be > 0
}

// SagaListParams filters and pages saga records.
type SagaListParams struct {
	Statuses      []string // any of these; empty: all
	Definition    string
	Partition     int // only with ByPartition
	ByPartition   bool
	NonTerminal   bool      // only sagas that have not ended
	CreatedAfter  time.Time // inclusive; zero: unbounded
	CreatedBefore time.Time // exclusive; zero: unbounded
	// Cursor: the (CreatedAt, ID) of the last record of the previous page.
	AfterCreatedAt time.Time
	AfterID        string
	Limit          int // must be > 0
}

// SagaDeleteEndedParams selects ended sagas for retention.
type SagaDeleteEndedParams struct {
	EndedBefore time.Time
	Limit       int // must be > 0
}

// ErrDefinitionConflict: a definition name and version is registered with
// different content.
var ErrDefinitionConflict = errors.New("storage: definition version exists with different content")
