package sqlite

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/accord-saga/accord/internal/storage"
)

const (
	definitionColumns   = `name, version, content, hash, created_at, disabled`
	sqlDefinitionGet    = `SELECT ` + definitionColumns + ` FROM definitions WHERE name = ? AND version = ? AND NOT deleted`
	sqlDefinitionLatest = `SELECT ` + definitionColumns + ` FROM definitions WHERE name = ? AND NOT deleted AND NOT disabled
		ORDER BY version DESC LIMIT 1`
	sqlDefinitionList = `SELECT ` + definitionColumns + ` FROM definitions
		WHERE (?1 = '' OR name = ?1) AND (name > ?2 OR (name = ?2 AND version > ?3)) AND NOT deleted
		ORDER BY name, version LIMIT ?4`
	// sqlDefinitionAny reads a version, deleted or not, for DefinitionPut.
	sqlDefinitionAny = `SELECT hash, deleted FROM definitions WHERE name = ? AND version = ?`
	// A deleted version (checked to have the same hash) is revived in place.
	sqlDefinitionInsert = `INSERT INTO definitions (name, version, content, hash, created_at) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (name, version) DO UPDATE SET content = excluded.content, created_at = excluded.created_at,
			disabled = 0, deleted = 0
		WHERE definitions.deleted AND definitions.hash = excluded.hash`
	sqlDefinitionSetDisabled = `UPDATE definitions SET disabled = ? WHERE name = ? AND version = ? AND NOT deleted`
	sqlDefinitionDelete      = `UPDATE definitions SET deleted = 1, disabled = 0, content = x'' WHERE name = ? AND version = ? AND NOT deleted`
	// ?3 is a JSON array of the terminal statuses that count too.
	sqlDefinitionUsers = `SELECT count(*) FROM sagas WHERE definition = ?1 AND definition_version = ?2
		AND (terminal = 0 OR status IN (SELECT value FROM json_each(?3)))`
	sqlDefinitionLive = `SELECT count(*) FROM definitions WHERE name = ? AND version = ? AND NOT deleted`
)

// DefinitionPut registers a definition version; see storage.Driver.
func (d *Driver) DefinitionPut(ctx context.Context, def *storage.Definition) (storage.Definition, bool, error) {
	if def == nil {
		return storage.Definition{}, false, fmt.Errorf("sqlite: definition put: %w: nil definition", storage.ErrInvalid)
	}
	if err := checkName("definition name", def.Name); err != nil {
		return storage.Definition{}, false, fmt.Errorf("sqlite: definition put: %w", err)
	}
	if def.Version < 1 {
		return storage.Definition{}, false, fmt.Errorf("sqlite: definition put: %w: version %d must be >= 1", storage.ErrInvalid, def.Version)
	}
	if err := checkName("definition hash", def.Hash); err != nil {
		return storage.Definition{}, false, fmt.Errorf("sqlite: definition put: %w", err)
	}
	if len(def.Content) > storage.MaxPayloadBytes {
		return storage.Definition{}, false, fmt.Errorf("sqlite: definition put: %w: content larger than %d bytes", storage.ErrInvalid, storage.MaxPayloadBytes)
	}
	var stored storage.Definition
	var created bool
	err := d.w.exec(ctx, func(tx *wtx) error {
		var hash string
		var deleted bool
		err := tx.s.definitionAny.QueryRow(def.Name, def.Version).Scan(&hash, &deleted)
		switch {
		case err == nil && hash != def.Hash:
			return fmt.Errorf("sqlite: definition %s version %d: %w", def.Name, def.Version, storage.ErrDefinitionConflict)
		case err == nil && !deleted:
			cur, err := scanDefinition(tx.s.definitionGet.QueryRow(def.Name, def.Version))
			if err != nil {
				return fmt.Errorf("sqlite: definition put %s version %d: %w", def.Name, def.Version, err)
			}
			if !bytes.Equal(cur.Content, def.Content) {
				return fmt.Errorf("sqlite: definition %s version %d: %w", def.Name, def.Version, storage.ErrDefinitionConflict)
			}
			stored, created = cur, false
			return nil
		case err != nil && !errors.Is(err, sql.ErrNoRows):
			return fmt.Errorf("sqlite: definition put %s version %d: %w", def.Name, def.Version, err)
		}
		content := def.Content
		if content == nil {
			content = []byte{} // NOT NULL column
		}
		if _, err := tx.s.definitionInsert.Exec(def.Name, def.Version, content, def.Hash, tx.now); err != nil {
			return fmt.Errorf("sqlite: definition put %s version %d: %w", def.Name, def.Version, err)
		}
		stored = storage.Definition{Name: def.Name, Version: def.Version, Content: bytes.Clone(def.Content), Hash: def.Hash, CreatedAt: fromMicros(tx.now)}
		created = true
		return nil
	})
	if err != nil {
		return storage.Definition{}, false, err
	}
	return stored, created, nil
}

// DefinitionSetDisabled disables or enables a version; see storage.Driver.
func (d *Driver) DefinitionSetDisabled(ctx context.Context, params *storage.DefinitionSetDisabledParams) (storage.Definition, error) {
	if params == nil {
		return storage.Definition{}, fmt.Errorf("sqlite: definition set disabled: %w: nil params", storage.ErrInvalid)
	}
	if err := params.Validate(); err != nil {
		return storage.Definition{}, fmt.Errorf("sqlite: definition set disabled: %w", err)
	}
	var stored storage.Definition
	err := d.w.exec(ctx, func(tx *wtx) error {
		r, err := tx.conn.ExecContext(ctx, sqlDefinitionSetDisabled, boolInt(params.Disabled), params.Name, params.Version)
		if err != nil {
			return fmt.Errorf("sqlite: definition set disabled %s version %d: %w", params.Name, params.Version, err)
		}
		if n, err := r.RowsAffected(); err != nil || n == 0 {
			return fmt.Errorf("sqlite: definition %s version %d: %w", params.Name, params.Version, storage.ErrNotFound)
		}
		stored, err = scanDefinition(tx.s.definitionGet.QueryRow(params.Name, params.Version))
		if err != nil {
			return fmt.Errorf("sqlite: definition set disabled %s version %d: %w", params.Name, params.Version, err)
		}
		return nil
	})
	if err != nil {
		return storage.Definition{}, err
	}
	return stored, nil
}

// DefinitionDelete deletes a version no unfinished saga runs on; see
// storage.Driver. The count and the delete run in one write transaction,
// and so does every Commit's check of its definitions: SQLite's single
// writer serializes them.
func (d *Driver) DefinitionDelete(ctx context.Context, params *storage.DefinitionDeleteParams) error {
	if params == nil {
		return fmt.Errorf("sqlite: definition delete: %w: nil params", storage.ErrInvalid)
	}
	if err := params.Validate(); err != nil {
		return fmt.Errorf("sqlite: definition delete: %w", err)
	}
	return d.w.exec(ctx, func(tx *wtx) error {
		var live, users int
		if err := tx.s.definitionLive.QueryRow(params.Name, params.Version).Scan(&live); err != nil {
			return fmt.Errorf("sqlite: definition delete %s version %d: %w", params.Name, params.Version, err)
		}
		if live == 0 {
			return fmt.Errorf("sqlite: definition %s version %d: %w", params.Name, params.Version, storage.ErrNotFound)
		}
		statuses, err := json.Marshal(append([]string{}, params.InUseStatuses...))
		if err != nil {
			return fmt.Errorf("sqlite: definition delete: %w", err)
		}
		if err := tx.conn.QueryRowContext(ctx, sqlDefinitionUsers, params.Name, params.Version, string(statuses)).Scan(&users); err != nil {
			return fmt.Errorf("sqlite: definition delete %s version %d: %w", params.Name, params.Version, err)
		}
		if users > 0 {
			return &storage.DefinitionInUseError{Name: params.Name, Version: params.Version, Sagas: users}
		}
		if _, err := tx.conn.ExecContext(ctx, sqlDefinitionDelete, params.Name, params.Version); err != nil {
			return fmt.Errorf("sqlite: definition delete %s version %d: %w", params.Name, params.Version, err)
		}
		return nil
	})
}

// checkDefinitions fails a commit that starts a saga on a definition version
// that is absent or deleted.
func (tx *wtx) checkDefinitions(p *storage.CommitParams) error {
	for _, ref := range p.Definitions {
		var n int
		if err := tx.s.definitionLive.QueryRow(ref.Name, ref.Version).Scan(&n); err != nil {
			return fmt.Errorf("sqlite: commit: read definition %s version %d: %w", ref.Name, ref.Version, err)
		}
		if n == 0 {
			return fmt.Errorf("sqlite: commit: definition %s version %d: %w", ref.Name, ref.Version, storage.ErrDefinitionDeleted)
		}
	}
	return nil
}

// DefinitionGet returns a definition version; version 0 is the latest.
func (d *Driver) DefinitionGet(ctx context.Context, name string, version int) (storage.Definition, error) {
	if err := checkName("definition name", name); err != nil {
		return storage.Definition{}, fmt.Errorf("sqlite: definition get: %w", err)
	}
	if version < 0 {
		return storage.Definition{}, fmt.Errorf("sqlite: definition get: %w: version %d", storage.ErrInvalid, version)
	}
	var row *sql.Row
	if version == 0 {
		row = d.r.definitionLatest.QueryRowContext(ctx, name)
	} else {
		row = d.r.definitionGet.QueryRowContext(ctx, name, version)
	}
	def, err := scanDefinition(row)
	if errors.Is(err, sql.ErrNoRows) {
		return storage.Definition{}, fmt.Errorf("sqlite: definition %s version %d: %w", name, version, storage.ErrNotFound)
	}
	if err != nil {
		return storage.Definition{}, fmt.Errorf("sqlite: definition get %s version %d: %w", name, version, err)
	}
	return def, nil
}

// DefinitionList lists definitions by name, then version, after the cursor.
func (d *Driver) DefinitionList(ctx context.Context, params *storage.DefinitionListParams) ([]storage.Definition, error) {
	if params == nil {
		return nil, fmt.Errorf("sqlite: definition list: %w: nil params", storage.ErrInvalid)
	}
	if err := storage.CheckLimit(params.Limit); err != nil {
		return nil, fmt.Errorf("sqlite: definition list: %w", err)
	}
	rows, err := d.r.definitionList.QueryContext(ctx, params.Name, params.AfterName, params.AfterVersion, params.Limit)
	if err != nil {
		return nil, fmt.Errorf("sqlite: definition list: %w", err)
	}
	defer rows.Close()
	var out []storage.Definition
	for rows.Next() {
		def, err := scanDefinition(rows)
		if err != nil {
			return nil, fmt.Errorf("sqlite: definition list: %w", err)
		}
		out = append(out, def)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: definition list: %w", err)
	}
	return out, nil
}

func scanDefinition(row rowScanner) (storage.Definition, error) {
	var def storage.Definition
	var created int64
	if err := row.Scan(&def.Name, &def.Version, &def.Content, &def.Hash, &created, &def.Disabled); err != nil {
		return storage.Definition{}, err
	}
	def.CreatedAt = fromMicros(created)
	return def, nil
}
