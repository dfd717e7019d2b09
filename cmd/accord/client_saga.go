package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/accord-saga/accord/sdk/client"
)

func newSagaCommand() *cobra.Command {
	var flags clientFlags
	cmd := clientGroup("saga", "Start, inspect, cancel and watch sagas",
		"Start sagas of registered definitions, inspect them, cancel them, resume those that need an operator, and watch them run.", &flags)
	cmd.Aliases = []string{"sagas"}
	cmd.AddCommand(newSagaStart(&flags), newSagaGet(&flags), newSagaList(&flags), newSagaCancel(&flags),
		newSagaRetry(&flags), newSagaDiscard(&flags), newSagaWatch(&flags))
	return cmd
}

func newSagaStart(flags *clientFlags) *cobra.Command {
	var input, key string
	var version int
	var wait bool
	cmd := &cobra.Command{
		Use:   "start DEFINITION",
		Short: "Start a saga",
		Long: `Start a saga of DEFINITION (its latest version unless --version is given).
--input is the saga input, JSON, or @FILE to read it from a file (@- for
standard input). With --idempotency-key, starting again with the same key
returns the same saga. With --wait, wait for the saga to end: exit 0 if it
completed, 6 if it ended otherwise.`,
		Args: args(1, "a definition name"),
		RunE: func(cmd *cobra.Command, a []string) error {
			if version < 0 {
				return usageErr(fmt.Errorf("--version must be positive"))
			}
			in, err := readInput(cmd, input)
			if err != nil {
				return usageErr(err)
			}
			c, err := flags.client()
			if err != nil {
				return err
			}
			req := client.StartRequest{Definition: a[0], Version: version, IdempotencyKey: key}
			if in != nil {
				req.Input = in
			}
			res, err := c.StartSaga(cmd.Context(), req)
			if err != nil {
				return apiErr(err)
			}
			out := cmd.OutOrStdout()
			if !wait {
				if flags.output == "json" {
					return printJSON(out, res)
				}
				what := "started"
				if !res.Created {
					what = "exists (idempotency key used before)"
				}
				fmt.Fprintf(out, "saga %s %s: %s\n", res.ID, what, res.Status)
				return nil
			}
			s, err := c.WaitSaga(cmd.Context(), res.ID)
			if err != nil {
				return waitErr(cmd.Context(), res.ID, apiErr(err))
			}
			if err := printSaga(out, flags.output, s); err != nil {
				return err
			}
			return sagaEnd(s.ID, s.Status)
		},
	}
	f := cmd.Flags()
	f.StringVar(&input, "input", "", "saga input: JSON, or @FILE (@- for standard input)")
	f.IntVar(&version, "version", 0, "definition version; 0 is the latest enabled version")
	f.StringVar(&key, "idempotency-key", "", "makes the start safe to repeat: the same key returns the same saga")
	f.BoolVar(&wait, "wait", false, "wait for the saga to end; exit 6 unless it completed")
	return cmd
}

// readInput reads --input: JSON, or @FILE.
func readInput(cmd *cobra.Command, v string) (json.RawMessage, error) {
	if v == "" {
		return nil, nil
	}
	data := []byte(v)
	if name, ok := strings.CutPrefix(v, "@"); ok {
		var err error
		if name == "-" {
			data, err = io.ReadAll(io.LimitReader(cmd.InOrStdin(), 16<<20))
		} else {
			data, err = os.ReadFile(name)
		}
		if err != nil {
			return nil, fmt.Errorf("--input: %w", err)
		}
	}
	if !json.Valid(data) {
		return nil, fmt.Errorf("--input is not valid JSON")
	}
	return json.RawMessage(data), nil
}

// sagaEnd turns a saga's final status into the exit code.
func sagaEnd(id, status string) error {
	if status == client.StatusCompleted {
		return nil
	}
	return &exitError{code: codeSagaFailed, err: fmt.Errorf("saga %s ended %s", id, status)}
}

func newSagaGet(flags *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "get ID",
		Short: "Show a saga with its steps",
		Args:  args(1, "a saga id"),
		RunE: func(cmd *cobra.Command, a []string) error {
			c, err := flags.client()
			if err != nil {
				return err
			}
			s, err := c.GetSaga(cmd.Context(), a[0])
			if err != nil {
				return apiErr(err)
			}
			return printSaga(cmd.OutOrStdout(), flags.output, s)
		},
	}
}

func printSaga(w io.Writer, format string, s *client.Saga) error {
	if format == "json" {
		return printJSON(w, s)
	}
	fmt.Fprintf(w, "id:         %s\ndefinition: %s (version %d)\nstatus:     %s\n", s.ID, s.Definition, s.DefinitionVersion, s.Status)
	if s.Reason != "" {
		why := s.Reason
		if s.FailedStep != "" {
			why += " (" + s.FailedStep + ")"
		}
		fmt.Fprintf(w, "reason:     %s\n", why)
	}
	if s.Note != "" {
		fmt.Fprintf(w, "note:       %s\n", s.Note)
	}
	fmt.Fprintf(w, "created:    %s\nupdated:    %s\n", human(s.CreatedAt), human(s.UpdatedAt))
	if !s.EndedAt.IsZero() {
		fmt.Fprintf(w, "ended:      %s (took %s)\n", human(s.EndedAt), s.EndedAt.Sub(s.CreatedAt).Round(time.Millisecond))
	}
	fmt.Fprintln(w)
	t := newTable(w, "STEP", "KIND", "STATUS", "ATTEMPTS", "COMPENSATION", "LAST ERROR")
	for _, st := range s.Steps {
		comp := "-"
		if st.Compensation != nil {
			comp = fmt.Sprintf("%d attempts", st.Compensation.Attempts)
			if e := st.Compensation.LastError; e != nil {
				comp += ", " + errText(e)
			}
		}
		t.row(st.Name, st.Kind, st.Status, strconv.Itoa(st.Attempts), comp, errText(st.LastError))
	}
	return t.flush()
}

func errText(e *client.ErrorInfo) string {
	if e == nil {
		return "-"
	}
	s := e.Code
	if e.Message != "" {
		if s != "" {
			s += ": "
		}
		s += e.Message
	}
	return short(orDash(s), 60)
}

func newSagaList(flags *clientFlags) *cobra.Command {
	var statuses []string
	var definition string
	var limit int
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List sagas, newest first",
		Args:  args(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if limit < 1 {
				return usageErr(fmt.Errorf("--limit must be at least 1"))
			}
			c, err := flags.client()
			if err != nil {
				return err
			}
			var items []client.SagaSummary
			opts := client.ListOptions{Status: statuses, Definition: definition, Limit: min(limit, 500)}
			for page, err := range c.SagaPages(cmd.Context(), opts) {
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
			t := newTable(out, "ID", "DEFINITION", "STATUS", "CREATED", "UPDATED")
			for _, s := range items {
				t.row(s.ID, s.Definition+"@"+strconv.Itoa(s.DefinitionVersion), s.Status, human(s.CreatedAt), human(s.UpdatedAt))
			}
			return t.flush()
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&statuses, "status", nil, "only these statuses (repeat, or separate with commas): running, compensating, completed, compensated, cancelled, needs_operator, quarantined, discarded")
	f.StringVar(&definition, "definition", "", "only sagas of this definition")
	f.IntVar(&limit, "limit", 50, "most sagas to show")
	return cmd
}

func newSagaCancel(flags *clientFlags) *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:   "cancel ID",
		Short: "Cancel a saga: it compensates what it has done",
		Long:  "Cancel a saga: it compensates the steps it has done and ends cancelled. A saga past its pivot, or ended, cannot be cancelled (exit 4).",
		Args:  args(1, "a saga id"),
		RunE: func(cmd *cobra.Command, a []string) error {
			c, err := flags.client()
			if err != nil {
				return err
			}
			s, err := c.CancelSaga(cmd.Context(), a[0], reason)
			if err != nil {
				return apiErr(err)
			}
			if flags.output == "json" {
				return printJSON(cmd.OutOrStdout(), s)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "saga %s cancelled: %s\n", s.ID, s.Status)
			return nil
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why; recorded in the saga")
	return cmd
}

func newSagaRetry(flags *clientFlags) *cobra.Command {
	return sagaOperatorCommand(flags, "retry", "Resume a saga that needs an operator",
		"Resume a saga in needs_operator: its failed compensation is tried again with a fresh retry budget. Any other saga: exit 4.",
		"resumed", (*client.Client).RetrySaga)
}

func newSagaDiscard(flags *clientFlags) *cobra.Command {
	return sagaOperatorCommand(flags, "discard", "Discard a quarantined saga",
		"End a quarantined saga (its stored state cannot be decoded; see docs/operations.md): it becomes discarded, "+
			"and retention removes it. Any other saga: exit 4.",
		"discarded", (*client.Client).DiscardSaga)
}

// sagaOperatorCommand is an operator action on one saga, named by its id.
func sagaOperatorCommand(flags *clientFlags, use, short, long, done string,
	act func(*client.Client, context.Context, string) (*client.Saga, error)) *cobra.Command {
	return &cobra.Command{
		Use:   use + " ID",
		Short: short,
		Long:  long,
		Args:  args(1, "a saga id"),
		RunE: func(cmd *cobra.Command, a []string) error {
			c, err := flags.client()
			if err != nil {
				return err
			}
			s, err := act(c, cmd.Context(), a[0])
			if err != nil {
				return apiErr(err)
			}
			if flags.output == "json" {
				return printJSON(cmd.OutOrStdout(), s)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "saga %s %s: %s\n", s.ID, done, s.Status)
			return nil
		},
	}
}

func newSagaWatch(flags *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "watch ID",
		Short: "Print a saga's status changes until it ends",
		Long:  "Print a line whenever the saga's status or a step's changes, until the saga ends: exit 0 if it completed, 6 if it ended otherwise.",
		Args:  args(1, "a saga id"),
		RunE: func(cmd *cobra.Command, a []string) error {
			c, err := flags.client()
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			var last client.SagaStatus
			var prev string
			err = c.WatchSaga(cmd.Context(), a[0], func(st client.SagaStatus) error {
				last = st
				if flags.output == "json" {
					b, err := json.Marshal(st)
					if err != nil {
						return err
					}
					_, err = fmt.Fprintf(out, "%s\n", b)
					return err
				}
				line := watchLine(st)
				if line == prev {
					return nil // a repeat after a reconnection
				}
				prev = line
				_, err := fmt.Fprintf(out, "%s  %s\n", st.UpdatedAt.Local().Format("15:04:05.000"), line)
				return err
			})
			if err != nil {
				return apiErr(err)
			}
			return sagaEnd(a[0], last.Status)
		},
	}
}

func watchLine(st client.SagaStatus) string {
	parts := make([]string, len(st.Steps))
	for i, s := range st.Steps {
		parts[i] = s.Name + "=" + s.Status
		if s.Attempts > 1 {
			parts[i] += fmt.Sprintf("(%d)", s.Attempts)
		}
	}
	return fmt.Sprintf("%-14s %s", st.Status, strings.Join(parts, " "))
}

// waitErr says which saga a wait that ended early (interrupted, server gone)
// was for, and how to follow it: the saga goes on running without us.
func waitErr(ctx context.Context, id string, err error) error {
	follow := "follow it with: accord saga watch " + id
	if ctx.Err() != nil {
		return &exitError{code: codeError, err: fmt.Errorf("stopped waiting for saga %s, which goes on running; %s", id, follow)}
	}
	code := codeError
	var ee *exitError
	if errors.As(err, &ee) {
		code, err = ee.code, ee.err
	}
	return &exitError{code: code, err: fmt.Errorf("saga %s started, but waiting for it failed (%w); %s", id, err, follow)}
}
