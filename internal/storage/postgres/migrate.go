package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/accord-saga/accord/internal/storage"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// migration is one numbered, embedded schema change.
type migration struct {
	version int
	name    string
	sql     string
}

// migrations are the embedded files in version order. A file name is
// NNN_description.sql; the numbers run 1, 2, 3… without gaps, which the
// package tests check.
var migrations = mustLoadMigrations()

// SchemaVersion is the schema version this binary writes: the number of its
// last migration.
var SchemaVersion = migrations[len(migrations)-1].version

func mustLoadMigrations() []migration {
	entries, err := fs.ReadDir(migrationFS, "migrations")
	if err != nil {
		panic(fmt.Sprintf("postgres: read embedded migrations: %v", err))
	}
	var ms []migration
	for _, e := range entries {
		num, _, ok := strings.Cut(e.Name(), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 {
			panic(fmt.Sprintf("postgres: migration file %q is not named NNN_description.sql", e.Name()))
		}
		b, err := fs.ReadFile(migrationFS, "migrations/"+e.Name())
		if err != nil {
			panic(fmt.Sprintf("postgres: read migration %s: %v", e.Name(), err))
		}
		ms = append(ms, migration{version: v, name: e.Name(), sql: string(b)})
	}
	slices.SortFunc(ms, func(a, b migration) int { return a.version - b.version })
	for i, m := range ms {
		if m.version != i+1 {
			panic(fmt.Sprintf("postgres: migration %s: expected version %d", m.name, i+1))
		}
	}
	return ms
}

// Keys of the meta table.
const (
	metaSchemaVersion = "schema_version"
	metaPartitions    = "partitions"
)

// migrate creates the store in cfg.Schema or brings it up to SchemaVersion,
// and returns its partition count. It runs in one transaction under an
// advisory lock on the schema's name, so that nodes starting together apply
// each migration once; a failure leaves the schema as it was.
func migrate(ctx context.Context, pool *pgxpool.Pool, cfg Config) (partitions int, err error) {
	tx, err := pool.BeginTx(ctx, pgx.TxOptions{})
	if err != nil {
		return 0, fmt.Errorf("postgres: migrate: begin: %w", err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback(context.WithoutCancel(ctx))
		}
	}()

	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended('accord.migrate.' || $1, 0))`, cfg.Schema); err != nil {
		return 0, fmt.Errorf("postgres: migrate: lock: %w", err)
	}
	var schemaExists, hasMeta bool
	var relations int
	err = tx.QueryRow(ctx, `
		SELECT
			EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1),
			EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
			        WHERE n.nspname = $1 AND c.relname = 'meta' AND c.relkind = 'r'),
			(SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
			 WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'v', 'm', 'f'))`,
		cfg.Schema).Scan(&schemaExists, &hasMeta, &relations)
	if err != nil {
		return 0, fmt.Errorf("postgres: migrate: inspect schema %s: %w", cfg.Schema, err)
	}
	if !hasMeta && relations > 0 {
		return 0, fmt.Errorf("%w: schema %q holds %d tables and no accord meta table", storage.ErrNotAStore, cfg.Schema, relations)
	}
	if !schemaExists {
		// The name was checked against schemaName: safe unquoted.
		if _, err := tx.Exec(ctx, "CREATE SCHEMA "+cfg.Schema); err != nil {
			return 0, fmt.Errorf("postgres: migrate: create schema %s: %w", cfg.Schema, err)
		}
	}
	if _, err := tx.Exec(ctx, "SET LOCAL search_path TO "+cfg.Schema); err != nil {
		return 0, fmt.Errorf("postgres: migrate: set search_path: %w", err)
	}

	version := 0
	if hasMeta {
		err := tx.QueryRow(ctx, `SELECT value FROM meta WHERE key = $1`, metaSchemaVersion).Scan(&version)
		if errors.Is(err, pgx.ErrNoRows) {
			return 0, fmt.Errorf("%w: schema %q has a meta table without a schema version", storage.ErrNotAStore, cfg.Schema)
		}
		if err != nil {
			return 0, fmt.Errorf("postgres: migrate: read schema version: %w", err)
		}
	}
	if version > SchemaVersion {
		return 0, &storage.SchemaTooNewError{StoreVersion: version, BinaryVersion: SchemaVersion}
	}
	for _, m := range migrations[version:] {
		if _, err := tx.Exec(ctx, m.sql); err != nil {
			return 0, fmt.Errorf("postgres: migrate: apply %s: %w", m.name, err)
		}
	}
	if version == 0 {
		if _, err := tx.Exec(ctx, `INSERT INTO meta (key, value) VALUES ($1, $2)`, metaPartitions, cfg.Partitions); err != nil {
			return 0, fmt.Errorf("postgres: migrate: record partitions: %w", err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO partitions (partition) SELECT generate_series(0, $1::integer - 1)`, cfg.Partitions); err != nil {
			return 0, fmt.Errorf("postgres: migrate: create partitions: %w", err)
		}
	}
	if version != SchemaVersion {
		if _, err := tx.Exec(ctx, `
			INSERT INTO meta (key, value) VALUES ($1, $2)
			ON CONFLICT (key) DO UPDATE SET value = excluded.value`, metaSchemaVersion, SchemaVersion); err != nil {
			return 0, fmt.Errorf("postgres: migrate: record schema version: %w", err)
		}
	}
	if err := tx.QueryRow(ctx, `SELECT value FROM meta WHERE key = $1`, metaPartitions).Scan(&partitions); err != nil {
		return 0, fmt.Errorf("postgres: migrate: read partitions: %w", err)
	}
	if partitions < 1 || partitions > storage.MaxPartitions {
		return 0, fmt.Errorf("%w: schema %q records %d partitions", storage.ErrNotAStore, cfg.Schema, partitions)
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("postgres: migrate: commit: %w", err)
	}
	return partitions, nil
}
