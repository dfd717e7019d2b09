package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/accord-saga/accord/sdk/client"
)

// The dead letter, trace and stalled commands of the event bus.

func newDLQCommand() *cobra.Command {
	var flags clientFlags
	cmd := clientGroup("dlq", "List, replay and purge a consumer group's dead letters",
		"List the messages a consumer group gave up on, give them back to the group, or delete them.", &flags)
	cmd.Aliases = []string{"dead-letters"}
	cmd.AddCommand(newDLQList(&flags), newDLQOp(&flags, "replay"), newDLQOp(&flags, "purge"))
	return cmd
}

func newDLQList(flags *clientFlags) *cobra.Command {
	var limit int
	cmd := &cobra.Command{
		Use:   "list TOPIC GROUP",
		Short: "List a group's dead letters",
		Args:  args(2, "a topic and a group name"),
		RunE: func(cmd *cobra.Command, a []string) error {
			if limit < 1 {
				return usageErr(fmt.Errorf("--limit must be at least 1"))
			}
			c, err := flags.client()
			if err != nil {
				return err
			}
			var items []client.DeadLetter
			opts := client.DeadLetterOptions{Limit: min(limit, 1000)}
			for len(items) < limit {
				page, err := c.DeadLetters(cmd.Context(), a[0], a[1], opts)
				if err != nil {
					return apiErr(err)
				}
				items = append(items, page.DeadLetters...)
				if page.NextAfter == 0 {
					break
				}
				opts.After = page.NextAfter
			}
			items = items[:min(len(items), limit)]
			out := cmd.OutOrStdout()
			if flags.output == "json" {
				return printJSON(out, items)
			}
			t := newTable(out, "ID", "MESSAGE", "KEY", "ATTEMPTS", "DEAD", "REASON")
			for _, d := range items {
				t.row(strconv.FormatInt(d.ID, 10), d.Message.ID, orDash(d.Message.Key), strconv.Itoa(d.Attempts), human(d.DeadAt), oneLine(d.Reason, 60))
			}
			return t.flush()
		},
	}
	cmd.Flags().IntVar(&limit, "limit", 100, "most dead letters to show")
	return cmd
}

// oneLine shortens s to one line of at most n characters.
func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > n {
		s = s[:n-3] + "..."
	}
	return orDash(s)
}

func newDLQOp(flags *clientFlags, op string) *cobra.Command {
	var ids []int64
	var all bool
	short := map[string]string{"replay": "Give dead letters back to their group", "purge": "Delete dead letters"}[op]
	cmd := &cobra.Command{
		Use:   op + " TOPIC GROUP (--id N... | --all)",
		Short: short,
		Args:  args(2, "a topic and a group name"),
		RunE: func(cmd *cobra.Command, a []string) error {
			if all == (len(ids) > 0) {
				return usageErr(fmt.Errorf("give the dead letters with --id (repeatable), or --all"))
			}
			c, err := flags.client()
			if err != nil {
				return err
			}
			f := c.ReplayDeadLetters
			if op == "purge" {
				f = c.PurgeDeadLetters
			}
			n, err := f(cmd.Context(), a[0], a[1], ids...)
			if err != nil {
				return apiErr(err)
			}
			out := cmd.OutOrStdout()
			if flags.output == "json" {
				return printJSON(out, map[string]int{"count": n})
			}
			what := map[string]string{"replay": "replayed", "purge": "purged"}[op]
			fmt.Fprintf(out, "%d dead letters %s\n", n, what)
			return nil
		},
	}
	cmd.Flags().Int64SliceVar(&ids, "id", nil, "a dead letter id (repeatable)")
	cmd.Flags().BoolVar(&all, "all", false, "every dead letter of the group")
	return cmd
}

// clientLeaf gives a top-level client command the client flags and the
// usage exit code of clientGroup.
func clientLeaf(cmd *cobra.Command, flags *clientFlags) *cobra.Command {
	cmd.Long += "\n\n" + exitCodesHelp
	flags.register(cmd)
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageErr(err) })
	cmd.PersistentPreRunE = func(cmd *cobra.Command, _ []string) error { return flags.resolve(cmd) }
	return cmd
}

func newTraceCommand() *cobra.Command {
	var flags clientFlags
	return clientLeaf(&cobra.Command{
		Use:   "trace CORRELATION_ID",
		Short: "Follow a flow of events through every topic",
		Long: `Show every message with CORRELATION_ID, in publish order, with where each
consumer group of its topic stands with it: pending, blocked (behind an
earlier message of its key), in_flight, dead_lettered or done.`,
		Args: args(1, "a correlation id"),
		RunE: func(cmd *cobra.Command, a []string) error {
			c, err := flags.client()
			if err != nil {
				return err
			}
			tr, err := c.Trace(cmd.Context(), a[0])
			if err != nil {
				return apiErr(err)
			}
			out := cmd.OutOrStdout()
			if flags.output == "json" {
				return printJSON(out, tr)
			}
			t := newTable(out, "MESSAGE", "TOPIC", "KEY", "PUBLISHED", "GROUP", "STATUS", "ATTEMPTS")
			for _, m := range tr.Messages {
				head := []string{m.ID, m.Topic, orDash(m.Key), human(m.PublishedAt)}
				if len(m.Groups) == 0 {
					t.row(append(head, "-", "-", "-")...)
				}
				for i, g := range m.Groups {
					if i > 0 {
						head = []string{"", "", "", ""}
					}
					t.row(append(head, g.Group, g.Status, strconv.Itoa(g.Attempts))...)
				}
			}
			return t.flush()
		},
	}, &flags)
}

func newStalledCommand() *cobra.Command {
	var flags clientFlags
	var limit int
	cmd := clientLeaf(&cobra.Command{
		Use:   "stalled",
		Short: "List flows that stopped moving",
		Long: `List the messages a consumer group has not finished with for longer than
the server's --bus-stall-after, oldest first: a consumer that is down, a key
blocked behind a failing message, a group nobody consumes.`,
		Args: args(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if limit < 1 || limit > 1000 {
				return usageErr(fmt.Errorf("--limit must be 1..1000"))
			}
			c, err := flags.client()
			if err != nil {
				return err
			}
			st, err := c.Stalled(cmd.Context(), limit)
			if err != nil {
				return apiErr(err)
			}
			out := cmd.OutOrStdout()
			if flags.output == "json" {
				return printJSON(out, st)
			}
			if len(st.Messages) == 0 {
				fmt.Fprintf(out, "no message has waited longer than %s\n", st.StallAfter)
				return nil
			}
			t := newTable(out, "TOPIC", "GROUP", "MESSAGE", "KEY", "CORRELATION", "ATTEMPTS", "AGE")
			for _, m := range st.Messages {
				t.row(m.Message.Topic, m.Group, m.Message.ID, orDash(m.Message.Key), m.Message.CorrelationID, strconv.Itoa(m.Attempts), age(m.AgeMS))
			}
			return t.flush()
		},
	}, &flags)
	cmd.Flags().IntVar(&limit, "limit", 100, "most messages to show")
	return cmd
}
