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

// definitionCache holds parsed definitions. A registered version never
// changes, so an entry never goes stale; "latest" is always read from the
// store, as a newer version may be registered at any time.
type definitionCache struct {
	store storage.Driver
	mu    sync.RWMutex
	byKey map[string]*saga.Definition
}

func newDefinitionCache(store storage.Driver) *definitionCache {
	return &definitionCache{store: store, byKey: map[string]*saga.Definition{}}
}

func defKey(name string, version int) string { return name + "@" + strconv.Itoa(version) }

// get returns a definition version; version 0 means the latest.
func (c *definitionCache) get(ctx context.Context, name string, version int) (*saga.Definition, error) {
	if version > 0 {
		c.mu.RLock()
		d, ok := c.byKey[defKey(name, version)]
		c.mu.RUnlock()
		if ok {
			return d, nil
		}
	}
	rec, err := c.store.DefinitionGet(ctx, name, version)
	if errors.Is(err, storage.ErrNotFound) {
		if version == 0 {
			return nil, fmt.Errorf("%w: %s", ErrDefinitionNotFound, name)
		}
		return nil, fmt.Errorf("%w: %s version %d", ErrDefinitionNotFound, name, version)
	}
	if err != nil {
		return nil, fmt.Errorf("engine: load definition %s: %w", name, err)
	}
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
