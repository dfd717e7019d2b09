package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/accord-saga/accord/examples/choreography/internal/flow"
	"github.com/accord-saga/accord/sdk/client"
	"github.com/accord-saga/accord/sdk/subscriber"
)

const topicUploaded = "media-uploaded"

// The three services, each a consumer group of the topic.
var services = []string{"thumbnail", "tagger", "cdn"}

// Upload is the MediaUploaded event.
type Upload struct {
	ID    string `json:"id"`
	Name  string `json:"name"`
	Bytes int    `json:"bytes"`
}

// Result is what a run did: for each service, the uploads it handled (once
// each), and each upload's correlation id.
type Result struct {
	Seen  map[string][]string // service → upload ids, sorted
	Flows map[string]string   // upload id → correlation id
}

// run sets up the topic and the three groups, starts the services,
// publishes the uploads, and returns once every upload's flow is done.
func run(ctx context.Context, c *client.Client, uploads []Upload, out io.Writer) (Result, error) {
	if err := flow.Topics(ctx, c, topicUploaded); err != nil {
		return Result{}, err
	}
	if err := flow.Groups(ctx, c, topicUploaded, services...); err != nil {
		return Result{}, err
	}
	var mu sync.Mutex
	seen := map[string]map[string]bool{}
	cold := map[string]bool{}
	record := func(service string, m *subscriber.Message, up Upload, what string) {
		mu.Lock()
		defer mu.Unlock()
		if seen[service] == nil {
			seen[service] = map[string]bool{}
		}
		if seen[service][up.ID] {
			// A redelivery (the ack was lost): the effect is keyed by
			// the upload, so doing it again changes nothing.
			fmt.Fprintf(out, "%-9s %s again (attempt %d): already done\n", service+":", up.ID, m.Attempt)
			return
		}
		seen[service][up.ID] = true
		fmt.Fprintf(out, "%-9s %s %s\n", service+":", up.ID, what)
	}
	handlers := map[string]subscriber.Handler{
		"thumbnail": func(ctx context.Context, m *subscriber.Message) error {
			var up Upload
			if err := m.Decode(&up); err != nil {
				return subscriber.Permanent(err)
			}
			record("thumbnail", m, up, "-> "+strings.TrimSuffix(up.Name, ".jpg")+"_thumb.jpg")
			return nil
		},
		"tagger": func(ctx context.Context, m *subscriber.Message) error {
			var up Upload
			if err := m.Decode(&up); err != nil {
				return subscriber.Permanent(err)
			}
			mu.Lock()
			first := !cold[up.ID]
			cold[up.ID] = true
			mu.Unlock()
			if first {
				return errors.New("model still loading")
			}
			record("tagger", m, up, "-> tags "+strings.Join(tags(up.Name), ", "))
			return nil
		},
		"cdn": func(ctx context.Context, m *subscriber.Message) error {
			var up Upload
			if err := m.Decode(&up); err != nil {
				return subscriber.Permanent(err)
			}
			record("cdn", m, up, fmt.Sprintf("-> https://cdn.example/%s (%d bytes)", up.Name, up.Bytes))
			return nil
		},
	}
	middleware := map[string][]subscriber.Middleware{
		"thumbnail": {subscriber.Recoverer, subscriber.Timeout(10 * time.Second)},
		"tagger": {subscriber.Recoverer, subscriber.Retry(subscriber.RetryOptions{InitialInterval: 20 * time.Millisecond}),
			subscriber.Timeout(10 * time.Second)},
		"cdn": {subscriber.Recoverer, subscriber.CircuitBreaker(gobreaker.Settings{Name: "cdn", Timeout: 5 * time.Second})},
	}
	for _, svc := range services {
		s := subscriber.New(c, topicUploaded, svc, handlers[svc], subscriber.Options{
			Concurrency: 4, Wait: time.Second, Middleware: middleware[svc],
		})
		if err := s.Start(ctx); err != nil {
			return Result{}, err
		}
		defer func() { _ = s.Stop(context.WithoutCancel(ctx)) }()
	}

	// The uploader publishes one event per upload, with the upload (in
	// this run) as the idempotency key: a retried publish stores one.
	batch := flow.NewID()
	res := Result{Seen: map[string][]string{}, Flows: map[string]string{}}
	for _, up := range uploads {
		pub, err := c.Publish(ctx, topicUploaded, client.Message{
			Key: up.ID, IdempotencyKey: "upload-" + batch + "-" + up.ID, Payload: flow.JSON(up),
		})
		if err != nil {
			return res, fmt.Errorf("publish %s: %w", up.ID, err)
		}
		res.Flows[up.ID] = pub[0].ID // the first event's id is its flow's correlation id
		fmt.Fprintf(out, "uploader: %s %s published\n", up.ID, up.Name)
	}
	for _, up := range uploads {
		if err := flow.WaitDone(ctx, c, res.Flows[up.ID], 1); err != nil {
			return res, fmt.Errorf("upload %s: %w", up.ID, err)
		}
	}
	mu.Lock()
	for svc, ids := range seen {
		for id := range ids {
			res.Seen[svc] = append(res.Seen[svc], id)
		}
		sort.Strings(res.Seen[svc])
	}
	mu.Unlock()
	for _, up := range uploads {
		fmt.Fprintf(out, "upload %s done; see its flow with: accord trace %s\n", up.ID, res.Flows[up.ID])
	}
	return res, nil
}

// tags stands in for the image tagging model.
func tags(name string) []string {
	out := []string{"photo"}
	for _, w := range []string{"cat", "beach", "city"} {
		if strings.Contains(name, w) {
			out = append(out, w)
		}
	}
	return out
}

var sampleUploads = []Upload{
	{ID: "M-1", Name: "cat.jpg", Bytes: 48213},
	{ID: "M-2", Name: "beach-sunset.jpg", Bytes: 120448},
	{ID: "M-3", Name: "city-night.jpg", Bytes: 98304},
}

func main() {
	flow.Main("fanout", func(ctx context.Context, c *client.Client) error {
		_, err := run(ctx, c, sampleUploads, os.Stdout)
		return err
	})
}
