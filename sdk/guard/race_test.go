package guard

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
)

// TestActionRacesCompensation delivers, for many steps at once, two copies
// of the action and two of the compensation concurrently — Accord's
// at-least-once delivery with a timed-out action at its worst. Whatever the
// order, each step must end in one of the two clean outcomes.
func TestActionRacesCompensation(t *testing.T) {
	t.Parallel()
	eachDialect(t, func(t *testing.T, d *testDB) {
		ctx := context.Background()
		const (
			sagas  = 40
			copies = 2 // deliveries of each phase
		)
		keys := make([]Key, sagas)
		for i := range keys {
			keys[i] = Key{SagaID: fmt.Sprintf("order-%d", i), Step: "charge"}
			d.openAccount(t, keys[i].SagaID)
		}

		type result struct {
			key    int
			action bool
			ran    bool
			out    string
			err    error
		}
		type delivery struct {
			key    int
			action bool
		}
		var deliveries []delivery
		for i := range keys {
			for range copies {
				deliveries = append(deliveries, delivery{i, true}, delivery{i, false})
			}
		}
		rng := rand.New(rand.NewPCG(1, 2))
		rng.Shuffle(len(deliveries), func(i, j int) { deliveries[i], deliveries[j] = deliveries[j], deliveries[i] })

		start := make(chan struct{})
		results := make(chan result, len(deliveries))
		var wg sync.WaitGroup
		for _, dl := range deliveries {
			wg.Go(func() {
				<-start
				r := result{key: dl.key, action: dl.action}
				if dl.action {
					var out []byte
					out, r.ran, r.err = d.action(ctx, keys[dl.key])
					r.out = string(out)
				} else {
					r.ran, r.err = d.compensate(ctx, keys[dl.key])
				}
				results <- r
			})
		}
		close(start)
		wg.Wait()
		close(results)

		type tally struct{ actionsRan, compsRan, refused, duplicates int }
		tallies := make([]tally, sagas)
		for r := range results {
			tl := &tallies[r.key]
			switch {
			case r.action && errors.Is(r.err, ErrCompensated):
				tl.refused++
			case r.err != nil:
				t.Errorf("%s (action %v): %v", keys[r.key], r.action, r.err)
			case r.action && r.ran:
				tl.actionsRan++
			case r.action:
				if r.out != "balance 90" {
					t.Errorf("%s: duplicate action answered %q, want the first answer", keys[r.key], r.out)
				}
				tl.duplicates++
			case r.ran:
				tl.compsRan++
			}
		}

		var undone, nulls int
		for i, k := range keys {
			tl := tallies[i]
			switch d.state(t, k) {
			case stateCompensated:
				// The action won: it ran once, and the compensation
				// that followed undid it once.
				undone++
				if tl.actionsRan != 1 || tl.compsRan != 1 {
					t.Errorf("%s compensated: action ran %d times, compensation %d; want 1 and 1", k, tl.actionsRan, tl.compsRan)
				}
				d.ledger(t, k, openingBalance, 1, 1)
			case stateNullCompensated:
				// The compensation won: nothing ran, every action
				// was refused.
				nulls++
				if tl.actionsRan != 0 || tl.compsRan != 0 || tl.refused != copies {
					t.Errorf("%s null compensated: action ran %d times, compensation %d, %d actions refused; want 0, 0, %d",
						k, tl.actionsRan, tl.compsRan, tl.refused, copies)
				}
				d.ledger(t, k, openingBalance, 0, 0)
			default:
				t.Errorf("%s: state %q after its compensations, want compensated or null compensated", k, d.state(t, k))
			}
			if tl.actionsRan+tl.duplicates+tl.refused != copies {
				t.Errorf("%s: %d action answers, want %d", k, tl.actionsRan+tl.duplicates+tl.refused, copies)
			}
		}
		t.Logf("%d steps: %d actions undone, %d null compensations", sagas, undone, nulls)
	})
}
