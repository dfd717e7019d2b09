package saga

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"time"
)

// StepKind says how a step takes part in the saga's all-or-nothing promise.
type StepKind string

const (
	// KindCompensatable steps can be undone by their compensation. They run
	// before the pivot. This is the default kind.
	KindCompensatable StepKind = "compensatable"
	// KindPivot marks the saga's point of no return: once the pivot has
	// started, the saga cannot be cancelled or timed out, and once it has
	// succeeded the saga only moves forward. At most one per definition; it
	// has no compensation.
	KindPivot StepKind = "pivot"
	// KindRetriable steps come after the pivot and are retried until they
	// succeed; they have no compensation.
	KindRetriable StepKind = "retriable"
)

// Definition is a validated saga definition. Only ParseDefinition makes
// usable ones: it fills every default in, so the fields below hold the exact
// behaviour the saga will have, and Canonical stores it. A Definition is
// immutable after ParseDefinition and safe to share between goroutines.
type Definition struct {
	// Name identifies the definition: [a-z0-9_.-], at most 128 bytes.
	Name string `json:"name"`
	// Version is an integer ≥ 1. A registered (name, version) never changes.
	Version int `json:"version"`
	// Description is free text for people, at most 1024 bytes.
	Description string `json:"description,omitempty"`
	// Timeout bounds the whole saga, measured from its start. When it
	// expires before the pivot has started the saga compensates; after, it
	// is recorded and ignored. Zero (the default) means no timeout.
	Timeout Duration `json:"timeout,omitzero"`
	// Steps in document order. Order matters twice: a step without an
	// after field depends on the step before it, and ready steps are
	// dispatched in this order.
	Steps []StepDef `json:"steps"`

	// Derived at parse time, read-only afterwards.
	index     map[string]int // step name → index
	deps      [][]int        // direct dependencies, by index
	ancestors []bitset       // transitive dependencies
	pivot     int            // index of the pivot, -1 if none
	templates []*template    // parsed Input of each step, nil when absent
	canonical []byte
	hash      string
}

// StepDef is one step of a definition.
type StepDef struct {
	// Name is unique in the definition: [a-z0-9_-], at most 128 bytes.
	Name string `json:"name"`
	// Kind defaults to compensatable.
	Kind StepKind `json:"kind"`
	// Action is what the step does.
	Action Target `json:"action"`
	// Compensation undoes Action. Required for compensatable steps, not
	// allowed on pivot and retriable steps (they are never compensated).
	Compensation *Target `json:"compensation,omitempty"`
	// After lists the steps that must succeed before this one starts. When
	// the field is absent from the document the step depends on the step
	// before it (sequential by default); after: [] means no dependency.
	// After parsing it is always explicit (never nil).
	After []string `json:"after"`
	// Input is the payload template; see docs/sagas.md. Absent (nil) means
	// the participant receives the saga's input unchanged.
	Input json.RawMessage `json:"input,omitzero"`
	// Retry governs retries of the action.
	Retry RetryPolicy `json:"retry"`
	// CompensationRetry governs retries of the compensation; zero when the
	// step has no compensation.
	CompensationRetry RetryPolicy `json:"compensation_retry,omitzero"`
	// AttemptTimeout bounds one attempt (action or compensation); when it
	// expires the attempt's outcome is unknown. Default 30s; zero means
	// no per-attempt timeout.
	AttemptTimeout Duration `json:"attempt_timeout"`
	// StepTimeout bounds the action over all its attempts, from the first
	// dispatch; when it expires the step has failed with an unknown outcome.
	// Default none. Not allowed on pivot and retriable steps.
	StepTimeout Duration `json:"step_timeout,omitzero"`
}

// Target says where a step's action or compensation runs: exactly one of
// Queue (pull workers long-poll the named task queue), HTTP (Accord POSTs
// to the URL) or Topic (Accord publishes the step's input as a message on
// the bus topic, in the same commit that schedules the step, and the step
// succeeds once that commit is durable).
type Target struct {
	Queue string `json:"queue,omitempty"`
	HTTP  string `json:"http,omitempty"`
	Topic string `json:"topic,omitempty"`
	// Name is the operation name sent to the participant, e.g. "charge".
	// Defaults to the step name for an action and to "compensate_" + the
	// step name for a compensation.
	Name string `json:"name"`
}

// RetryPolicy is an exponential backoff with jitter. The delay before
// attempt n+1 is InitialInterval × Multiplier^(n-1), capped at MaxInterval,
// then moved by a random ±Jitter fraction (drawn from the saga's seeded
// generator), capped at MaxInterval again and rounded to the millisecond.
type RetryPolicy struct {
	// InitialInterval: delay before the second attempt. Default 200ms for
	// actions, 1s for compensations. At least 1ms.
	InitialInterval Duration `json:"initial_interval"`
	// MaxInterval caps every delay. Default 30s for actions, 1m for
	// compensations. At least InitialInterval.
	MaxInterval Duration `json:"max_interval"`
	// Multiplier grows the delay at each attempt. Default 2; between 1 and 100.
	Multiplier float64 `json:"multiplier"`
	// MaxAttempts counts attempts, the first included. Default 5 for
	// actions, 30 for compensations. Zero — the only value allowed for
	// retriable steps, and their default — means no limit.
	MaxAttempts int `json:"max_attempts,omitempty"`
	// Jitter is the random fraction in [0, 1] applied to each delay.
	// Default 0.2 (±20%).
	Jitter float64 `json:"jitter"`
	// NonRetryableErrors lists error codes that end the step (or, for a
	// compensation, send the saga to needs_operator) at once instead of
	// being retried. Not allowed on retriable steps.
	NonRetryableErrors []string `json:"non_retryable_errors,omitempty"`
}

// Defaults filled in by ParseDefinition when a field is absent.
const (
	DefaultInitialInterval = Duration(200 * time.Millisecond)
	DefaultMaxInterval     = Duration(30 * time.Second)
	DefaultMultiplier      = 2.0
	DefaultMaxAttempts     = 5
	DefaultJitter          = 0.2
	DefaultAttemptTimeout  = Duration(30 * time.Second)

	// Compensations must eventually succeed; their default budget is long
	// (about 25 minutes of retrying) so that an ordinary outage of the
	// participant does not end in needs_operator.
	DefaultCompensationInitialInterval = Duration(time.Second)
	DefaultCompensationMaxInterval     = Duration(time.Minute)
	DefaultCompensationMaxAttempts     = 30
)

// Limits on definitions. Each exists so that one document cannot make the
// coordinator spend unbounded memory or time.
const (
	MaxDefinitionBytes = 256 << 10
	MaxSteps           = 1000
	MaxNameLength      = 128
	MaxNestingDepth    = 32
	maxDescription     = 1024
	maxURLLength       = 2048
	maxErrorCodes      = 100
	maxMaxAttempts     = 10000
	maxMultiplier      = 100
)

// Canonical returns the definition as compact JSON with every default
// filled in and fields in a fixed order. It is the form to store and hash:
// ParseDefinition(Canonical()) gives the same definition, and two documents
// that mean the same thing (JSON or YAML, defaults written or not) have the
// same Canonical. The caller may modify the returned slice.
func (d *Definition) Canonical() []byte {
	return append([]byte(nil), d.canonical...)
}

// Hash is the hex SHA-256 of Canonical.
func (d *Definition) Hash() string { return d.hash }

// Step returns the named step's definition.
func (d *Definition) Step(name string) (*StepDef, bool) {
	i, ok := d.index[name]
	if !ok {
		return nil, false
	}
	return &d.Steps[i], true
}

// Pivot returns the pivot step's name, or "" when there is none.
func (d *Definition) Pivot() string {
	if d.pivot < 0 {
		return ""
	}
	return d.Steps[d.pivot].Name
}

// seal computes the canonical form and hash. It runs last in
// ParseDefinition, once all fields are final.
func (d *Definition) seal() error {
	b, err := json.Marshal(d)
	if err != nil {
		return err
	}
	d.canonical = b
	sum := sha256.Sum256(b)
	d.hash = hex.EncodeToString(sum[:])
	return nil
}

// bitset is a fixed-size set of step indexes.
type bitset []uint64

func newBitset(n int) bitset    { return make(bitset, (n+63)/64) }
func (b bitset) set(i int)      { b[i/64] |= 1 << (uint(i) % 64) }
func (b bitset) has(i int) bool { return b[i/64]&(1<<(uint(i)%64)) != 0 }
func (b bitset) union(o bitset) {
	for i := range b {
		b[i] |= o[i]
	}
}
