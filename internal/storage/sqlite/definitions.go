package sqlite

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/accord-saga/accord/internal/storage"
)

const (
	sqlDefinitionGet    = `SELECT name, version, content, hash, created_at FROM definitions WHERE name = ? AND version = ?`
	sqlDefinitionLatest = `SELECT name, version, content, hash, created_at FROM definitions WHERE name = ? ORDER BY version DESC LIMIT 1`
	sqlDefinitionInsert = `INSERT INTO definitions (name, version, content, hash, created_at) VALUES (?, ?, ?, ?, ?)`
	sqlDefinitionList   = `SELECT name, version, content, hash, created_at FROM definitions
		WHERE (?1 = '' OR name = ?1) AND (name > ?2 OR (name = ?2 AND version > ?3))
		ORDER BY name, version LIMIT ?4`
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
		cur, err := scanDefinition(tx.s.definitionGet.QueryRow(def.Name, def.Version))
		switch {
		case err == nil && cur.Hash == def.Hash && bytes.Equal(cur.Content, def.Content):
			stored, created = cur, false
			return nil
		case err == nil:
			return fmt.Errorf("sqlite: definition %s version %d: %w", def.Name, def.Version, storage.ErrDefinitionConflict)
		case !errors.Is(err, sql.ErrNoRows):
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
	if err := row.Scan(&def.Name, &def.Version, &def.Content, &def.Hash, &created); err != nil {
		return storage.Definition{}, err
	}
	def.CreatedAt = fromMicros(created)
	return def, nil
}
