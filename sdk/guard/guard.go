package guard

import (
	"cmp"
	"fmt"
	"strconv"
)

// Dialect names the SQL database a guard's table lives in.
type Dialect int

const (
	// Postgres is PostgreSQL, through any database/sql driver.
	Postgres Dialect = iota + 1
	// SQLite is SQLite, through any database/sql driver.
	SQLite
)

func (d Dialect) String() string {
	switch d {
	case Postgres:
		return "postgres"
	case SQLite:
		return "sqlite"
	}
	return "Dialect(" + strconv.Itoa(int(d)) + ")"
}

// TableDefault is the guard table's name when Options.Table is empty.
const TableDefault = "accord_guard"

// MaxTableLength bounds a table name so that the names derived from it
// (its index) stay within PostgreSQL's 63-byte identifiers.
const MaxTableLength = 48

// Options configure a Guard.
type Options struct {
	// Table is the name of the guard's table: lowercase letters, digits
	// and underscores, starting with a letter or underscore, at most
	// MaxTableLength bytes. Put it in a schema with the connection's
	// search_path (PostgreSQL) or database (SQLite). Default: TableDefault.
	Table string

	// Dialect is the database the table lives in. Required.
	Dialect Dialect
}

// Guard records saga steps in a participant's database. Build one with New.
type Guard struct {
	table   string
	dialect Dialect
	q       queries
	// purgeBatch bounds the records one Purge statement deletes, so that
	// a large purge never holds locks for long.
	purgeBatch int
}

// purgeBatchDefault is Guard.purgeBatch.
const purgeBatchDefault = 1000

// New validates opts and returns a Guard.
func New(opts Options) (*Guard, error) {
	table := cmp.Or(opts.Table, TableDefault)
	if err := checkTable(table); err != nil {
		return nil, err
	}
	if opts.Dialect != Postgres && opts.Dialect != SQLite {
		return nil, fmt.Errorf("guard: dialect %v is neither Postgres nor SQLite", opts.Dialect)
	}
	return &Guard{
		table:      table,
		dialect:    opts.Dialect,
		q:          buildQueries(opts.Dialect, table),
		purgeBatch: purgeBatchDefault,
	}, nil
}

// Table returns the name of the guard's table.
func (g *Guard) Table() string { return g.table }

// checkTable accepts names that mean the same, unquoted or quoted, in both
// dialects: PostgreSQL folds unquoted names to lower case, so upper case is
// refused rather than left to surprise.
func checkTable(name string) error {
	if len(name) > MaxTableLength {
		return fmt.Errorf("guard: table name is %d bytes; the limit is %d", len(name), MaxTableLength)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c >= 'a' && c <= 'z' || c == '_' || i > 0 && c >= '0' && c <= '9' {
			continue
		}
		return fmt.Errorf("guard: table name %q: use lowercase letters, digits and '_', not starting with a digit", truncate(name))
	}
	return nil
}
