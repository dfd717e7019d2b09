package guard

import "fmt"

// Record states, stored in the state column.
const (
	stateDone            = "done"             // the action ran
	stateCompensated     = "compensated"      // the action ran, then its compensation
	stateNullCompensated = "null_compensated" // the compensation came first: nothing ran
)

// queries holds a guard's SQL, built once for its dialect and table.
type queries struct {
	migrate []string // run in order, in one transaction
	insert  string   // $1 saga, $2 step, $3 state; affects 0 rows if the record exists
	lock    string   // $1 saga, $2 step → state, output; locks the row
	output  string   // $1 saga, $2 step, $3 output
	state   string   // $1 saga, $2 step, $3 new state
	forget  string   // $1 saga, $2 step
	purge   string   // $1 age in milliseconds, $2 batch size → rows deleted
}

func buildQueries(d Dialect, table string) queries {
	// The table name passed checkTable: quoting it only guards against
	// reserved words.
	t := `"` + table + `"`
	idx := `"` + table + `_updated_at_idx"`
	var q queries
	var now string
	var p func(int) string
	switch d {
	case Postgres:
		p = func(n int) string { return fmt.Sprintf("$%d", n) }
		now = "now()"
		q.migrate = []string{
			`CREATE TABLE IF NOT EXISTS ` + t + ` (
	saga_id    text        NOT NULL,
	step       text        NOT NULL,
	state      text        NOT NULL CHECK (state IN ('done', 'compensated', 'null_compensated')),
	output     bytea,
	created_at timestamptz NOT NULL DEFAULT now(),
	updated_at timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (saga_id, step)
)`,
			`CREATE INDEX IF NOT EXISTS ` + idx + ` ON ` + t + ` (updated_at)`,
		}
		q.lock = `SELECT state, output FROM ` + t + ` WHERE saga_id = $1 AND step = $2 FOR UPDATE`
		q.purge = `DELETE FROM ` + t + ` WHERE (saga_id, step) IN (
	SELECT saga_id, step FROM ` + t + `
	WHERE updated_at <= now() - $1::bigint * interval '1 millisecond'
	LIMIT $2)`
	case SQLite:
		p = func(n int) string { return fmt.Sprintf("?%d", n) }
		// Milliseconds since the Unix epoch: an integer compares and
		// subtracts the same way in every SQLite version and driver.
		nowMS := `CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)`
		now = nowMS
		q.migrate = []string{
			`CREATE TABLE IF NOT EXISTS ` + t + ` (
	saga_id    TEXT    NOT NULL,
	step       TEXT    NOT NULL,
	state      TEXT    NOT NULL CHECK (state IN ('done', 'compensated', 'null_compensated')),
	output     BLOB,
	created_at INTEGER NOT NULL, -- milliseconds since the Unix epoch
	updated_at INTEGER NOT NULL, -- milliseconds since the Unix epoch
	PRIMARY KEY (saga_id, step)
)`,
			`CREATE INDEX IF NOT EXISTS ` + idx + ` ON ` + t + ` (updated_at)`,
		}
		// No row locks: the transaction's write lock (BEGIN IMMEDIATE,
		// or the insert that precedes this) serializes deliveries.
		q.lock = `SELECT state, output FROM ` + t + ` WHERE saga_id = ?1 AND step = ?2`
		q.purge = `DELETE FROM ` + t + ` WHERE (saga_id, step) IN (
	SELECT saga_id, step FROM ` + t + `
	WHERE updated_at <= ` + nowMS + ` - ?1
	LIMIT ?2)`
	}
	q.insert = `INSERT INTO ` + t + ` (saga_id, step, state, created_at, updated_at)
	VALUES (` + p(1) + `, ` + p(2) + `, ` + p(3) + `, ` + now + `, ` + now + `)
	ON CONFLICT (saga_id, step) DO NOTHING`
	q.output = `UPDATE ` + t + ` SET output = ` + p(3) + ` WHERE saga_id = ` + p(1) + ` AND step = ` + p(2)
	q.state = `UPDATE ` + t + ` SET state = ` + p(3) + `, updated_at = ` + now + ` WHERE saga_id = ` + p(1) + ` AND step = ` + p(2)
	q.forget = `DELETE FROM ` + t + ` WHERE saga_id = ` + p(1) + ` AND step = ` + p(2)
	return q
}
