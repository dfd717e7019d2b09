package main

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/accord-saga/accord/internal/buildinfo"
	"github.com/accord-saga/accord/internal/storage/postgres"
	"github.com/accord-saga/accord/internal/storage/sqlite"
)

// versionInfo is what `accord version` prints: the build, and the store
// schema versions this binary creates and upgrades to (it opens stores of
// any version up to these, and refuses newer ones).
type versionInfo struct {
	buildinfo.Info
	Schema struct {
		SQLite   int `json:"sqlite"`
		Postgres int `json:"postgres"`
	} `json:"schema_version"`
}

func newVersionCommand() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the version, commit, build date, Go version and store schema versions",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			v := versionInfo{Info: buildinfo.Read()}
			v.Schema.SQLite = sqlite.SchemaVersion()
			v.Schema.Postgres = postgres.SchemaVersion
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(v)
			}
			commit := v.Commit
			if v.Modified {
				commit += " (modified)"
			}
			date := v.BuildDate
			if date == "" {
				date = "unknown"
			}
			_, err := fmt.Fprintf(out, "accord %s\ncommit:         %s\nbuilt:          %s\ngo:             %s %s\nstore schema:   sqlite %d, postgres %d\n",
				v.Version, commit, date, v.GoVersion, v.Platform, v.Schema.SQLite, v.Schema.Postgres)
			return err
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
