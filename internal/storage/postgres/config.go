package postgres

import (
	"cmp"
	"fmt"
	"regexp"
	"time"

	"github.com/accord-saga/accord/internal/storage"
)

// Defaults for Config fields left zero.
const (
	SchemaDefault         = "accord"
	MaxConnsDefault       = int32(16)
	ConnectTimeoutDefault = 5 * time.Second
)

// Config says where the store lives and how to reach it.
type Config struct {
	// URL is a PostgreSQL connection string (URL or key=value form).
	// Required.
	URL string
	// Schema holds every table of the store, so that several stores (and
	// tests) can share one database. Lowercase letters, digits and
	// underscores, starting with a letter or underscore, at most 63 bytes.
	// Default "accord".
	Schema string
	// Partitions is the partition count of a store created by this Open.
	// An existing store keeps the count it was created with. Default
	// storage.DefaultPartitions; at most storage.MaxPartitions.
	Partitions int
	// MaxConns bounds the connection pool. Default 16.
	MaxConns int32
	// ConnectTimeout bounds each attempt to open a connection, including the
	// check made by Open. A connect_timeout in URL takes precedence.
	// Default 5s.
	ConnectTimeout time.Duration
}

// schemaName keeps schema names to plain identifiers: they are used unquoted
// in search_path and in CREATE SCHEMA, and PostgreSQL truncates identifiers
// longer than 63 bytes, which would silently name another schema.
var schemaName = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

func (c Config) withDefaults() Config {
	c.Schema = cmp.Or(c.Schema, SchemaDefault)
	c.Partitions = cmp.Or(c.Partitions, storage.DefaultPartitions)
	c.MaxConns = cmp.Or(c.MaxConns, MaxConnsDefault)
	c.ConnectTimeout = cmp.Or(c.ConnectTimeout, ConnectTimeoutDefault)
	return c
}

// validate checks a Config whose defaults have been filled.
func (c Config) validate() error {
	if c.URL == "" {
		return fmt.Errorf("%w: postgres: config: URL is required", storage.ErrInvalid)
	}
	if !schemaName.MatchString(c.Schema) {
		return fmt.Errorf("%w: postgres: config: schema %q must match %s", storage.ErrInvalid, c.Schema, schemaName)
	}
	if c.Partitions < 1 || c.Partitions > storage.MaxPartitions {
		return fmt.Errorf("%w: postgres: config: partitions %d out of range [1,%d]", storage.ErrInvalid, c.Partitions, storage.MaxPartitions)
	}
	if c.MaxConns < 1 {
		return fmt.Errorf("%w: postgres: config: max conns %d must be > 0", storage.ErrInvalid, c.MaxConns)
	}
	if c.ConnectTimeout < 0 {
		return fmt.Errorf("%w: postgres: config: negative connect timeout", storage.ErrInvalid)
	}
	return nil
}
