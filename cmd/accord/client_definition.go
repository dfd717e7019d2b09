package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/accord-saga/accord/sdk/client"
)

func newDefinitionCommand() *cobra.Command {
	var flags clientFlags
	cmd := clientGroup("definition", "Register, read, disable and delete saga definitions",
		"Register saga definitions (JSON or YAML, see docs/sagas.md), read registered versions, and disable, enable or delete a version.", &flags)
	cmd.Aliases = []string{"definitions", "def"}
	cmd.AddCommand(newDefinitionApply(&flags), newDefinitionList(&flags), newDefinitionGet(&flags),
		newDefinitionSetEnabled(&flags, false), newDefinitionSetEnabled(&flags, true), newDefinitionDelete(&flags))
	return cmd
}

func newDefinitionApply(flags *clientFlags) *cobra.Command {
	var file, ifMatch string
	cmd := &cobra.Command{
		Use:   "apply -f FILE",
		Short: "Register a definition version",
		Long: `Register the definition in FILE (- reads standard input). A .json file is
sent as JSON, a .yaml or .yml file as YAML; otherwise the content decides.
Registering identical content again changes nothing; other content under a
registered name and version is a conflict (exit 4).`,
		Args: args(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return usageErr(fmt.Errorf("--file is required"))
			}
			doc, err := readDocument(cmd, file)
			if err != nil {
				return usageErr(err)
			}
			c, err := flags.client()
			if err != nil {
				return err
			}
			var def *client.Definition
			var created bool
			if ifMatch != "" {
				def, created, err = c.RegisterDefinitionIfMatch(cmd.Context(), doc, contentTypeOf(file, doc), ifMatch)
			} else {
				def, created, err = c.RegisterDefinition(cmd.Context(), doc, contentTypeOf(file, doc))
			}
			if err != nil {
				return apiErr(err)
			}
			out := cmd.OutOrStdout()
			if flags.output == "json" {
				return printJSON(out, struct {
					*client.Definition
					Created bool `json:"created"`
				}{def, created})
			}
			what := "unchanged (registered before)"
			if created {
				what = "registered"
			}
			fmt.Fprintf(out, "definition %s version %d %s\n", def.Name, def.Version, what)
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "definition file (JSON or YAML); - for standard input")
	cmd.Flags().StringVar(&ifMatch, "if-match", "", "register only if the name's latest version still has this ETag (see definition get)")
	return cmd
}

func readDocument(cmd *cobra.Command, name string) ([]byte, error) {
	if name == "-" {
		return io.ReadAll(io.LimitReader(cmd.InOrStdin(), 16<<20))
	}
	return os.ReadFile(name)
}

// contentTypeOf tells JSON from YAML by the file's extension, else by its
// first character.
func contentTypeOf(name string, doc []byte) string {
	switch strings.ToLower(filepath.Ext(name)) {
	case ".json":
		return client.ContentTypeJSON
	case ".yaml", ".yml":
		return client.ContentTypeYAML
	}
	if t := bytes.TrimSpace(doc); len(t) > 0 && t[0] == '{' {
		return client.ContentTypeJSON
	}
	return client.ContentTypeYAML
}

func newDefinitionList(flags *clientFlags) *cobra.Command {
	var name string
	var limit int
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List definition versions",
		Args:  args(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if limit < 1 {
				return usageErr(fmt.Errorf("--limit must be at least 1"))
			}
			c, err := flags.client()
			if err != nil {
				return err
			}
			var items []client.DefinitionSummary
			for page, err := range c.DefinitionPages(cmd.Context(), client.DefinitionListOptions{Name: name, Limit: min(limit, 500)}) {
				if err != nil {
					return apiErr(err)
				}
				items = append(items, page.Items...)
				if len(items) >= limit {
					items = items[:limit]
					break
				}
			}
			out := cmd.OutOrStdout()
			if flags.output == "json" {
				return printJSON(out, items)
			}
			t := newTable(out, "NAME", "VERSION", "ENABLED", "HASH", "REGISTERED")
			for _, d := range items {
				t.row(d.Name, strconv.Itoa(d.Version), strconv.FormatBool(d.Enabled), short(d.Hash, 12), human(d.CreatedAt))
			}
			return t.flush()
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "only versions of this definition")
	cmd.Flags().IntVar(&limit, "limit", 100, "most versions to show")
	return cmd
}

func newDefinitionGet(flags *clientFlags) *cobra.Command {
	var version int
	cmd := &cobra.Command{
		Use:   "get NAME",
		Short: "Show a definition version (the latest by default)",
		Long:  "Show a registered definition version in its canonical form: every default written out.",
		Args:  args(1, "a definition name"),
		RunE: func(cmd *cobra.Command, a []string) error {
			if version < 0 {
				return usageErr(fmt.Errorf("--version must be positive"))
			}
			c, err := flags.client()
			if err != nil {
				return err
			}
			def, err := c.GetDefinition(cmd.Context(), a[0], version)
			if err != nil {
				return apiErr(err)
			}
			out := cmd.OutOrStdout()
			if flags.output == "json" {
				return printJSON(out, def)
			}
			fmt.Fprintf(out, "name:       %s\nversion:    %d\nenabled:    %t\nhash:       %s\netag:       %s\nregistered: %s\n\n",
				def.Name, def.Version, def.Enabled, def.Hash, def.ETag, human(def.CreatedAt))
			var pretty bytes.Buffer
			if err := json.Indent(&pretty, def.Definition, "", "  "); err != nil {
				pretty.Reset()
				pretty.Write(def.Definition)
			}
			pretty.WriteByte('\n')
			_, err = out.Write(pretty.Bytes())
			return err
		},
	}
	cmd.Flags().IntVar(&version, "version", 0, "version to show; 0 is the latest enabled version")
	return cmd
}

// definitionVersionCommand is a command on one definition version,
// NAME VERSION: run gets the client and the version.
func definitionVersionCommand(flags *clientFlags, use, short, long string,
	run func(cmd *cobra.Command, c *client.Client, name string, version int) error) *cobra.Command {
	return &cobra.Command{
		Use:   use + " NAME VERSION",
		Short: short,
		Long:  long,
		Args:  args(2, "a definition name and version"),
		RunE: func(cmd *cobra.Command, a []string) error {
			v, err := strconv.Atoi(a[1])
			if err != nil || v < 1 {
				return usageErr(fmt.Errorf("VERSION must be a positive integer, not %q", a[1]))
			}
			c, err := flags.client()
			if err != nil {
				return err
			}
			return run(cmd, c, a[0], v)
		},
	}
}

func newDefinitionSetEnabled(flags *clientFlags, enable bool) *cobra.Command {
	use, short, long := "disable", "Disable a definition version",
		`No saga starts on a disabled version (a start that names it is refused),
and the latest is the newest enabled version; sagas running on it go on.`
	if enable {
		use, short, long = "enable", "Enable a disabled definition version again", ""
	}
	return definitionVersionCommand(flags, use, short, long, func(cmd *cobra.Command, c *client.Client, name string, version int) error {
		var def *client.Definition
		var err error
		if enable {
			def, err = c.EnableDefinition(cmd.Context(), name, version)
		} else {
			def, err = c.DisableDefinition(cmd.Context(), name, version)
		}
		if err != nil {
			return apiErr(err)
		}
		out := cmd.OutOrStdout()
		if flags.output == "json" {
			return printJSON(out, def)
		}
		fmt.Fprintf(out, "definition %s version %d %sd\n", def.Name, def.Version, use)
		return nil
	})
}

func newDefinitionDelete(flags *clientFlags) *cobra.Command {
	return definitionVersionCommand(flags, "delete", "Delete a definition version no unfinished saga uses",
		`Delete a definition version. It is refused (exit 4) while unfinished sagas,
needs_operator included, run on it; disable it first so that no new saga
starts on it, and delete it once they have ended. Ended sagas of the
version stay readable. Registering the same content again brings the
version back; other content under its number is refused.`,
		func(cmd *cobra.Command, c *client.Client, name string, version int) error {
			if err := c.DeleteDefinition(cmd.Context(), name, version); err != nil {
				return apiErr(err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "definition %s version %d deleted\n", name, version)
			return nil
		})
}

func short(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
