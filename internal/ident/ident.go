// Package ident says what text a client may use as an id or a name: saga
// ids, message ids, keys, correlation ids, idempotency keys, queues,
// topics, groups, definitions. Every layer that takes such text from
// outside (the HTTP API, the engine, the bus, the saga core, storage) asks
// this one package, so that they cannot disagree.
//
// Ids and names travel in HTTP headers (to push participants and
// webhooks), in log lines and in PostgreSQL text columns: bytes that are
// not UTF-8, and control characters, break one or the other, so they are
// refused as bad input at the door.
package ident

import (
	"errors"
	"unicode/utf8"
)

// Reasons Check and CheckText refuse a string; callers wrap them in their
// own invalid-input error with the field's name.
var (
	ErrNotUTF8 = errors.New("must be UTF-8 text")
	ErrControl = errors.New("must not hold control characters")
	ErrNUL     = errors.New("must not hold NUL characters")
)

// Check refuses an id or a name that is not UTF-8 or holds a control
// character: C0 (U+0000..U+001F, tab, CR and LF included), DEL (U+007F) or
// C1 (U+0080..U+009F).
func Check(s string) error {
	if !utf8.ValidString(s) {
		return ErrNotUTF8
	}
	for _, r := range s {
		if IsControl(r) {
			return ErrControl
		}
	}
	return nil
}

// CheckText refuses free text (a reason, a message) that a text column of
// some store cannot hold: bytes that are not UTF-8, or NUL. Line breaks
// and tabs are allowed.
func CheckText(s string) error {
	if !utf8.ValidString(s) {
		return ErrNotUTF8
	}
	for i := 0; i < len(s); i++ {
		if s[i] == 0 {
			return ErrNUL
		}
	}
	return nil
}

// IsControl reports whether r is a C0 or C1 control character or DEL (the
// same set as unicode.IsControl, without its tables).
func IsControl(r rune) bool { return r < 0x20 || r >= 0x7f && r <= 0x9f }
