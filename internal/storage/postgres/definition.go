package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/accord-saga/accord/internal/storage"
)

const definitionColumns = `name, version, content, hash, created_at, disabled`

// sqlLockDefinitions locks the definition versions a group of commits
// starts sagas on and reads which of them are live. FOR SHARE conflicts
// with the update that deletes a version (DefinitionDelete), so a delete
// waits for the commits that passed this check, and the commits after a
// delete find the version gone.
const sqlLockDefinitions = `
SELECT d.name, d.version FROM definitions d
JOIN unnest($1::text[], $2::integer[]) AS u(name, version) ON d.name = u.name AND d.version = u.version
WHERE NOT d.deleted
ORDER BY d.name, d.version
FOR SHARE OF d`

func scanDefinition(r pgx.Row) (storage.Definition, error) {
	var def storage.Definition
	var created int64
	err := r.Scan(&def.Name, &def.Version, &def.Content, &def.Hash, &created, &def.Disabled)
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
	// A version deleted between the insert and the read that follows is
	// tried again: the insert revives it.
	for range 3 {
		stored, created, err := d.definitionPut(ctx, def)
		if !errors.Is(err, errDeletedMeanwhile) {
			return stored, created, err
		}
	}
	return storage.Definition{}, false, fmt.Errorf("postgres: definition put %s version %d: %w", def.Name, def.Version, errDeletedMeanwhile)
}

// errDeletedMeanwhile: the version was deleted while registered again.
var errDeletedMeanwhile = errors.New("postgres: definition deleted while being registered again")

func (d *Driver) definitionPut(ctx context.Context, def *storage.Definition) (storage.Definition, bool, error) {
	hash := def.Hash
	// A deleted version with the same hash is revived in place; one with
	// another hash stays, and the conflict is reported below.
	stored, err := scanDefinition(d.pool.QueryRow(ctx, `
		INSERT INTO definitions AS d (name, version, content, hash, created_at)
		VALUES ($1, $2, $3, $4, `+nowSQL+`)
		ON CONFLICT (name, version) DO UPDATE
			SET content = excluded.content, created_at = excluded.created_at, disabled = false, deleted = false
			WHERE d.deleted AND d.hash = excluded.hash
		RETURNING `+definitionColumns, def.Name, def.Version, def.Content, hash))
	if err == nil {
		return stored, true, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return storage.Definition{}, false, fmt.Errorf("postgres: definition put: %w", err)
	}
	// Registered before: identical content is a no-op. The row read here
	// is the one that conflicted, or, deleted since, one that conflicts.
	var storedHash string
	var deleted bool
	err = d.pool.QueryRow(ctx, `SELECT hash, deleted FROM definitions WHERE name = $1 AND version = $2`,
		def.Name, def.Version).Scan(&storedHash, &deleted)
	if err != nil {
		return storage.Definition{}, false, fmt.Errorf("postgres: definition put: %w", err)
	}
	if storedHash != hash {
		return storage.Definition{}, false, fmt.Errorf("postgres: definition %s version %d: %w", def.Name, def.Version, storage.ErrDefinitionConflict)
	}
	if deleted {
		return storage.Definition{}, false, errDeletedMeanwhile
	}
	stored, err = d.DefinitionGet(ctx, def.Name, def.Version)
	if err != nil {
		return storage.Definition{}, false, fmt.Errorf("postgres: definition put: %w", err)
	}
	return stored, false, nil
}

// DefinitionSetDisabled disables or enables a version; see storage.Driver.
func (d *Driver) DefinitionSetDisabled(ctx context.Context, params *storage.DefinitionSetDisabledParams) (storage.Definition, error) {
	if params == nil {
		return storage.Definition{}, fmt.Errorf("postgres: definition set disabled: %w: nil params", storage.ErrInvalid)
	}
	if err := params.Validate(); err != nil {
		return storage.Definition{}, fmt.Errorf("postgres: definition set disabled: %w", err)
	}
	def, err := scanDefinition(d.pool.QueryRow(ctx, `
		UPDATE definitions SET disabled = $3
		WHERE name = $1 AND version = $2 AND NOT deleted
		RETURNING `+definitionColumns, params.Name, params.Version, params.Disabled))
	if errors.Is(err, pgx.ErrNoRows) {
		return storage.Definition{}, fmt.Errorf("postgres: definition %s version %d: %w", params.Name, params.Version, storage.ErrNotFound)
	}
	if err != nil {
		return storage.Definition{}, fmt.Errorf("postgres: definition set disabled: %w", err)
	}
	return def, nil
}

// DefinitionDelete deletes a version no unfinished saga runs on; see
// storage.Driver. Locking the version's row first waits for the commits
// that start sagas on it (they hold it FOR SHARE, see sqlLockDefinitions)
// and keeps new ones out; the count that follows, a statement of its own
// at READ COMMITTED, sees the sagas they started.
func (d *Driver) DefinitionDelete(ctx context.Context, params *storage.DefinitionDeleteParams) error {
	if params == nil {
		return fmt.Errorf("postgres: definition delete: %w: nil params", storage.ErrInvalid)
	}
	if err := params.Validate(); err != nil {
		return fmt.Errorf("postgres: definition delete: %w", err)
	}
	err := d.inTx(ctx, func(tx pgx.Tx) error {
		var one int
		err := tx.QueryRow(ctx, `SELECT 1 FROM definitions WHERE name = $1 AND version = $2 AND NOT deleted FOR UPDATE`,
			params.Name, params.Version).Scan(&one)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("definition %s version %d: %w", params.Name, params.Version, storage.ErrNotFound)
		}
		if err != nil {
			return err
		}
		var users int
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM sagas WHERE definition = $1 AND definition_version = $2
			AND (NOT terminal OR status = ANY($3::text[]))`,
			params.Name, params.Version, append([]string{}, params.InUseStatuses...)).Scan(&users); err != nil {
			return err
		}
		if users > 0 {
			return &storage.DefinitionInUseError{Name: params.Name, Version: params.Version, Sagas: users}
		}
		_, err = tx.Exec(ctx, `UPDATE definitions SET deleted = true, disabled = false, content = ''::bytea WHERE name = $1 AND version = $2`,
			params.Name, params.Version)
		return err
	})
	if err != nil {
		return fmt.Errorf("postgres: definition delete: %w", err)
	}
	return nil
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
		WHERE name = $1 AND NOT deleted AND (version = $2 OR ($2 = 0 AND NOT disabled))
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
		WHERE ($1 = '' OR name = $1) AND (name, version) > ($2, $3) AND NOT deleted
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
