package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/accord-saga/accord/examples/choreography/internal/flow"
	"github.com/accord-saga/accord/sdk/client"
	"github.com/accord-saga/accord/sdk/subscriber"
)

// Topics and groups.
const (
	topicSubmitted = "document-submitted"
	topicApproved  = "document-approved"
	groupReviewer  = "reviewer"
	groupWebhook   = "approval-webhook"
)

// Document is the DocumentSubmitted event.
type Document struct {
	ID     string `json:"id"`
	Title  string `json:"title"`
	Author string `json:"author"`
}

// Approval is the DocumentApproved event.
type Approval struct {
	Document string `json:"document"`
	Title    string `json:"title"`
	Reviewer string `json:"reviewer"`
}

// Received is an approval the webhook endpoint received.
type Received struct {
	Approval      Approval
	MessageID     string
	CorrelationID string
}

// endpoint is the HTTP service the webhook group pushes to. It records an
// approval once per message id: Accord delivers at least once.
type endpoint struct {
	mu       sync.Mutex
	got      []Received
	seen     map[string]bool
	out      io.Writer
	listener net.Listener
	srv      *http.Server
}

func startEndpoint(out io.Writer) (*endpoint, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	e := &endpoint{seen: map[string]bool{}, out: out, listener: ln}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /approvals", e.approve)
	e.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = e.srv.Serve(ln) }()
	return e, nil
}

func (e *endpoint) url() string { return "http://" + e.listener.Addr().String() + "/approvals" }

func (e *endpoint) close() { _ = e.srv.Close() }

func (e *endpoint) approve(w http.ResponseWriter, r *http.Request) {
	var body struct {
		ID            string   `json:"id"`
		CorrelationID string   `json:"correlation_id"`
		Payload       Approval `json:"payload"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest) // a 4xx dead-letters the message
		return
	}
	key := r.Header.Get("Idempotency-Key")
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.seen[key] {
		fmt.Fprintf(e.out, "webhook:    %s again (attempt %s): already recorded\n", body.Payload.Document, r.Header.Get("Accord-Attempt"))
		w.WriteHeader(http.StatusOK)
		return
	}
	e.seen[key] = true
	e.got = append(e.got, Received{Approval: body.Payload, MessageID: body.ID, CorrelationID: r.Header.Get("Accord-Correlation-Id")})
	fmt.Fprintf(e.out, "webhook:    %s approved by %s (POST /approvals, Idempotency-Key %s)\n", body.Payload.Document, body.Payload.Reviewer, key)
	w.WriteHeader(http.StatusNoContent)
}

func (e *endpoint) received() []Received {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]Received(nil), e.got...)
}

// Result is what a run did: the approvals the webhook received, and each
// document's correlation id.
type Result struct {
	Received []Received
	Flows    map[string]string // document id → correlation id
}

// run starts the webhook endpoint, sets up the topics and groups (the
// webhook group pointing at the endpoint), starts the reviewer, submits
// the documents, and returns once every document's flow is done.
func run(ctx context.Context, c *client.Client, docs []Document, out io.Writer) (Result, error) {
	ep, err := startEndpoint(out)
	if err != nil {
		return Result{}, err
	}
	defer ep.close()
	if err := flow.Topics(ctx, c, topicSubmitted, topicApproved); err != nil {
		return Result{}, err
	}
	if err := flow.Groups(ctx, c, topicSubmitted, groupReviewer); err != nil {
		return Result{}, err
	}
	// The endpoint's port changes from run to run: replace the group.
	if err := flow.WebhookGroup(ctx, c, topicApproved, groupWebhook, ep.url()); err != nil {
		return Result{}, fmt.Errorf("webhook group (does the server allow pushes to %s? A server on a non-loopback address needs --push-allow 'http://127.0.0.1:*'): %w", ep.url(), err)
	}

	reviewer := subscriber.New(c, topicSubmitted, groupReviewer, func(ctx context.Context, m *subscriber.Message) error {
		var d Document
		if err := m.Decode(&d); err != nil {
			return subscriber.Permanent(err)
		}
		a := Approval{Document: d.ID, Title: d.Title, Reviewer: "rita"}
		fmt.Fprintf(out, "reviewer:   %s %q by %s -> approved\n", d.ID, d.Title, d.Author)
		_, err := subscriber.Publish(ctx, c, topicApproved, client.Message{
			Key: d.ID, IdempotencyKey: "approved-" + m.ID, Payload: flow.JSON(a),
		})
		return err
	}, subscriber.Options{Concurrency: 2, Wait: time.Second,
		Middleware: []subscriber.Middleware{subscriber.Recoverer, subscriber.CorrelationID, subscriber.Retry(subscriber.RetryOptions{})}})
	if err := reviewer.Start(ctx); err != nil {
		return Result{}, err
	}
	defer func() { _ = reviewer.Stop(context.WithoutCancel(ctx)) }()

	res := Result{Flows: map[string]string{}}
	batch := flow.NewID()
	for _, d := range docs {
		pub, err := c.Publish(ctx, topicSubmitted, client.Message{
			Key: d.ID, IdempotencyKey: "submitted-" + batch + "-" + d.ID, Payload: flow.JSON(d),
		})
		if err != nil {
			return res, fmt.Errorf("submit %s: %w", d.ID, err)
		}
		res.Flows[d.ID] = pub[0].ID
		fmt.Fprintf(out, "submission: %s %q submitted\n", d.ID, d.Title)
	}
	for _, d := range docs {
		if err := flow.WaitDone(ctx, c, res.Flows[d.ID], 2); err != nil {
			return res, fmt.Errorf("document %s: %w", d.ID, err)
		}
	}
	res.Received = ep.received()
	for _, d := range docs {
		fmt.Fprintf(out, "document %s done; see its flow with: accord trace %s\n", d.ID, res.Flows[d.ID])
	}
	return res, nil
}

var sampleDocs = []Document{
	{ID: "D-1", Title: "Q3 budget", Author: "ana"},
	{ID: "D-2", Title: "Travel policy", Author: "ben"},
}

func main() {
	flow.Main("approval", func(ctx context.Context, c *client.Client) error {
		_, err := run(ctx, c, sampleDocs, os.Stdout)
		return err
	})
}
