package bus

import (
	"errors"
	"fmt"
)

// Errors the bus returns; the API maps each to a status code.
var (
	// ErrInvalid: the request is malformed; InvalidError names the field.
	ErrInvalid = errors.New("bus: invalid input")
	// ErrTopicNotFound and ErrGroupNotFound: no such topic or group.
	ErrTopicNotFound = errors.New("bus: topic not found")
	ErrGroupNotFound = errors.New("bus: consumer group not found")
	// ErrGroupExists: the group exists with another configuration.
	ErrGroupExists = errors.New("bus: consumer group exists with another configuration")
	// ErrReceiptLost: the receipt's claim is gone (acked, expired and
	// handed to someone else, or the message was swept).
	ErrReceiptLost = errors.New("bus: receipt no longer valid")
	// ErrStopped: the bus is shutting down.
	ErrStopped = errors.New("bus: stopped")
)

// InvalidError is ErrInvalid for one field.
type InvalidError struct {
	Field  string
	Reason string
}

func (e *InvalidError) Error() string { return fmt.Sprintf("bus: invalid %s: %s", e.Field, e.Reason) }

func (e *InvalidError) Unwrap() error { return ErrInvalid }

func invalid(field, reason string) error { return &InvalidError{Field: field, Reason: reason} }
