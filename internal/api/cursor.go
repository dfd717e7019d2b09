package api

import (
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
	"time"
)

// Cursors are opaque to clients: base64url of a kind tag and the sort key
// of the last item of the page. The tag keeps a cursor of one list from
// being replayed against another.
const (
	cursorSagas       = "s1"
	cursorDefinitions = "d1"
	cursorEvents      = "e1"
)

// maxCursorBytes bounds a cursor before decoding: the longest legitimate
// one holds a 512-byte id.
const maxCursorBytes = 1024

var errBadCursor = errors.New("not a cursor of this list; pass back next_cursor unchanged")

func encodeCursor(kind string, parts ...string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(kind + "\x00" + strings.Join(parts, "\x00")))
}

func decodeCursor(kind, cursor string, n int) ([]string, error) {
	if len(cursor) > maxCursorBytes {
		return nil, errBadCursor
	}
	raw, err := base64.RawURLEncoding.DecodeString(cursor)
	if err != nil {
		return nil, errBadCursor
	}
	parts := strings.Split(string(raw), "\x00")
	if len(parts) != n+1 || parts[0] != kind {
		return nil, errBadCursor
	}
	return parts[1:], nil
}

// sagaCursor is the (created_at, id) of the last saga of a page.
func encodeSagaCursor(createdAt time.Time, id string) string {
	return encodeCursor(cursorSagas, strconv.FormatInt(createdAt.UnixNano(), 10), id)
}

func decodeSagaCursor(cursor string) (time.Time, string, error) {
	parts, err := decodeCursor(cursorSagas, cursor, 2)
	if err != nil {
		return time.Time{}, "", err
	}
	ns, err := strconv.ParseInt(parts[0], 10, 64)
	if err != nil || ns <= 0 || parts[1] == "" {
		return time.Time{}, "", errBadCursor
	}
	return time.Unix(0, ns).UTC(), parts[1], nil
}

// definitionCursor is the (name, version) of the last definition of a page.
func encodeDefinitionCursor(name string, version int) string {
	return encodeCursor(cursorDefinitions, name, strconv.Itoa(version))
}

func decodeDefinitionCursor(cursor string) (string, int, error) {
	parts, err := decodeCursor(cursorDefinitions, cursor, 2)
	if err != nil {
		return "", 0, err
	}
	v, err := strconv.Atoi(parts[1])
	if err != nil || v < 1 || parts[0] == "" {
		return "", 0, errBadCursor
	}
	return parts[0], v, nil
}

// eventCursor is the stream version of the last event of a page.
func encodeEventCursor(version int64) string {
	return encodeCursor(cursorEvents, strconv.FormatInt(version, 10))
}

func decodeEventCursor(cursor string) (int64, error) {
	parts, err := decodeCursor(cursorEvents, cursor, 1)
	if err != nil {
		return 0, err
	}
	v, err := strconv.ParseInt(parts[0], 10, 64)
	if err != nil || v < 1 {
		return 0, errBadCursor
	}
	return v, nil
}
