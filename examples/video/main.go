// Command video is the video processing orchestration as a saga, with its
// services as HTTP participants that Accord pushes to: when a video is
// uploaded, transcode it, make its thumbnails and extract its metadata —
// the three in parallel — and once all three are done, announce
// VideoProcessed.
//
// The three steps have `after: []`, so they start together; the last one
// joins them. If any of them fails (an unsupported codec), the ones that
// succeeded are undone, and nothing is announced.
//
//	go run ./cmd/accord server                                     # in one terminal
//	go run ./examples/video                                        # in another
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"time"

	"github.com/accord-saga/accord/sdk/client"
)

const definitionTemplate = `
name: video
version: %[2]d
description: video processing — transcode, thumbnails and metadata in parallel, then VideoProcessed
steps:
  - name: transcode
    after: []
    action: {http: "%[1]s/transcode", name: transcode}
    compensation: {http: "%[1]s/transcode", name: delete_renditions}
  - name: thumbnails
    after: []
    action: {http: "%[1]s/thumbnails", name: make_thumbnails}
    compensation: {http: "%[1]s/thumbnails", name: delete_thumbnails}
  - name: metadata
    after: []
    action: {http: "%[1]s/metadata", name: extract_metadata}
    compensation: {http: "%[1]s/metadata", name: delete_metadata}
  - name: processed
    kind: pivot
    after: [transcode, thumbnails, metadata]
    action: {http: "%[1]s/processed", name: video_processed}
`

// Video is the saga input: the VideoUploaded event.
type Video struct {
	ID    string `json:"id"`
	Codec string `json:"codec"` // "av1" cannot be transcoded
}

// parallel is how long each of the three parallel steps waits for the
// other two to arrive before going on alone: it lets the services see that
// Accord started them together.
const parallel = 2 * time.Second

// services are the four participants, behind one HTTP server.
type services struct {
	mu          sync.Mutex
	answered    map[string][]byte // idempotency key → the answer given
	artifacts   map[string]string // "<video>/<kind>" → made, deleted
	events      []string          // "VideoProcessed <id>"
	arrived     map[string]int    // video → parallel actions that arrived
	together    map[string]chan struct{}
	maxTogether map[string]int // video → most parallel actions in flight at once
	inFlight    map[string]int
	out         io.Writer
}

func newServices(out io.Writer) *services {
	return &services{answered: map[string][]byte{}, artifacts: map[string]string{}, arrived: map[string]int{},
		together: map[string]chan struct{}{}, maxTogether: map[string]int{}, inFlight: map[string]int{}, out: out}
}

// delivery is the body Accord POSTs (docs/participants.md).
type delivery struct {
	Phase          string          `json:"phase"`
	Operation      string          `json:"operation"`
	Attempt        int             `json:"attempt"`
	IdempotencyKey string          `json:"idempotency_key"`
	Input          json.RawMessage `json:"input"`
}

func (s *services) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var d delivery
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&d); err != nil || d.IdempotencyKey == "" {
		http.Error(w, "a delivery with an idempotency_key is required", http.StatusBadRequest)
		return
	}
	raw := d.Input
	if d.Phase == "compensation" {
		var comp struct {
			Input json.RawMessage `json:"input"`
		}
		if err := json.Unmarshal(d.Input, &comp); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		raw = comp.Input
	}
	var v Video
	if err := json.Unmarshal(raw, &v); err != nil || v.ID == "" {
		refuse(w, "bad_input", "a video id is required")
		return
	}
	service := strings.TrimPrefix(r.URL.Path, "/")
	s.mu.Lock()
	prev, seen := s.answered[d.IdempotencyKey]
	s.mu.Unlock()
	if seen { // a redelivery: answer as the first time
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(prev)
		return
	}
	if d.Phase == "action" && service != "processed" {
		if err := s.meet(r.Context(), v.ID); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		defer s.leave(v.ID)
	}
	body, err := s.once(d.IdempotencyKey, service, d.Operation, v)
	outcome := "ok"
	if err != nil {
		outcome = err.Error()
	}
	fmt.Fprintf(s.out, "  %-10s %-18s %-8s attempt %d -> %s\n", service, d.Operation, v.ID, d.Attempt, outcome)
	if err != nil {
		refuse(w, "unsupported_codec", err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(body)
}

// meet waits, at most parallel, until the three parallel actions of a video
// have all arrived.
func (s *services) meet(ctx context.Context, video string) error {
	s.mu.Lock()
	ch, ok := s.together[video]
	if !ok {
		ch = make(chan struct{})
		s.together[video] = ch
	}
	s.arrived[video]++
	if s.arrived[video] == 3 {
		close(ch)
	}
	s.inFlight[video]++
	s.maxTogether[video] = max(s.maxTogether[video], s.inFlight[video])
	s.mu.Unlock()
	select {
	case <-ch:
	case <-time.After(parallel):
	case <-ctx.Done():
		s.leave(video)
		return ctx.Err()
	}
	return nil
}

func (s *services) leave(video string) {
	s.mu.Lock()
	s.inFlight[video]--
	s.mu.Unlock()
}

var errCodec = errors.New("unsupported codec")

// once makes a delivery's effect and records its answer under its
// idempotency key, atomically: of two concurrent deliveries of one key,
// the second answers from the record.
func (s *services) once(idemKey, service, op string, v Video) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if prev, ok := s.answered[idemKey]; ok {
		return prev, nil
	}
	out, err := s.do(service, op, v)
	if err != nil {
		return nil, err
	}
	body, err := json.Marshal(out)
	if err != nil {
		return nil, err
	}
	s.answered[idemKey] = body
	return body, nil
}

// do makes one effect; s.mu is held.
func (s *services) do(service, op string, v Video) (any, error) {
	key := v.ID + "/" + service
	switch op {
	case "transcode":
		if v.Codec == "av1" {
			return nil, fmt.Errorf("%w %s", errCodec, v.Codec)
		}
		s.artifacts[key] = "made"
		return map[string]any{"renditions": []string{"1080p", "720p", "480p"}}, nil
	case "make_thumbnails":
		s.artifacts[key] = "made"
		return map[string]any{"thumbnails": 3}, nil
	case "extract_metadata":
		s.artifacts[key] = "made"
		return map[string]any{"codec": v.Codec}, nil
	case "delete_renditions", "delete_thumbnails", "delete_metadata":
		if s.artifacts[key] == "made" {
			s.artifacts[key] = "deleted"
		}
		return map[string]any{}, nil
	case "video_processed":
		s.events = append(s.events, "VideoProcessed "+v.ID)
		return map[string]any{}, nil
	}
	return nil, fmt.Errorf("unknown operation %q", op)
}

func refuse(w http.ResponseWriter, code, detail string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(http.StatusUnprocessableEntity)
	_ = json.NewEncoder(w).Encode(map[string]string{"type": "about:blank", "title": "refused", "detail": detail, "code": code})
}

// processed is how one video's saga ended.
type processed struct {
	Video  Video
	SagaID string
	Status string
}

// run serves the services on a loopback port, registers the saga, and
// processes the videos one after the other.
func run(ctx context.Context, c *client.Client, s *services, videos []Video) ([]processed, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	srv := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }() // ends with ErrServerClosed below
	defer srv.Close()
	base := "http://" + ln.Addr().String()
	// The port is new at every run, so the definition is too: register
	// it under the first version not taken by another document.
	version := 0
	for v := 1; v <= 1000 && version == 0; v++ {
		_, _, err := c.RegisterDefinition(ctx, fmt.Appendf(nil, definitionTemplate, base, v), "application/yaml")
		switch {
		case err == nil:
			version = v
		case !client.IsConflict(err):
			return nil, fmt.Errorf("register the video saga: %w", err)
		}
	}
	if version == 0 {
		return nil, errors.New("register the video saga: versions 1 to 1000 are taken")
	}
	var out []processed
	for _, v := range videos {
		fmt.Fprintf(s.out, "VideoUploaded %s (%s)\n", v.ID, v.Codec)
		started, err := c.StartSaga(ctx, client.StartRequest{Definition: "video", Version: version, Input: v})
		if err != nil {
			return out, err
		}
		saga, err := c.WaitSaga(ctx, started.ID)
		if err != nil {
			return out, err
		}
		fmt.Fprintf(s.out, "saga %s ended %s\n\n", saga.ID, saga.Status)
		out = append(out, processed{Video: v, SagaID: saga.ID, Status: saga.Status})
	}
	return out, nil
}

func main() {
	server := flag.String("server", envOr("ACCORD_SERVER", "http://127.0.0.1:7780"), "Accord server URL (on a non-loopback address, run it with --push-allow 'http://127.0.0.1:*')")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	c, err := client.New(*server)
	if err != nil {
		fmt.Fprintln(os.Stderr, "video:", err)
		os.Exit(1)
	}
	suffix := time.Now().Format("150405")
	videos := []Video{{ID: "cat-" + suffix, Codec: "h264"}, {ID: "dog-" + suffix, Codec: "av1"}}
	if _, err := run(ctx, c, newServices(os.Stdout), videos); err != nil {
		fmt.Fprintln(os.Stderr, "video:", err)
		os.Exit(1)
	}
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
