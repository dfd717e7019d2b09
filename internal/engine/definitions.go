package engine

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"

	"github.com/accord-saga/accord/internal/saga"
	"github.com/accord-saga/accord/internal/storage"
)

// definitionCache holds parsed definitions. A (name, version) stands for
// one content for the life of the store (a deleted version can only be
// registered again with the same content), so an entry never goes stale;
// "latest", and whether a version may start sagas, are always read from
// the store, as they change.
type definitionCache struct {
	store storage.Driver
	mu    sync.RWMutex
	byKey map[string]*saga.Definition
}

func newDefinitionCache(store storage.Driver) *definitionCache {
	return &definitionCache{store: store, byKey: map[string]*saga.Definition{}}
}

func defKey(name string, version int) string { return name + "@" + strconv.Itoa(version) }

// get returns a definition version, disabled or not, for a saga that runs
// on it; version 0 means the latest.
func (c *definitionCache) get(ctx context.Context, name string, version int) (*saga.Definition, error) {
	if version > 0 {
		if d, ok := c.cached(name, version); ok {
			return d, nil
		}
	}
	rec, err := c.load(ctx, name, version)
	if err != nil {
		return nil, err
	}
	return c.parse(rec)
}

// forStart returns the definition version a new saga may start on:
// version 0 is the latest enabled version; a disabled version is
// ErrDefinitionDisabled.
func (c *definitionCache) forStart(ctx context.Context, name string, version int) (*saga.Definition, error) {
	rec, err := c.load(ctx, name, version)
	if err != nil {
		return nil, err
	}
	if rec.Disabled {
		return nil, fmt.Errorf("%w: %s version %d", ErrDefinitionDisabled, name, rec.Version)
	}
	return c.parse(rec)
}

func (c *definitionCache) load(ctx context.Context, name string, version int) (storage.Definition, error) {
	rec, err := c.store.DefinitionGet(ctx, name, version)
	if errors.Is(err, storage.ErrNotFound) {
		if version == 0 {
			return rec, fmt.Errorf("%w: %s has no enabled version", ErrDefinitionNotFound, name)
		}
		return rec, fmt.Errorf("%w: %s version %d", ErrDefinitionNotFound, name, version)
	}
	if err != nil {
		return rec, fmt.Errorf("engine: load definition %s: %w", name, err)
	}
	return rec, nil
}

func (c *definitionCache) parse(rec storage.Definition) (*saga.Definition, error) {
	if d, ok := c.cached(rec.Name, rec.Version); ok {
		return d, nil
	}
	d, err := saga.ParseDefinition(rec.Content)
	if err != nil {
		return nil, fmt.Errorf("engine: stored definition %s version %d no longer parses: %w", rec.Name, rec.Version, err)
	}
	c.mu.Lock()
	c.byKey[defKey(d.Name, d.Version)] = d
	c.mu.Unlock()
	return d, nil
}

func (c *definitionCache) cached(name string, version int) (*saga.Definition, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	d, ok := c.byKey[defKey(name, version)]
	return d, ok
}

// RegisterDefinition parses, validates and stores a definition version.
// Registering identical content again is a no-op (created=false); other
// content under a registered name and version is storage.ErrDefinitionConflict.
func (e *Engine) RegisterDefinition(ctx context.Context, doc []byte) (rec storage.Definition, created bool, err error) {
	d, err := saga.ParseDefinition(doc)
	if err != nil {
		return storage.Definition{}, false, fmt.Errorf("%w: %w", ErrInvalidInput, err)
	}
	for i, st := range d.Steps {
		push := st.Action.HTTP != "" || (st.Compensation != nil && st.Compensation.HTTP != "")
		if push && st.AttemptTimeout <= 0 {
			// Every remote call needs a timeout (an HTTP call without one
			// could hang the step for ever), and a push attempt's timeout
			// is what retries it after a lost call.
			return storage.Definition{}, false, fmt.Errorf("%w: steps[%d].attempt_timeout: a step with an http target needs an attempt timeout > 0", ErrInvalidInput, i)
		}
	}
	if check := e.cfg.CheckTarget; check != nil {
		for i, st := range d.Steps {
			targets := map[string]*saga.Target{"action": &st.Action, "compensation": st.Compensation}
			for _, field := range []string{"action", "compensation"} {
				t := targets[field]
				if t == nil || t.HTTP == "" {
					continue
				}
				if err := check(t.HTTP); err != nil {
					return storage.Definition{}, false, fmt.Errorf("%w: steps[%d].%s.http: %w", ErrInvalidInput, i, field, err)
				}
			}
		}
	}
	rec, created, err = e.store.DefinitionPut(ctx, &storage.Definition{
		Name: d.Name, Version: d.Version, Content: d.Canonical(), Hash: d.Hash(),
	})
	if err != nil {
		return storage.Definition{}, false, fmt.Errorf("engine: register definition %s version %d: %w", d.Name, d.Version, err)
	}
	return rec, created, nil
}

// Definition returns a registered definition; version 0 means the latest.
func (e *Engine) Definition(ctx context.Context, name string, version int) (*saga.Definition, error) {
	return e.defs.get(ctx, name, version)
}

// SetDefinitionDisabled disables a definition version (no saga starts on
// it, and "latest" skips it; sagas running on it go on) or enables it
// again, and returns it. ErrDefinitionNotFound if it is not registered.
func (e *Engine) SetDefinitionDisabled(ctx context.Context, name string, version int, disabled bool) (storage.Definition, error) {
	if version <= 0 {
		return storage.Definition{}, fmt.Errorf("%w: version must be > 0", ErrInvalidInput)
	}
	rec, err := e.store.DefinitionSetDisabled(ctx, &storage.DefinitionSetDisabledParams{Name: name, Version: version, Disabled: disabled})
	if errors.Is(err, storage.ErrNotFound) {
		return storage.Definition{}, fmt.Errorf("%w: %s version %d", ErrDefinitionNotFound, name, version)
	}
	if err != nil {
		return storage.Definition{}, fmt.Errorf("engine: set definition %s version %d disabled: %w", name, version, err)
	}
	return rec, nil
}

// DeleteDefinition deletes a definition version that no unfinished saga
// (needs_operator included) runs on; *storage.DefinitionInUseError (counting them) otherwise, and
// ErrDefinitionNotFound if it is not registered. Its number stays bound to
// its content: registering it again takes the same content.
func (e *Engine) DeleteDefinition(ctx context.Context, name string, version int) error {
	if version <= 0 {
		return fmt.Errorf("%w: version must be > 0", ErrInvalidInput)
	}
	err := e.store.DefinitionDelete(ctx, &storage.DefinitionDeleteParams{
		Name: name, Version: version,
		// An operator may resume a saga that needs one: it runs on.
		InUseStatuses: []string{string(saga.StatusNeedsOperator)},
	})
	if errors.Is(err, storage.ErrNotFound) {
		return fmt.Errorf("%w: %s version %d", ErrDefinitionNotFound, name, version)
	}
	if err != nil && !errors.Is(err, storage.ErrDefinitionInUse) {
		return fmt.Errorf("engine: delete definition %s version %d: %w", name, version, err)
	}
	return err
}
