package saga

import "fmt"

// MaxJSONDepth bounds the nesting of the JSON a saga carries: its input and
// its steps' outputs. Every decoder on their way — the API's, the core's,
// the snapshot a saga is stored and recovered from, the task a worker
// receives — must accept whatever the API accepts, and the snapshot nests
// a value a few levels below its own top while a template may place it up
// to MaxNestingDepth deeper. encoding/json stops at 10,000 levels; 64 is
// far below that and far above what business data needs.
const MaxJSONDepth = 64

// DepthError says that a JSON value nests deeper than MaxJSONDepth. It is
// ErrBadInput.
type DepthError struct {
	What  string // "saga input", "step output"
	Limit int
}

func (e *DepthError) Error() string {
	return fmt.Sprintf("%s is nested deeper than %d levels", e.What, e.Limit)
}

// Is makes errors.Is(err, ErrBadInput) true.
func (e *DepthError) Is(target error) bool { return target == ErrBadInput }

// CheckDepth returns a *DepthError if raw nests arrays and objects deeper
// than MaxJSONDepth. It scans without decoding, stops at the first level
// too deep, and does not validate raw otherwise.
func CheckDepth(raw []byte, what string) error {
	depth := 0
	inString := false
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if inString {
			switch c {
			case '\\':
				i++
			case '"':
				inString = false
			}
			continue
		}
		switch c {
		case '"':
			inString = true
		case '[', '{':
			depth++
			if depth > MaxJSONDepth {
				return &DepthError{What: what, Limit: MaxJSONDepth}
			}
		case ']', '}':
			depth--
		}
	}
	return nil
}
