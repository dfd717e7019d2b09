package storage

import (
	"errors"
	"fmt"
)

var (
	// ErrVersionConflict: a stream append's expected version was not the
	// stream's version. Returned as *VersionConflictError.
	ErrVersionConflict = errors.New("storage: version conflict")
	// ErrFenced: the commit's epoch is not the partition's current epoch, or
	// the lease has expired. Nothing was written.
	ErrFenced = errors.New("storage: fenced: lease lost or epoch stale")
	// ErrLeaseHeld: another owner holds an unexpired lease on the partition.
	ErrLeaseHeld = errors.New("storage: lease held by another owner")
	// ErrIdempotencyKeyExists: a commit tried to store an idempotency key
	// that is already stored and unexpired. Returned as
	// *IdempotencyKeyExistsError. Nothing was written.
	ErrIdempotencyKeyExists = errors.New("storage: idempotency key exists")
	// ErrNotFound: the thing asked for does not exist.
	ErrNotFound = errors.New("storage: not found")
	// ErrDefinitionDeleted: a commit starts a saga on a definition version
	// that is absent or deleted.
	ErrDefinitionDeleted = errors.New("storage: definition version deleted")
	// ErrDefinitionInUse: a definition version is not deleted while
	// unfinished sagas run on it (see DefinitionInUseError).
	ErrDefinitionInUse = errors.New("storage: definition version in use")
	// ErrWrongPartition: a stream was appended to in a partition other than
	// the one it was created in.
	ErrWrongPartition = errors.New("storage: stream belongs to another partition")
	// ErrInvalid: the params are not valid (a programmer error or bad client
	// input passed through); nothing was written.
	ErrInvalid = errors.New("storage: invalid params")
	// ErrNotAStore: the location does not hold an Accord store and is not
	// empty, so it was left untouched.
	ErrNotAStore = errors.New("storage: not an accord store")
	// ErrSchemaTooNew: the store was written by a newer version of Accord.
	ErrSchemaTooNew = errors.New("storage: store schema is newer than this binary")
	// ErrTaskClaimLost: the task is gone or its claim token no longer
	// matches (the claim expired and someone else took it).
	ErrTaskClaimLost = errors.New("storage: task claim lost")
	// ErrGroupExists: a consumer group of that name exists with another
	// configuration.
	ErrGroupExists = errors.New("storage: consumer group exists with another configuration")
)

// VersionConflictError reports a failed expected-version check.
type VersionConflictError struct {
	Stream   string
	Expected int64
	Actual   int64
}

func (e *VersionConflictError) Error() string {
	return fmt.Sprintf("storage: version conflict on stream %q: expected version %d, actual %d", e.Stream, e.Expected, e.Actual)
}

func (e *VersionConflictError) Unwrap() error { return ErrVersionConflict }

// IdempotencyKeyExistsError reports a key that is already stored; Existing
// is what was stored with it first.
type IdempotencyKeyExistsError struct {
	Existing IdempotencyKey
}

func (e *IdempotencyKeyExistsError) Error() string {
	return fmt.Sprintf("storage: idempotency key %q in scope %q exists", e.Existing.Key, e.Existing.Scope)
}

func (e *IdempotencyKeyExistsError) Unwrap() error { return ErrIdempotencyKeyExists }

// SchemaTooNewError reports a store written by a newer binary.
type SchemaTooNewError struct {
	StoreVersion, BinaryVersion int
}

func (e *SchemaTooNewError) Error() string {
	return fmt.Sprintf("storage: store schema version %d is newer than this binary's %d; upgrade accord", e.StoreVersion, e.BinaryVersion)
}

func (e *SchemaTooNewError) Unwrap() error { return ErrSchemaTooNew }

// DefinitionInUseError refuses to delete a definition version that
// unfinished sagas run on; Sagas counts them.
type DefinitionInUseError struct {
	Name    string
	Version int
	Sagas   int
}

func (e *DefinitionInUseError) Error() string {
	return fmt.Sprintf("storage: definition %s version %d is used by %d unfinished sagas", e.Name, e.Version, e.Sagas)
}

func (e *DefinitionInUseError) Unwrap() error { return ErrDefinitionInUse }
