package engine

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/accord-saga/accord/internal/ident"
)

// crockford is the Crockford base32 alphabet: no I, L, O, U, so ids read
// aloud and type well.
const crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

// newSagaID returns a 26-character id that sorts by creation time (48 bits of
// Unix milliseconds) and is unique (80 random bits), in the ULID layout.
func newSagaID(now time.Time) string {
	var b [16]byte
	ms := uint64(now.UnixMilli())
	b[0] = byte(ms >> 40)
	b[1] = byte(ms >> 32)
	b[2] = byte(ms >> 24)
	b[3] = byte(ms >> 16)
	b[4] = byte(ms >> 8)
	b[5] = byte(ms)
	_, _ = rand.Read(b[6:]) // never fails on supported platforms
	hi := binary.BigEndian.Uint64(b[:8])
	lo := binary.BigEndian.Uint64(b[8:])
	var out [26]byte
	// 128 bits as 26 base32 digits, most significant first (the first
	// digit carries the top 3 bits).
	for i := 25; i >= 0; i-- {
		out[i] = crockford[lo&31]
		lo = lo>>5 | hi<<59
		hi >>= 5
	}
	return string(out[:])
}

// newSeed returns a random seed for a saga's jitter PRNG.
func newSeed() uint64 {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return binary.LittleEndian.Uint64(b[:])
}

// NewID returns a new time-ordered unique id in the form of saga ids (26
// characters of Crockford base32), for other parts of the server that name
// things (bus messages).
func NewID() string { return newSagaID(time.Now()) }

// checkText refuses a client-given name or id that is not UTF-8 or holds a
// control character (see ident.Check), so that it is bad input rather than
// a storage failure or a header no participant can be sent.
func checkText(what, s string) error {
	if err := ident.Check(s); err != nil {
		return fmt.Errorf("%w: %s %w", ErrInvalidInput, what, err)
	}
	return nil
}
