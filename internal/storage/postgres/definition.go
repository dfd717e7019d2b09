package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/accord-saga/accord/internal/storage"
)

const definitionColumns = `name, version, content, hash, created_at`

func scanDefinition(r pgx.Row) (storage.Definition, error) {
	var def storage.Definition
	var created int64
	err := r.Scan(&def.Name, &def.Version, &def.Content, &def.Hash, &created)
	def.CreatedAt = fromMicros(created)
	return def, err
}

// DefinitionPut registers a definition version; see storage.Driver.
func (d *Driver) DefinitionPut(ctx context.Context, def *storage.Definition) (storage.Definition, bool, error) {
	if def == nil {
		return storage.Definition{}, false, fmt.Errorf("postgres: definition put: %w: nil definition", storage.ErrInvalid)
	}
	if err := checkKey("definition name", def.Name); err != nil {
		return storage.Definition{}, false, fmt.Errorf("postgres: definition put: %w", err)
	}
	if err := checkKey("definition hash", def.Hash); err != nil {
		return storage.Definition{}, false, fmt.Errorf("postgres: definition put: %w", err)
	}
	if def.Version <= 0 {
		return storage.Definition{}, false, fmt.Errorf("postgres: definition put: %w: version must be > 0", storage.ErrInvalid)
	}
	if len(def.Content) == 0 || len(def.Content) > storage.MaxPayloadBytes {
		return storage.Definition{}, false, fmt.Errorf("postgres: definition put: %w: content must be 1..%d bytes", storage.ErrInvalid, storage.MaxPayloadBytes)
	}
	hash := def.Hash
	stored, err := scanDefinition(d.pool.QueryRow(ctx, `
		INSERT INTO definitions (name, version, content, hash, created_at)
		VALUES ($1, $2, $3, $4, `+nowSQL+`)
		ON CONFLICT (name, version) DO NOTHING
		RETURNING `+definitionColumns, def.Name, def.Version, def.Content, hash))
	if err == nil {
		return stored, true, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return storage.Definition{}, false, fmt.Errorf("postgres: definition put: %w", err)
	}
	// Registered before: identical content is a no-op. A version is never
	// deleted, so the row read here is the one that conflicted.
	stored, err = d.DefinitionGet(ctx, def.Name, def.Version)
	if err != nil {
		return storage.Definition{}, false, fmt.Errorf("postgres: definition put: %w", err)
	}
	if stored.Hash != hash {
		return storage.Definition{}, false, fmt.Errorf("postgres: definition %s version %d: %w", def.Name, def.Version, storage.ErrDefinitionConflict)
	}
	return stored, false, nil
}

// DefinitionGet returns a definition version; version 0 means the latest.
func (d *Driver) DefinitionGet(ctx context.Context, name string, version int) (storage.Definition, error) {
	if err := checkKey("definition name", name); err != nil {
		return storage.Definition{}, fmt.Errorf("postgres: definition get: %w", err)
	}
	if version < 0 {
		return storage.Definition{}, fmt.Errorf("postgres: definition get: %w: negative version", storage.ErrInvalid)
	}
	def, err := scanDefinition(d.pool.QueryRow(ctx, `
		SELECT `+definitionColumns+` FROM definitions
		WHERE name = $1 AND ($2 = 0 OR version = $2)
		ORDER BY version DESC
		LIMIT 1`, name, version))
	if errors.Is(err, pgx.ErrNoRows) {
		return storage.Definition{}, fmt.Errorf("postgres: definition %s version %d: %w", name, version, storage.ErrNotFound)
	}
	if err != nil {
		return storage.Definition{}, fmt.Errorf("postgres: definition get: %w", err)
	}
	return def, nil
}

// DefinitionList lists definitions ordered by name, then version.
func (d *Driver) DefinitionList(ctx context.Context, params *storage.DefinitionListParams) ([]storage.Definition, error) {
	if params == nil {
		return nil, fmt.Errorf("postgres: definition list: %w: nil params", storage.ErrInvalid)
	}
	if err := storage.CheckLimit(params.Limit); err != nil {
		return nil, fmt.Errorf("postgres: definition list: %w", err)
	}
	rows, err := d.pool.Query(ctx, `
		SELECT `+definitionColumns+` FROM definitions
		WHERE ($1 = '' OR name = $1) AND (name, version) > ($2, $3)
		ORDER BY name, version
		LIMIT $4`, params.Name, params.AfterName, params.AfterVersion, params.Limit)
	if err != nil {
		return nil, fmt.Errorf("postgres: definition list: %w", err)
	}
	defs, err := collect(rows, func(r pgx.Rows) (storage.Definition, error) { return scanDefinition(r) })
	if err != nil {
		return nil, fmt.Errorf("postgres: definition list: %w", err)
	}
	return defs, nil
}
