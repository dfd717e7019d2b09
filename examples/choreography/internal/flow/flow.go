package flow

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"time"

	_ "modernc.org/sqlite"

	"github.com/accord-saga/accord/sdk/client"
)

// Topics creates the topics (or keeps them as they are).
func Topics(ctx context.Context, c *client.Client, topics ...string) error {
	for _, t := range topics {
		if _, err := c.PutTopic(ctx, t, client.TopicConfig{}); err != nil {
			return fmt.Errorf("topic %s (is the server running at %s?): %w", t, c.BaseURL(), err)
		}
	}
	return nil
}

// Groups creates consumer groups of a topic, each getting the messages
// published from now on (an existing group is kept).
func Groups(ctx context.Context, c *client.Client, topic string, groups ...string) error {
	for _, g := range groups {
		if _, err := c.CreateGroup(ctx, topic, g, client.GroupConfig{}); err != nil {
			return fmt.Errorf("group %s/%s: %w", topic, g, err)
		}
	}
	return nil
}

// WebhookGroup creates a group that Accord consumes itself, POSTing each
// message to url; an existing group with another URL is replaced.
func WebhookGroup(ctx context.Context, c *client.Client, topic, group, url string) error {
	cfg := client.GroupConfig{Webhook: &client.WebhookConfig{URL: url}}
	_, err := c.CreateGroup(ctx, topic, group, cfg)
	if errors.Is(err, client.ErrConflict) {
		if err := c.DeleteGroup(ctx, topic, group); err != nil {
			return err
		}
		_, err = c.CreateGroup(ctx, topic, group, cfg)
	}
	return err
}

// OpenSQLite opens a service's own SQLite database as sdk/guard asks:
// transactions take the write lock when they begin, and wait for it.
func OpenSQLite(path string) (*sql.DB, error) {
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=journal_mode(WAL)&_pragma=busy_timeout(10000)&_txlock=immediate")
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(1)
	return db, nil
}

// JSON encodes v (the examples' events, which always encode).
func JSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// NewID returns a random id.
func NewID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// EnvOr returns the environment variable's value, or def.
func EnvOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// WaitDone waits until the flow of correlationID has at least want
// messages and every group of each is done with it.
func WaitDone(ctx context.Context, c *client.Client, correlationID string, want int) error {
	for {
		tr, err := c.Trace(ctx, correlationID)
		if err == nil && done(tr, want) {
			return nil
		}
		select {
		case <-ctx.Done():
			if err != nil {
				return fmt.Errorf("trace %s: %w", correlationID, err)
			}
			return fmt.Errorf("flow %s not done: %w", correlationID, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func done(tr *client.Trace, want int) bool {
	if len(tr.Messages) < want {
		return false
	}
	for _, m := range tr.Messages {
		for _, g := range m.Groups {
			if g.Status != "done" {
				return false
			}
		}
	}
	return true
}

// Main is an example's main: it reads -server (default $ACCORD_SERVER or
// http://127.0.0.1:7780), runs fn with a client of that server for at most
// two minutes or until interrupted, and exits 1 if fn fails.
func Main(name string, fn func(ctx context.Context, c *client.Client) error) {
	server := flag.String("server", EnvOr("ACCORD_SERVER", "http://127.0.0.1:7780"), "Accord server URL")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	c, err := client.New(*server)
	if err == nil {
		err = fn(ctx, c)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, name+":", err)
		cancel()
		os.Exit(1)
	}
}
