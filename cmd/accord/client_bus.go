package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/accord-saga/accord/sdk/client"
)

// The event bus commands (docs/bus.md): topic, group, dlq, trace, stalled.

func newTopicCommand() *cobra.Command {
	var flags clientFlags
	cmd := clientGroup("topic", "Create, inspect and publish to event bus topics",
		"Create event bus topics, list and inspect them, delete them, and publish messages to them.", &flags)
	cmd.Aliases = []string{"topics"}
	cmd.AddCommand(newTopicCreate(&flags), newTopicList(&flags), newTopicGet(&flags), newTopicDelete(&flags), newTopicPublish(&flags))
	return cmd
}

func newTopicCreate(flags *clientFlags) *cobra.Command {
	var cfg client.TopicConfig
	cmd := &cobra.Command{
		Use:   "create TOPIC",
		Short: "Create a topic, or replace its configuration",
		Long: `Create TOPIC with the configuration the flags give (absent ones take the
server's defaults), or, if it exists, replace its configuration.`,
		Args: args(1, "a topic name"),
		RunE: func(cmd *cobra.Command, a []string) error {
			c, err := flags.client()
			if err != nil {
				return err
			}
			t, err := c.PutTopic(cmd.Context(), a[0], cfg)
			if err != nil {
				return apiErr(err)
			}
			out := cmd.OutOrStdout()
			if flags.output == "json" {
				return printJSON(out, t)
			}
			what := "configuration replaced"
			if t.Created {
				what = "created"
			}
			fmt.Fprintf(out, "topic %s %s\n", t.Name, what)
			return nil
		},
	}
	f := cmd.Flags()
	f.DurationVar(&cfg.DefaultTTL, "default-ttl", 0, "lifetime of a message that gives none; 0: no expiry")
	f.DurationVar(&cfg.RetentionAge, "retention-age", 0, "delete messages older than this (server default 168h)")
	f.BoolVar(&cfg.KeepForever, "keep-forever", false, "no age retention")
	f.Int64Var(&cfg.RetentionBytes, "retention-bytes", 0, "payload bytes kept per partition; 0: no size limit")
	f.BoolVar(&cfg.Compact, "compact", false, "keep only the newest message of each key")
	f.DurationVar(&cfg.TombstoneRetention, "tombstone-retention", 0, "how long a compacted topic keeps a tombstone (server default 24h)")
	f.DurationVar(&cfg.DedupWindow, "dedup-window", 0, "how long a publish's idempotency key is remembered (server default 1h)")
	f.IntVar(&cfg.MaxDeliveries, "max-deliveries", 0, "default max deliveries of the topic's groups (server default 5)")
	return cmd
}

func newTopicList(flags *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List topics",
		Args:  args(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := flags.client()
			if err != nil {
				return err
			}
			ts, err := c.ListTopics(cmd.Context())
			if err != nil {
				return apiErr(err)
			}
			out := cmd.OutOrStdout()
			if flags.output == "json" {
				return printJSON(out, ts)
			}
			t := newTable(out, "TOPIC", "RETENTION", "COMPACT", "DEDUP", "MAX DELIVERIES", "CREATED")
			for _, tp := range ts {
				e := tp.Effective
				t.row(tp.Name, retention(e), strconv.FormatBool(e.Compact), e.DedupWindow.String(), strconv.Itoa(e.MaxDeliveries), human(tp.CreatedAt))
			}
			return t.flush()
		},
	}
}

func retention(c client.TopicConfig) string {
	r := "forever"
	if !c.KeepForever {
		r = c.RetentionAge.String()
	}
	if c.RetentionBytes > 0 {
		r += fmt.Sprintf(", %d bytes", c.RetentionBytes)
	}
	return r
}

func newTopicGet(flags *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "get TOPIC",
		Short: "Show a topic's configuration and its groups",
		Args:  args(1, "a topic name"),
		RunE: func(cmd *cobra.Command, a []string) error {
			c, err := flags.client()
			if err != nil {
				return err
			}
			tp, err := c.GetTopic(cmd.Context(), a[0])
			if err != nil {
				return apiErr(err)
			}
			gs, err := c.ListGroups(cmd.Context(), a[0])
			if err != nil {
				return apiErr(err)
			}
			out := cmd.OutOrStdout()
			if flags.output == "json" {
				return printJSON(out, map[string]any{"topic": tp, "groups": gs})
			}
			e := tp.Effective
			ttl := "none"
			if e.DefaultTTL > 0 {
				ttl = e.DefaultTTL.String()
			}
			fmt.Fprintf(out, "topic:          %s\ncreated:        %s\nretention:      %s\ncompact:        %t\ndefault ttl:    %s\ndedup window:   %s\nmax deliveries: %d\n",
				tp.Name, human(tp.CreatedAt), retention(e), e.Compact, ttl, e.DedupWindow, e.MaxDeliveries)
			if len(gs) == 0 {
				fmt.Fprintln(out, "\nno consumer groups")
				return nil
			}
			fmt.Fprintln(out)
			return groupTable(out, gs)
		},
	}
}

func groupTable(w io.Writer, gs []client.Group) error {
	t := newTable(w, "GROUP", "KIND", "MAX DELIVERIES", "ACK TIMEOUT", "CREATED")
	for _, g := range gs {
		t.row(g.Name, groupKind(g.Effective), strconv.Itoa(g.Effective.MaxDeliveries), g.Effective.AckTimeout.String(), human(g.CreatedAt))
	}
	return t.flush()
}

func groupKind(c client.GroupConfig) string {
	switch {
	case c.Webhook != nil:
		return "webhook " + c.Webhook.URL
	case c.StartSaga != nil:
		return "starts saga " + c.StartSaga.Definition
	default:
		return "pull"
	}
}

func newTopicDelete(flags *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "delete TOPIC",
		Short: "Delete a topic with its messages, groups and dead letters",
		Args:  args(1, "a topic name"),
		RunE: func(cmd *cobra.Command, a []string) error {
			c, err := flags.client()
			if err != nil {
				return err
			}
			if err := c.DeleteTopic(cmd.Context(), a[0]); err != nil {
				return apiErr(err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "topic %s deleted\n", a[0])
			return nil
		},
	}
}

func newTopicPublish(flags *clientFlags) *cobra.Command {
	var m client.Message
	var headers []string
	cmd := &cobra.Command{
		Use:   "publish TOPIC [PAYLOAD]",
		Short: "Publish a message",
		Long: `Publish one message to TOPIC. PAYLOAD is JSON; without it (or with -) the
payload is read from standard input. With --idempotency-key, publishing
again with the same key (and --key) is stored once; other content under the
key is a conflict (exit 4).`,
		Args: func(cmd *cobra.Command, a []string) error {
			if len(a) < 1 || len(a) > 2 {
				return usageErr(fmt.Errorf("%s wants a topic and, optionally, a payload; got %d arguments", cmd.CommandPath(), len(a)))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, a []string) error {
			var err error
			if m.Headers, err = parseHeaders(headers); err != nil {
				return usageErr(err)
			}
			if !m.Tombstone || len(a) == 2 {
				payload, err := readPayload(cmd, a[1:])
				if err != nil {
					return usageErr(err)
				}
				m.Payload = payload
			}
			c, err := flags.client()
			if err != nil {
				return err
			}
			res, err := c.Publish(cmd.Context(), a[0], m)
			if err != nil {
				return apiErr(err)
			}
			out := cmd.OutOrStdout()
			if flags.output == "json" {
				return printJSON(out, res[0])
			}
			p := res[0]
			if p.Duplicate {
				fmt.Fprintf(out, "message %s exists (idempotency key used before)\n", p.ID)
				return nil
			}
			fmt.Fprintf(out, "message %s published: partition %d, position %d\n", p.ID, p.Partition, p.Position)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&m.Key, "key", "", "message key: messages of one key reach each group in publish order")
	f.StringVar(&m.ID, "id", "", "message id (default: the server makes one)")
	f.StringVar(&m.IdempotencyKey, "idempotency-key", "", "makes the publish safe to repeat within the topic's dedup window")
	f.StringVar(&m.CorrelationID, "correlation-id", "", "the flow the message belongs to (default: its own id)")
	f.StringArrayVar(&headers, "header", nil, "a header, k=v (repeatable)")
	f.DurationVar(&m.TTL, "ttl", 0, "lifetime of the message (default the topic's)")
	f.BoolVar(&m.Tombstone, "tombstone", false, "delete --key from a compacted topic (no payload)")
	return cmd
}

func parseHeaders(kvs []string) (map[string]string, error) {
	if len(kvs) == 0 {
		return nil, nil
	}
	h := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--header %q: want k=v", kv)
		}
		h[k] = v
	}
	return h, nil
}

// readPayload reads the payload argument, or standard input when there is
// none or it is -.
func readPayload(cmd *cobra.Command, a []string) (json.RawMessage, error) {
	var data []byte
	if len(a) == 1 && a[0] != "-" {
		data = []byte(a[0])
	} else {
		var err error
		if data, err = io.ReadAll(io.LimitReader(cmd.InOrStdin(), 16<<20)); err != nil {
			return nil, fmt.Errorf("read the payload: %w", err)
		}
	}
	data = []byte(strings.TrimSpace(string(data)))
	if len(data) == 0 {
		return nil, fmt.Errorf("no payload: give it as an argument or on standard input")
	}
	if !json.Valid(data) {
		return nil, fmt.Errorf("the payload is not valid JSON (quote a string: '\"text\"')")
	}
	return json.RawMessage(data), nil
}

func newGroupCommand() *cobra.Command {
	var flags clientFlags
	cmd := clientGroup("group", "Create and inspect consumer groups",
		"Create consumer groups of topics (pull, webhook or saga-starting), list and inspect them with their backlog, and delete them.", &flags)
	cmd.Aliases = []string{"groups"}
	cmd.AddCommand(newGroupCreate(&flags), newGroupList(&flags), newGroupGet(&flags), newGroupDelete(&flags))
	return cmd
}

func newGroupCreate(flags *clientFlags) *cobra.Command {
	var cfg client.GroupConfig
	var startAt, webhook, startSaga string
	var sagaVersion int
	cmd := &cobra.Command{
		Use:   "create TOPIC GROUP",
		Short: "Create a consumer group",
		Long: `Create GROUP of TOPIC. It gets the messages published from now on (--start
end), every stored message (--start beginning) or those published from
--start-at (--start time). With --webhook the server pushes each message to
the URL; with --start-saga it starts a saga of that definition per message.
Creating it again with the same configuration changes nothing; with another
it is a conflict (exit 4).`,
		Args: args(2, "a topic and a group name"),
		RunE: func(cmd *cobra.Command, a []string) error {
			if startAt != "" {
				t, err := time.Parse(time.RFC3339, startAt)
				if err != nil {
					return usageErr(fmt.Errorf("--start-at: want an RFC 3339 time like 2024-05-01T12:00:00Z: %w", err))
				}
				cfg.StartAt = t
				if cfg.Start == "" {
					cfg.Start = client.StartTime
				}
			}
			if webhook != "" {
				cfg.Webhook = &client.WebhookConfig{URL: webhook}
			}
			if startSaga != "" {
				cfg.StartSaga = &client.SagaTrigger{Definition: startSaga, Version: sagaVersion}
			} else if sagaVersion != 0 {
				return usageErr(fmt.Errorf("--start-saga-version needs --start-saga"))
			}
			c, err := flags.client()
			if err != nil {
				return err
			}
			g, err := c.CreateGroup(cmd.Context(), a[0], a[1], cfg)
			if err != nil {
				return apiErr(err)
			}
			out := cmd.OutOrStdout()
			if flags.output == "json" {
				return printJSON(out, g)
			}
			what := "unchanged (created before)"
			if g.Created {
				what = "created"
			}
			fmt.Fprintf(out, "group %s of topic %s %s\n", g.Name, g.Topic, what)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Start, "start", "", "where the group starts: end (default), beginning or time")
	f.StringVar(&startAt, "start-at", "", "with --start time: the first publish time, RFC 3339")
	f.IntVar(&cfg.MaxDeliveries, "max-deliveries", 0, "hand-outs of a message before it is dead-lettered (default the topic's)")
	f.DurationVar(&cfg.AckTimeout, "ack-timeout", 0, "how long a received message stays claimed (server default 30s)")
	f.DurationVar(&cfg.BackoffInitial, "backoff-initial", 0, "first redelivery delay after a nack (server default 1s)")
	f.DurationVar(&cfg.BackoffMax, "backoff-max", 0, "longest redelivery delay after a nack (server default 5m)")
	f.StringVar(&webhook, "webhook", "", "push each message to this URL")
	f.StringVar(&startSaga, "start-saga", "", "start a saga of this definition per message")
	f.IntVar(&sagaVersion, "start-saga-version", 0, "with --start-saga: the definition version; 0 is the latest at each start")
	return cmd
}

func newGroupList(flags *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "list TOPIC",
		Short: "List a topic's consumer groups",
		Args:  args(1, "a topic name"),
		RunE: func(cmd *cobra.Command, a []string) error {
			c, err := flags.client()
			if err != nil {
				return err
			}
			gs, err := c.ListGroups(cmd.Context(), a[0])
			if err != nil {
				return apiErr(err)
			}
			out := cmd.OutOrStdout()
			if flags.output == "json" {
				return printJSON(out, gs)
			}
			return groupTable(out, gs)
		},
	}
}

func newGroupGet(flags *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "get TOPIC GROUP",
		Short: "Show a consumer group with its backlog per partition",
		Args:  args(2, "a topic and a group name"),
		RunE: func(cmd *cobra.Command, a []string) error {
			c, err := flags.client()
			if err != nil {
				return err
			}
			g, err := c.GetGroup(cmd.Context(), a[0], a[1])
			if err != nil {
				return apiErr(err)
			}
			out := cmd.OutOrStdout()
			if flags.output == "json" {
				return printJSON(out, g)
			}
			e := g.Effective
			fmt.Fprintf(out, "group:          %s\ntopic:          %s\nkind:           %s\ncreated:        %s\nmax deliveries: %d\nack timeout:    %s\nbackoff:        %s..%s\n\n",
				g.Name, g.Topic, groupKind(e), human(g.CreatedAt), e.MaxDeliveries, e.AckTimeout, e.BackoffInitial, e.BackoffMax)
			t := newTable(out, "PARTITION", "PENDING", "IN FLIGHT", "BLOCKED", "POSITION", "OLDEST", "DEAD LETTERS")
			for _, p := range g.Partitions {
				t.row(strconv.Itoa(p.Partition), strconv.Itoa(p.Pending), strconv.Itoa(p.InFlight), strconv.Itoa(p.Blocked),
					strconv.FormatInt(p.Position, 10), age(p.OldestAgeMS), strconv.Itoa(p.DeadLetters))
			}
			return t.flush()
		},
	}
}

// age shows milliseconds as a duration, rounded for people.
func age(ms int64) string {
	if ms <= 0 {
		return "-"
	}
	d := time.Duration(ms) * time.Millisecond
	if d >= time.Minute {
		return d.Round(time.Second).String()
	}
	return d.Round(time.Millisecond).String()
}

func newGroupDelete(flags *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "delete TOPIC GROUP",
		Short: "Delete a consumer group with its deliveries and dead letters",
		Args:  args(2, "a topic and a group name"),
		RunE: func(cmd *cobra.Command, a []string) error {
			c, err := flags.client()
			if err != nil {
				return err
			}
			if err := c.DeleteGroup(cmd.Context(), a[0], a[1]); err != nil {
				return apiErr(err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "group %s of topic %s deleted\n", a[1], a[0])
			return nil
		},
	}
}
