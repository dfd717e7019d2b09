package saga

import (
	"errors"
	"fmt"
	"sort"
	"strings"
)

var (
	// ErrInvalidDefinition: a definition document was rejected. Returned as
	// *ValidationError, which lists every problem found.
	ErrInvalidDefinition = errors.New("saga: invalid definition")
	// ErrBadInput: Start or Step was given input that cannot apply to any
	// saga (malformed JSON, an unknown outcome, a timer id that names no
	// timer of this saga). Nothing changed.
	ErrBadInput = errors.New("saga: bad input")
	// ErrUnknownStep: the input names a step the definition does not have.
	// Always wrapped together with ErrBadInput.
	ErrUnknownStep = errors.New("saga: unknown step")
	// ErrTerminal: the saga has ended (completed, compensated, cancelled or
	// needs_operator) and the input would need it running.
	ErrTerminal = errors.New("saga: saga has ended")
	// ErrPastPivot: the saga's pivot step has started, so the saga can only
	// move forward and cannot be cancelled.
	ErrPastPivot = errors.New("saga: past the pivot, saga can only move forward")
	// ErrNotNeedsOperator: an operator retry was asked for a saga that is not
	// waiting for an operator.
	ErrNotNeedsOperator = errors.New("saga: saga does not need an operator")
	// ErrDefinitionMismatch: the definition given to Step or Replay is not
	// the one the saga started on (name, version or content hash differ), or
	// it was not produced by ParseDefinition.
	ErrDefinitionMismatch = errors.New("saga: definition does not match the saga")
	// ErrCorruptLog: Replay met an event sequence that Step cannot have
	// produced (an event before saga.started, an unknown event type, a step
	// transition out of order).
	ErrCorruptLog = errors.New("saga: corrupt saga log")
)

// Problem is one reason a definition was rejected. Path locates the field
// in the document, in the form steps[2].after[0]; it is empty for problems
// with the document as a whole.
type Problem struct {
	Path    string `json:"path"`
	Message string `json:"message"`
}

func (p Problem) String() string {
	if p.Path == "" {
		return p.Message
	}
	return p.Path + ": " + p.Message
}

// ValidationError lists every problem found in a definition, in document
// order. errors.Is(err, ErrInvalidDefinition) holds for it.
type ValidationError struct {
	Problems []Problem `json:"problems"`
}

// maxProblems bounds the problems kept for one document, so that a hostile
// document cannot make the error itself large.
const maxProblems = 100

func (e *ValidationError) Error() string {
	var b strings.Builder
	b.WriteString(ErrInvalidDefinition.Error())
	if len(e.Problems) > 1 {
		fmt.Fprintf(&b, ": %d problems", len(e.Problems))
	}
	for i, p := range e.Problems {
		if i == 0 {
			b.WriteString(": ")
		} else {
			b.WriteString("; ")
		}
		b.WriteString(p.String())
	}
	return b.String()
}

// Unwrap makes errors.Is(err, ErrInvalidDefinition) true.
func (e *ValidationError) Unwrap() error { return ErrInvalidDefinition }

// problems collects Problems up to maxProblems.
type problems struct {
	list    []Problem
	dropped int
}

func (ps *problems) add(path, format string, args ...any) {
	if len(ps.list) >= maxProblems {
		ps.dropped++
		return
	}
	ps.list = append(ps.list, Problem{Path: path, Message: fmt.Sprintf(format, args...)})
}

func (ps *problems) empty() bool { return len(ps.list) == 0 }

func (ps *problems) err() error {
	if len(ps.list) == 0 {
		return nil
	}
	list := ps.list
	// Checks run by concern (names, graph, kinds, templates), but people
	// read a document top to bottom: order problems by step.
	sort.SliceStable(list, func(i, j int) bool { return stepOfPath(list[i].Path) < stepOfPath(list[j].Path) })
	if ps.dropped > 0 {
		list = append(list, Problem{Message: fmt.Sprintf("and %d more problems", ps.dropped)})
	}
	return &ValidationError{Problems: list}
}

// stepOfPath returns the step index a path points into, -1 for paths
// outside steps[...].
func stepOfPath(path string) int {
	rest, ok := strings.CutPrefix(path, "steps[")
	if !ok {
		return -1
	}
	n := 0
	for i := 0; i < len(rest) && rest[i] >= '0' && rest[i] <= '9'; i++ {
		n = n*10 + int(rest[i]-'0')
	}
	return n
}
