package main

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/accord-saga/accord/internal/server"
	"github.com/accord-saga/accord/internal/storage"
	"github.com/accord-saga/accord/internal/storage/sqlite"
)

func newBackupCommand() *cobra.Command {
	cfg := server.DefaultConfig()
	var out string
	cmd := &cobra.Command{
		Use:   "backup --out FILE",
		Short: "Write a consistent copy of the embedded store, while the server runs",
		Long: `Write a consistent copy of the embedded store in --data into the new file
--out. The server may keep running: the copy is one snapshot of the store,
holding every write acknowledged before the backup began. Restore it with
accord restore. A PostgreSQL store is backed up with pg_dump or point-in-time
recovery instead (see docs/operations.md).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfg.DatabaseURL != "" {
				return &exitError{code: 2, err: errors.New("a PostgreSQL store is backed up with pg_dump or point-in-time recovery, not accord backup (see docs/operations.md)")}
			}
			if out == "" {
				return &exitError{code: 2, err: errors.New("--out is required")}
			}
			start := time.Now()
			info, err := server.BackupStore(cmd.Context(), cfg.DataDir, out)
			if err != nil {
				return backupError(err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "backed up %s to %s: %d bytes, schema %d, %d partitions, in %s\n",
				cfg.DataDir, out, info.Bytes, info.SchemaVersion, info.Partitions, time.Since(start).Round(time.Millisecond))
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.DataDir, "data", cfg.DataDir, "directory of the embedded store to back up")
	f.StringVar(&cfg.DatabaseURL, "database-url", cfg.DatabaseURL, "set when the server uses PostgreSQL: then this command refuses and points to pg_dump")
	f.StringVar(&out, "out", "", "the backup file to write; it must not exist")
	bindEnv(cmd)
	return cmd
}

func newRestoreCommand() *cobra.Command {
	cfg := server.DefaultConfig()
	var from string
	cmd := &cobra.Command{
		Use:   "restore --from FILE --data DIR",
		Short: "Make a new data directory from a backup",
		Long: `Check the backup file --from (whole, an Accord store this binary can open)
and make --data a store holding it. --data must not exist or be empty: a
restore never replaces a store. Then start the server on --data.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if from == "" {
				return &exitError{code: 2, err: errors.New("--from is required")}
			}
			start := time.Now()
			info, err := server.RestoreStore(cmd.Context(), from, cfg.DataDir)
			if err != nil {
				return backupError(err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "restored %s into %s: %d bytes, schema %d, %d partitions, in %s\n",
				from, cfg.DataDir, info.Bytes, info.SchemaVersion, info.Partitions, time.Since(start).Round(time.Millisecond))
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&from, "from", "", "backup file written by accord backup")
	f.StringVar(&cfg.DataDir, "data", cfg.DataDir, "new (or empty) directory to restore into")
	bindEnv(cmd)
	return cmd
}

// backupError gives refusals caused by the input (a target that exists, a
// file that is not a store) exit code 2, like bad configuration.
func backupError(err error) error {
	if errors.Is(err, storage.ErrNotAStore) || errors.Is(err, os.ErrNotExist) ||
		errors.Is(err, sqlite.ErrExists) || errors.Is(err, server.ErrNotEmpty) {
		return &exitError{code: 2, err: err}
	}
	return err
}
