package engine_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sync/atomic"
	"testing"

	"github.com/accord-saga/accord/internal/engine"
	"github.com/accord-saga/accord/internal/storage"
)

func oneStepDef(name string, version int) string {
	return fmt.Sprintf(`
name: %s
version: %d
steps:
  - name: only
    kind: pivot
    action: {queue: held}
`, name, version)
}

// TestDefinitionDisableAndDelete: a version registered with the highest
// number there is can be disabled and then deleted, and "latest" goes back
// to the newest enabled version; a disabled version cannot be started by
// name, and a version a running saga uses cannot be deleted.
func TestDefinitionDisableAndDelete(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		store, _ := b.open(t)
		e := startEngine(t, store, nil)
		ctx := context.Background()
		top := math.MaxInt32
		register(t, e, oneStepDef("pinned", 1))
		register(t, e, oneStepDef("pinned", top))
		release := make(chan struct{})
		var p participant
		p.serve(t, e, []string{"held"}, 2, func(engine.Task) *engine.Result {
			<-release
			return success(map[string]int{})
		})
		t.Cleanup(func() {
			select {
			case <-release:
			default:
				close(release)
			}
		})

		startOn := func(version int) (engine.Saga, error) {
			t.Helper()
			res, err := e.StartSaga(ctx, engine.StartParams{Definition: "pinned", Version: version})
			if err != nil {
				return engine.Saga{}, err
			}
			return e.GetSaga(ctx, res.SagaID)
		}
		running, err := startOn(0)
		if err != nil || running.DefinitionVersion != top {
			t.Fatalf("start of the latest: version %d, %v; want %d", running.DefinitionVersion, err, top)
		}

		var inUse *storage.DefinitionInUseError
		if err := e.DeleteDefinition(ctx, "pinned", top); !errors.As(err, &inUse) || inUse.Sagas != 1 {
			t.Fatalf("delete while a saga runs on it: %v, want DefinitionInUseError counting 1", err)
		}

		if rec, err := e.SetDefinitionDisabled(ctx, "pinned", top, true); err != nil || !rec.Disabled {
			t.Fatalf("disable: %+v, %v", rec, err)
		}
		if s, err := startOn(0); err != nil || s.DefinitionVersion != 1 {
			t.Fatalf("start of the latest with %d disabled: version %d, %v; want 1", top, s.DefinitionVersion, err)
		}
		if _, err := startOn(top); !errors.Is(err, engine.ErrDefinitionDisabled) {
			t.Fatalf("start of the disabled version by name: %v, want ErrDefinitionDisabled", err)
		}

		close(release)
		if s := waitEnd(t, e, running.ID); s.Status != "completed" {
			t.Fatalf("the saga on the disabled version: %s, want completed", s.Status)
		}
		if err := e.DeleteDefinition(ctx, "pinned", top); err != nil {
			t.Fatalf("delete once its sagas ended: %v", err)
		}
		if s, err := e.GetSaga(ctx, running.ID); err != nil || s.Status != "completed" || s.DefinitionVersion != top {
			t.Fatalf("the ended saga of the deleted version: %+v, %v", s, err)
		}
		if _, err := startOn(top); !errors.Is(err, engine.ErrDefinitionNotFound) {
			t.Fatalf("start of the deleted version: %v, want ErrDefinitionNotFound", err)
		}
		if _, err := e.SetDefinitionDisabled(ctx, "pinned", top, false); !errors.Is(err, engine.ErrDefinitionNotFound) {
			t.Fatalf("enable of the deleted version: %v, want ErrDefinitionNotFound", err)
		}
		if err := e.DeleteDefinition(ctx, "pinned", 2); !errors.Is(err, engine.ErrDefinitionNotFound) {
			t.Fatalf("delete of a version never registered: %v, want ErrDefinitionNotFound", err)
		}
	})
}

// deletingStore deletes a definition version just before the first commit
// that starts a saga on it, as an operator's delete racing the start would.
type deletingStore struct {
	storage.Driver
	done    atomic.Bool
	deleted chan error
}

func (s *deletingStore) Commit(ctx context.Context, p *storage.CommitParams) (*storage.CommitResult, error) {
	if len(p.Definitions) > 0 && s.done.CompareAndSwap(false, true) {
		d := p.Definitions[0]
		s.deleted <- s.Driver.DefinitionDelete(ctx, &storage.DefinitionDeleteParams{Name: d.Name, Version: d.Version})
	}
	return s.Driver.Commit(ctx, p)
}

// TestStartRacingDeleteFailsCleanly: a delete that lands between the
// start's check of its definition and its commit makes the start fail as
// if the delete had come first, and leaves no saga behind.
func TestStartRacingDeleteFailsCleanly(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		inner, _ := b.open(t)
		store := &deletingStore{Driver: inner, deleted: make(chan error, 1)}
		e := startEngine(t, store, nil)
		ctx := context.Background()
		register(t, e, oneStepDef("raced", 1))
		_, err := e.StartSaga(ctx, engine.StartParams{Definition: "raced", Input: json.RawMessage(`{}`)})
		if derr := <-store.deleted; derr != nil {
			t.Fatalf("delete: %v", derr)
		}
		if !errors.Is(err, engine.ErrDefinitionNotFound) {
			t.Fatalf("start: %v, want ErrDefinitionNotFound", err)
		}
		list, err := e.ListSagas(ctx, &storage.SagaListParams{Limit: 10})
		if err != nil || len(list) != 0 {
			t.Fatalf("sagas stored: %d (%v), want none", len(list), err)
		}
	})
}
