package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/accord-saga/accord/sdk/client"
)

// Exit codes of the client commands, for scripts.
const (
	codeError       = 1
	codeUsage       = 2 // bad flags, arguments or input
	codeNotFound    = 3
	codeConflict    = 4 // conflict, failed precondition, idempotency key reuse
	codeUnavailable = 5 // the server is unreachable or cannot serve now
	codeSagaFailed  = 6 // start --wait / watch: the saga ended other than completed
)

// exitCodesHelp documents the exit codes in --help.
const exitCodesHelp = `Exit codes:
  0  success (start --wait and watch: the saga completed)
  1  other error
  2  bad usage or input (flags, arguments, a definition or input the server refused)
  3  not found
  4  conflict (definition version with other content, saga ended or past its pivot,
     stale If-Match, idempotency key reused)
  5  server unavailable (unreachable, overloaded, shutting down)
  6  start --wait and watch: the saga ended compensated, cancelled or needs_operator`

// DefaultServer is the server the client commands call without --server or
// ACCORD_SERVER.
const DefaultServer = "http://127.0.0.1:7780"

// clientFlags are the flags every client command has.
type clientFlags struct {
	server string
	output string
}

func (f *clientFlags) register(cmd *cobra.Command) {
	pf := cmd.PersistentFlags()
	pf.StringVar(&f.server, "server", DefaultServer, "URL of the Accord server [ACCORD_SERVER]")
	pf.StringVarP(&f.output, "output", "o", "table", "output format: table or json [ACCORD_OUTPUT]")
}

// resolve applies ACCORD_SERVER and ACCORD_OUTPUT to flags not given, and
// checks them.
func (f *clientFlags) resolve(cmd *cobra.Command) error {
	for name, dst := range map[string]*string{"server": &f.server, "output": &f.output} {
		if fl := cmd.Flags().Lookup(name); fl != nil && !fl.Changed {
			if v, ok := os.LookupEnv(envName(name)); ok && v != "" {
				*dst = v
			}
		}
	}
	if f.output != "table" && f.output != "json" {
		return usageErr(fmt.Errorf("--output must be table or json, not %q", f.output))
	}
	return nil
}

func (f *clientFlags) client() (*client.Client, error) {
	c, err := client.New(f.server, client.WithUserAgent("accord-cli/"+version))
	if err != nil {
		return nil, usageErr(err)
	}
	return c, nil
}

func usageErr(err error) error { return &exitError{code: codeUsage, err: err} }

// apiErr gives an error of the server the exit code scripts rely on.
func apiErr(err error) error {
	if err == nil {
		return nil
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return err
	}
	code := codeError
	switch {
	case client.IsNotFound(err):
		code = codeNotFound
	case client.IsConflict(err), client.IsPreconditionFailed(err), client.IsIdempotencyMismatch(err):
		code = codeConflict
	case client.IsInvalid(err):
		code = codeUsage
	case client.IsUnavailable(err):
		code = codeUnavailable
	}
	return &exitError{code: code, err: trimmed{err}}
}

// trimmed drops the client's "accord: " prefix, which main prints already.
type trimmed struct{ error }

func (t trimmed) Error() string { return strings.TrimPrefix(t.error.Error(), "accord: ") }
func (t trimmed) Unwrap() error { return t.error }

// clientGroup builds a parent command whose usage errors exit with 2.
func clientGroup(use, short, long string, flags *clientFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Long:  long + "\n\n" + exitCodesHelp,
		Args: func(cmd *cobra.Command, a []string) error {
			if len(a) > 0 {
				return usageErr(fmt.Errorf("unknown command %q for %q", a[0], cmd.CommandPath()))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			return usageErr(fmt.Errorf("%s needs a subcommand; see accord %s --help", use, use))
		},
	}
	flags.register(cmd)
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageErr(err) })
	cmd.PersistentPreRunE = func(cmd *cobra.Command, _ []string) error { return flags.resolve(cmd) }
	return cmd
}

// args checks the positional arguments; a mismatch exits with 2.
func args(n int, names string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, a []string) error {
		if len(a) != n {
			return usageErr(fmt.Errorf("%s wants %s, got %d arguments", cmd.CommandPath(), names, len(a)))
		}
		return nil
	}
}

// printJSON writes v as indented JSON.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// table writes aligned columns.
type table struct{ tw *tabwriter.Writer }

func newTable(w io.Writer, header ...string) *table {
	t := &table{tw: tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)}
	t.row(header...)
	return t
}

func (t *table) row(cells ...string) { fmt.Fprintln(t.tw, strings.Join(cells, "\t")) }

func (t *table) flush() error { return t.tw.Flush() }

// human shows a time for people: how long ago, and the local time for
// older ones.
func human(ts time.Time) string {
	if ts.IsZero() {
		return "-"
	}
	d := time.Since(ts)
	switch {
	case d < 0:
		return ts.Local().Format("2006-01-02 15:04:05")
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 24*time.Hour:
		return fmt.Sprintf("%dh%02dm ago", int(d.Hours()), int(d.Minutes())%60)
	default:
		return ts.Local().Format("2006-01-02 15:04")
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// newClientCommands returns the commands that call a server.
func newClientCommands() []*cobra.Command {
	return []*cobra.Command{newDefinitionCommand(), newSagaCommand(),
		newTopicCommand(), newGroupCommand(), newDLQCommand(), newTraceCommand(), newStalledCommand()}
}
