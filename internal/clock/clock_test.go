package clock_test

import (
	"testing"
	"time"

	"github.com/accord-saga/accord/internal/clock"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func fired(c <-chan time.Time) (time.Time, bool) {
	select {
	case at := <-c:
		return at, true
	default:
		return time.Time{}, false
	}
}

func TestManualTimer(t *testing.T) {
	m := clock.NewManual(t0)
	tm := m.NewTimer(time.Second)
	m.Advance(999 * time.Millisecond)
	if _, ok := fired(tm.C()); ok {
		t.Fatal("timer fired early")
	}
	m.Advance(time.Millisecond)
	if at, ok := fired(tm.C()); !ok || !at.Equal(t0.Add(time.Second)) {
		t.Fatalf("timer: fired %v at %v, want at %v", ok, at, t0.Add(time.Second))
	}
	if m.Timers() != 0 {
		t.Fatalf("a fired timer is still armed")
	}
	tm.Reset(-time.Second)
	if _, ok := fired(tm.C()); !ok {
		t.Fatal("a timer reset to the past did not fire at once")
	}
	tm.Reset(time.Second)
	tm.Stop()
	m.Advance(time.Hour)
	if _, ok := fired(tm.C()); ok {
		t.Fatal("a stopped timer fired")
	}
}

func TestManualTickerDropsPassedTicks(t *testing.T) {
	m := clock.NewManual(t0)
	tk := m.NewTicker(10 * time.Second)
	defer tk.Stop()
	m.Advance(35 * time.Second)
	if at, ok := fired(tk.C()); !ok || !at.Equal(t0.Add(10*time.Second)) {
		t.Fatalf("first tick %v %v", ok, at)
	}
	if _, ok := fired(tk.C()); ok {
		t.Fatal("ticks passed over were queued")
	}
	m.Advance(5 * time.Second) // 40s: the next tick
	if at, ok := fired(tk.C()); !ok || !at.Equal(t0.Add(40*time.Second)) {
		t.Fatalf("tick at 40s: %v %v", ok, at)
	}
}

func TestManualFiresInDeadlineOrder(t *testing.T) {
	m := clock.NewManual(t0)
	a, b := m.NewTimer(2*time.Second), m.NewTimer(time.Second)
	m.Advance(3 * time.Second)
	if m.Now() != t0.Add(3*time.Second) {
		t.Fatalf("now %v", m.Now())
	}
	at, _ := fired(a.C())
	bt, _ := fired(b.C())
	if !bt.Before(at) {
		t.Fatalf("b fired at %v, a at %v", bt, at)
	}
}

func TestSkipFiresLate(t *testing.T) {
	m := clock.NewManual(t0)
	tm := m.NewTimer(time.Second)
	m.Skip(time.Minute)
	if _, ok := fired(tm.C()); ok {
		t.Fatal("a timer fired during Skip")
	}
	m.Advance(0)
	if at, ok := fired(tm.C()); !ok || !at.Equal(t0.Add(time.Second)) {
		t.Fatalf("late timer: %v %v", ok, at)
	}
	if !m.Now().Equal(t0.Add(time.Minute)) {
		t.Fatalf("now %v, want %v", m.Now(), t0.Add(time.Minute))
	}
}

func TestWaitArmed(t *testing.T) {
	m := clock.NewManual(t0)
	w := m.WaitArmed()
	go m.NewTimer(time.Second)
	<-w
}
