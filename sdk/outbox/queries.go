package outbox

import (
	"strconv"
	"strings"
)

// queries holds an outbox's SQL, built once for its dialect and table.
type queries struct {
	migrate []string
	// claim: $1 limit → seq, topic, msg_key, msg_id, correlation_id,
	// idempotency_key, headers, payload, ttl_ms, ahead (unsent rows of the
	// same topic and key before this one).
	claim   string
	sentAt  string // the database's now, as the sent_at column stores it
	cleanup string // $1 age in milliseconds, $2 batch size
	pending string
	p       func(int) string
}

func buildQueries(d Dialect, table string) queries {
	t := `"` + table + `"`
	idx := func(s string) string { return `"` + table + `_` + s + `_idx"` }
	var q queries
	cols := `o.seq, o.topic, o.msg_key, o.msg_id, o.correlation_id, o.idempotency_key, o.headers, o.payload, o.ttl_ms`
	switch d {
	case Postgres:
		q.p = func(n int) string { return "$" + strconv.Itoa(n) }
		q.sentAt = `now()`
		q.migrate = []string{
			`CREATE TABLE IF NOT EXISTS ` + t + ` (
	seq             bigserial   PRIMARY KEY,
	topic           text        NOT NULL,
	msg_key         text        NOT NULL,
	msg_id          text        NOT NULL,
	correlation_id  text        NOT NULL,
	idempotency_key text        NOT NULL,
	headers         bytea,
	payload         bytea       NOT NULL,
	ttl_ms          bigint      NOT NULL,
	created_at      timestamptz NOT NULL DEFAULT now(),
	sent_at         timestamptz
)`,
			`CREATE INDEX IF NOT EXISTS ` + idx("unsent") + ` ON ` + t + ` (seq) WHERE sent_at IS NULL`,
			`CREATE INDEX IF NOT EXISTS ` + idx("key") + ` ON ` + t + ` (topic, msg_key, seq) WHERE sent_at IS NULL`,
			`CREATE INDEX IF NOT EXISTS ` + idx("sent") + ` ON ` + t + ` (sent_at) WHERE sent_at IS NOT NULL`,
		}
		// SKIP LOCKED: relays share the work. ahead tells a relay that
		// another holds an earlier event of the same key.
		q.claim = `SELECT ` + cols + `,
	(SELECT count(*) FROM ` + t + ` p WHERE o.msg_key <> '' AND p.topic = o.topic AND p.msg_key = o.msg_key
		AND p.seq < o.seq AND p.sent_at IS NULL) AS ahead
FROM ` + t + ` o WHERE o.sent_at IS NULL ORDER BY o.seq LIMIT $1 FOR UPDATE OF o SKIP LOCKED`
		q.cleanup = `DELETE FROM ` + t + ` WHERE seq IN (
	SELECT seq FROM ` + t + ` WHERE sent_at IS NOT NULL AND sent_at <= now() - $1::bigint * interval '1 millisecond'
	LIMIT $2)`
	case SQLite:
		q.p = func(n int) string { return "?" + strconv.Itoa(n) }
		nowMS := `CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)`
		q.sentAt = nowMS
		q.migrate = []string{
			`CREATE TABLE IF NOT EXISTS ` + t + ` (
	seq             INTEGER PRIMARY KEY AUTOINCREMENT,
	topic           TEXT    NOT NULL,
	msg_key         TEXT    NOT NULL,
	msg_id          TEXT    NOT NULL,
	correlation_id  TEXT    NOT NULL,
	idempotency_key TEXT    NOT NULL,
	headers         BLOB,
	payload         BLOB    NOT NULL,
	ttl_ms          INTEGER NOT NULL,
	created_at      INTEGER NOT NULL DEFAULT (` + nowMS + `), -- milliseconds since the Unix epoch
	sent_at         INTEGER -- milliseconds since the Unix epoch
)`,
			`CREATE INDEX IF NOT EXISTS ` + idx("unsent") + ` ON ` + t + ` (seq) WHERE sent_at IS NULL`,
			`CREATE INDEX IF NOT EXISTS ` + idx("sent") + ` ON ` + t + ` (sent_at) WHERE sent_at IS NOT NULL`,
		}
		// No locks: a relay reads, publishes, then marks. Two relays may
		// publish one row twice; the bus keeps it once.
		q.claim = `SELECT ` + cols + `, 0 AS ahead FROM ` + t + ` o WHERE o.sent_at IS NULL ORDER BY o.seq LIMIT ?1`
		q.cleanup = `DELETE FROM ` + t + ` WHERE seq IN (
	SELECT seq FROM ` + t + ` WHERE sent_at IS NOT NULL AND sent_at <= ` + nowMS + ` - ?1
	LIMIT ?2)`
	}
	q.pending = `SELECT count(*) FROM ` + t + ` WHERE sent_at IS NULL`
	return q
}

// markSent returns the statement that marks n rows (their seqs, $1..$n)
// sent.
func (q queries) markSent(table string, n int) string {
	var b strings.Builder
	b.WriteString(`UPDATE "` + table + `" SET sent_at = ` + q.sentAt + ` WHERE sent_at IS NULL AND seq IN (`)
	for i := range n {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(q.p(i + 1))
	}
	b.WriteString(")")
	return b.String()
}
