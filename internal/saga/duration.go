package saga

import (
	"encoding/json"
	"fmt"
	"time"
)

// Duration is a time.Duration that reads and writes itself in JSON as a Go
// duration string ("1.5s", "2m", "250ms"), the form people write in
// definitions. A number is not accepted: "30" is ambiguous between seconds
// and nanoseconds.
type Duration time.Duration

// maxDuration bounds every duration in a definition. A year is far beyond
// any sensible timeout or backoff, and keeps now+duration far from overflow.
const maxDuration = Duration(365 * 24 * time.Hour)

func (d Duration) String() string { return time.Duration(d).String() }

// MarshalJSON writes the duration as a string such as "1m30s".
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// UnmarshalJSON reads a Go duration string. Range checks (negative, too
// large) belong to definition validation, not to this type.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("saga: duration must be a string such as \"1.5s\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("saga: %w", err)
	}
	*d = Duration(v)
	return nil
}
