package sqlite

import (
	"cmp"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/accord-saga/accord/internal/storage"
)

// Synchronous modes. See Config.Synchronous.
const (
	SynchronousFull   = "full"
	SynchronousNormal = "normal"
)

// Defaults for Config.
const (
	SynchronousDefault     = SynchronousFull
	BusyTimeoutDefault     = 5 * time.Second
	ReadConnectionsDefault = 4
)

// Config configures a store.
type Config struct {
	// Path of the database file. Required. Its directory must exist (the
	// caller creates it). SQLite keeps two more files beside it while the
	// store is open, Path+"-wal" and Path+"-shm"; both belong to the store.
	// The Driver's lock file, Path+"-lock", is there while it is open.
	Path string

	// Partitions is the partition count of a new store. It is used only
	// when the store is created; an existing store keeps its own. Default
	// storage.DefaultPartitions; at most storage.MaxPartitions.
	Partitions int

	// Synchronous is SQLite's synchronous setting for the writer. "full"
	// (the default) fsyncs the write-ahead log at every commit: an
	// acknowledged commit survives kill -9 and power loss. "normal" is an
	// explicit opt-in for speed and is weaker: an acknowledged commit still
	// survives the process being killed, but the last commits before a
	// power loss or an operating-system crash may be lost (the database
	// stays consistent).
	Synchronous string

	// BusyTimeout is how long a statement waits for a lock held by another
	// process before failing. Default 5s.
	BusyTimeout time.Duration

	// ReadConnections is the size of the read connection pool; reads run
	// beside the single writer (WAL mode). Default 4.
	ReadConnections int

	// Clock is the store's time source (Now: lease expiry, task visibility,
	// timestamps). Default the host's clock; tests give a clock they move.
	Clock interface{ Now() time.Time }
}

func (c Config) withDefaults() Config {
	c.Partitions = cmp.Or(c.Partitions, storage.DefaultPartitions)
	c.Synchronous = strings.ToLower(cmp.Or(c.Synchronous, SynchronousDefault))
	c.BusyTimeout = cmp.Or(c.BusyTimeout, BusyTimeoutDefault)
	c.ReadConnections = cmp.Or(c.ReadConnections, ReadConnectionsDefault)
	return c
}

func (c Config) validate() error {
	if c.Path == "" {
		return fmt.Errorf("sqlite: config: path is required")
	}
	if c.Path == ":memory:" || strings.HasPrefix(c.Path, "file:") {
		return fmt.Errorf("sqlite: config: path %q must name a file", c.Path)
	}
	if c.Partitions < 1 || c.Partitions > storage.MaxPartitions {
		return fmt.Errorf("sqlite: config: partitions %d out of range [1,%d]", c.Partitions, storage.MaxPartitions)
	}
	if c.Synchronous != SynchronousFull && c.Synchronous != SynchronousNormal {
		return fmt.Errorf("sqlite: config: synchronous %q: must be %q or %q", c.Synchronous, SynchronousFull, SynchronousNormal)
	}
	if c.BusyTimeout < 0 {
		return fmt.Errorf("sqlite: config: busy timeout %v is negative", c.BusyTimeout)
	}
	if c.ReadConnections < 1 || c.ReadConnections > 64 {
		return fmt.Errorf("sqlite: config: read connections %d out of range [1,64]", c.ReadConnections)
	}
	return nil
}

// dsn builds a modernc.org/sqlite URI for the absolute path abs. The path
// is escaped so that '?', '#' and '%' in a file name stay part of it.
func dsn(abs string, params ...string) string {
	u := url.URL{Scheme: "file", Path: abs}
	// URL.String would write "file:///abs"; SQLite accepts it, but the
	// driver splits the string at the first '?', so the escaped path must
	// not contain one, which EscapedPath guarantees.
	s := "file:" + u.EscapedPath()
	if len(params) > 0 {
		s += "?" + strings.Join(params, "&")
	}
	return s
}
