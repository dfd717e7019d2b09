package exampletest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/accord-saga/accord/internal/server"
	"github.com/accord-saga/accord/sdk/client"
)

// StartServer runs an Accord server on an embedded store in this process,
// until the test ends, configured as the README's quick start (the default
// configuration on a loopback address, so webhook and push calls to
// loopback are allowed by default); only its port, data directory,
// partition count and log level differ.
func StartServer(t *testing.T) *client.Client {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cfg := server.DefaultConfig()
	cfg.Addr, cfg.DataDir, cfg.Partitions, cfg.LogLevel = addr, t.TempDir(), 4, "error"
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- server.Run(ctx, cfg) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("server: %v", err)
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		if res, err := http.Get("http://" + addr + "/readyz"); err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case err := <-done:
			t.Fatalf("server: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("server not ready within 30s")
		}
	}
	c, err := client.New("http://" + addr)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TraceStatuses reads GET /v1/traces/{id} and returns, for each message of
// the flow in publish order, its topic and each group's status.
func TraceStatuses(ctx context.Context, base, correlationID string) ([]TracedMessage, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/traces/"+url.PathEscape(correlationID), nil)
	if err != nil {
		return nil, err
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /v1/traces/%s: %s", correlationID, res.Status)
	}
	var doc struct {
		Messages []TracedMessage `json:"messages"`
	}
	if err := json.NewDecoder(res.Body).Decode(&doc); err != nil {
		return nil, fmt.Errorf("GET /v1/traces/%s: %w", correlationID, err)
	}
	return doc.Messages, nil
}

// TracedMessage is one message of a trace, as far as the tests read it.
type TracedMessage struct {
	Topic  string `json:"topic"`
	ID     string `json:"id"`
	Groups []struct {
		Group  string `json:"group"`
		Status string `json:"status"`
	} `json:"groups"`
}

// Log is an io.Writer onto the test's log.
func Log(t *testing.T) io.Writer { return logWriter{t} }

type logWriter struct{ t *testing.T }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// CheckTrace reads the flow's trace through GET /v1/traces/{id} and fails
// the test unless it holds the messages of want's topics, in that order,
// each with exactly want's groups for it, every one done.
func CheckTrace(t *testing.T, c *client.Client, correlationID string, want [][2]string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	msgs, err := TraceStatuses(ctx, c.BaseURL(), correlationID)
	if err != nil {
		t.Fatal(err)
	}
	var got [][2]string
	for _, m := range msgs {
		var groups []string
		for _, g := range m.Groups {
			groups = append(groups, g.Group)
			if g.Status != "done" {
				t.Errorf("flow %s: %s's group %s is %s, want done", correlationID, m.Topic, g.Group, g.Status)
			}
		}
		sort.Strings(groups)
		got = append(got, [2]string{m.Topic, strings.Join(groups, ",")})
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("flow %s: messages (topic, groups) %v, want %v", correlationID, got, want)
	}
}
