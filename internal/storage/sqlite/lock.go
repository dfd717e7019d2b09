package sqlite

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// ErrInUse is returned (as *InUseError) by Open when another Driver, in
// this process or another, has the store open.
var ErrInUse = errors.New("sqlite: store is in use by another process")

// InUseError reports a store that another Driver holds open. PID is the
// process that holds it, when its lock file says (0 if unknown).
type InUseError struct {
	Path string
	PID  int
}

func (e *InUseError) Error() string {
	if e.PID > 0 {
		return fmt.Sprintf("sqlite: store %s is in use by another process (pid %d)", e.Path, e.PID)
	}
	return fmt.Sprintf("sqlite: store %s is in use by another process", e.Path)
}

func (e *InUseError) Unwrap() error { return ErrInUse }

// lockSuffix names the lock file beside the database file. A Driver holds
// an exclusive lock on it for its whole life: two writers on one SQLite
// file would each run every partition, stealing each other's leases.
const lockSuffix = "-lock"

// storeLock is the lock a Driver holds on its store.
type storeLock struct {
	f       *os.File
	path    string
	created bool // this Driver created the file, so a failed open removes it
}

// lockStore takes the store's lock before anything else touches the store.
// It fails at once with *InUseError when another Driver holds it, and then
// changes nothing.
func lockStore(dbPath string) (*storeLock, error) {
	path := dbPath + lockSuffix
	for {
		created := true
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, os.ErrExist) {
			created = false
			f, err = os.OpenFile(path, os.O_RDWR, 0)
			if errors.Is(err, os.ErrNotExist) {
				continue // removed by its holder meanwhile
			}
		}
		if err != nil {
			return nil, fmt.Errorf("sqlite: lock file: %w", err)
		}
		held, err := tryLock(f)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("sqlite: lock %s: %w", path, err)
		}
		if !held {
			pid := readPID(f)
			f.Close()
			return nil, &InUseError{Path: dbPath, PID: pid}
		}
		// A holder that closed removed the file before unlocking it; a
		// lock on a file no longer at the path protects nothing.
		if !samePath(f, path) {
			f.Close()
			continue
		}
		l := &storeLock{f: f, path: path, created: created}
		// The process id tells a refused second process who holds the
		// store; failing to record it only makes that message vaguer.
		if err := f.Truncate(0); err == nil {
			_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
		}
		return l, nil
	}
}

// release gives the lock up. The file is removed first when it is to go
// (always after a Driver closes; after a failed open only if that open
// created it, so that a refused open leaves the directory as it was).
func (l *storeLock) release(remove bool) error {
	if l == nil {
		return nil
	}
	var err error
	if remove {
		if rerr := os.Remove(l.path); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			err = rerr
		}
	}
	return errors.Join(err, l.f.Close()) // closing the file drops the lock
}

func readPID(f *os.File) int {
	b := make([]byte, 32)
	n, _ := f.ReadAt(b, 0)
	pid, err := strconv.Atoi(strings.TrimSpace(string(b[:n])))
	if err != nil {
		return 0
	}
	return pid
}

func samePath(f *os.File, path string) bool {
	a, err := f.Stat()
	if err != nil {
		return false
	}
	b, err := os.Stat(path)
	if err != nil {
		return false
	}
	return os.SameFile(a, b)
}
