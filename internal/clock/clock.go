package clock

import (
	"sort"
	"sync"
	"time"
)

// Clock tells the time and makes timers and tickers that follow it.
type Clock interface {
	Now() time.Time
	// NewTimer returns a timer that fires once, d from now.
	NewTimer(d time.Duration) Timer
	// NewTicker returns a ticker that fires every d (d > 0).
	NewTicker(d time.Duration) Ticker
}

// Timer is a time.Timer of a Clock.
type Timer interface {
	C() <-chan time.Time
	// Reset re-arms the timer to fire d from now; like time.Timer's (Go
	// 1.23 and later), a value not yet received from C is discarded.
	Reset(d time.Duration)
	Stop()
}

// Ticker is a time.Ticker of a Clock.
type Ticker interface {
	C() <-chan time.Time
	Stop()
}

// Real is the host's clock.
type Real struct{}

func (Real) Now() time.Time { return time.Now() }

func (Real) NewTimer(d time.Duration) Timer { return realTimer{time.NewTimer(d)} }

func (Real) NewTicker(d time.Duration) Ticker { return realTicker{time.NewTicker(d)} }

type realTimer struct{ t *time.Timer }

func (t realTimer) C() <-chan time.Time   { return t.t.C }
func (t realTimer) Reset(d time.Duration) { t.t.Reset(d) }
func (t realTimer) Stop()                 { t.t.Stop() }

type realTicker struct{ t *time.Ticker }

func (t realTicker) C() <-chan time.Time { return t.t.C }
func (t realTicker) Stop()               { t.t.Stop() }

// Manual is a clock that moves only when told to. The zero value is not
// usable; call NewManual.
type Manual struct {
	mu     sync.Mutex
	now    time.Time
	timers map[*manualTimer]struct{}
	armed  chan struct{} // closed and replaced whenever a timer is armed
	seq    uint64
}

// NewManual returns a clock standing at start.
func NewManual(start time.Time) *Manual {
	return &Manual{now: start, timers: map[*manualTimer]struct{}{}, armed: make(chan struct{})}
}

// Now returns the clock's time.
func (m *Manual) Now() time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.now
}

// Advance moves the clock forward by d and fires what falls due.
func (m *Manual) Advance(d time.Duration) {
	if d < 0 {
		panic("clock: Advance with a negative duration")
	}
	m.mu.Lock()
	target := m.now.Add(d)
	m.mu.Unlock()
	m.Set(target)
}

// Skip moves the clock forward by d without firing anything, as time
// passes for a process that does not get to run (a starved CPU, a paused
// VM): what fell due meanwhile fires, late, at the next Advance or Set.
func (m *Manual) Skip(d time.Duration) {
	if d < 0 {
		panic("clock: Skip with a negative duration")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.now = m.now.Add(d)
}

// Set moves the clock forward to t (never back) and fires, in deadline
// order, every timer and ticker due by then; a ticker due several times
// fires once per period, each into its channel if there is room.
func (m *Manual) Set(t time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for {
		next := m.nextDueLocked(t)
		if next == nil {
			break
		}
		if next.at.After(m.now) {
			m.now = next.at
		}
		next.fireLocked(m, t)
	}
	if t.After(m.now) {
		m.now = t
	}
}

// Timers returns how many timers and tickers are armed.
func (m *Manual) Timers() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.timers)
}

// WaitArmed returns a channel closed the next time a timer or ticker is
// armed (created or reset), so a test can wait for a goroutine to reach
// its wait before moving the clock.
func (m *Manual) WaitArmed() <-chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.armed
}

func (m *Manual) nextDueLocked(by time.Time) *manualTimer {
	var due []*manualTimer
	for t := range m.timers {
		if !t.at.After(by) {
			due = append(due, t)
		}
	}
	if len(due) == 0 {
		return nil
	}
	sort.Slice(due, func(i, j int) bool {
		if !due[i].at.Equal(due[j].at) {
			return due[i].at.Before(due[j].at)
		}
		return due[i].seq < due[j].seq
	})
	return due[0]
}

func (m *Manual) armLocked(t *manualTimer, d time.Duration) {
	t.at = m.now.Add(d)
	m.seq++
	t.seq = m.seq
	m.timers[t] = struct{}{}
	close(m.armed)
	m.armed = make(chan struct{})
}

// NewTimer returns a timer that fires when the clock reaches now+d.
func (m *Manual) NewTimer(d time.Duration) Timer {
	t := &manualTimer{m: m, c: make(chan time.Time, 1)}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.armLocked(t, d)
	if d <= 0 {
		t.fireLocked(m, m.now)
	}
	return t
}

// NewTicker returns a ticker that fires each time the clock passes a
// multiple of d from now.
func (m *Manual) NewTicker(d time.Duration) Ticker {
	if d <= 0 {
		panic("clock: NewTicker with a non-positive period")
	}
	t := &manualTimer{m: m, c: make(chan time.Time, 1), period: d}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.armLocked(t, d)
	return t
}

type manualTimer struct {
	m      *Manual
	c      chan time.Time
	at     time.Time
	seq    uint64
	period time.Duration // > 0 for a ticker
}

func (t *manualTimer) C() <-chan time.Time { return t.c }

// fireLocked sends the fire time and disarms a timer, or re-arms a ticker
// for its first tick after until: the ticks a jump of the clock passes
// over are dropped, as a slow reader of a time.Ticker drops them.
func (t *manualTimer) fireLocked(m *Manual, until time.Time) {
	select {
	case t.c <- t.at:
	default:
	}
	if t.period > 0 {
		n := until.Sub(t.at)/t.period + 1
		t.at = t.at.Add(n * t.period)
		return
	}
	delete(m.timers, t)
}

func (t *manualTimer) Reset(d time.Duration) {
	m := t.m
	m.mu.Lock()
	defer m.mu.Unlock()
	select {
	case <-t.c:
	default:
	}
	m.armLocked(t, d)
	if d <= 0 {
		t.fireLocked(m, m.now)
	}
}

func (t *manualTimer) Stop() {
	m := t.m
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.timers, t)
}
