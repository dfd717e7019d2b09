package main

import (
	"context"
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/accord-saga/accord/examples/internal/exampletest"
	"github.com/accord-saga/accord/sdk/client"
)

// TestVideo runs the saga against a real server with the push
// participants: the three processing steps run at the same time and the
// announcement waits for all three; when transcoding fails, what the other
// two made is deleted and nothing is announced.
func TestVideo(t *testing.T) {
	c := exampletest.StartServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s := newServices(exampletest.Log(t))
	got, err := run(ctx, c, s, []Video{{ID: "cat", Codec: "h264"}, {ID: "dog", Codec: "av1"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Status != "completed" || got[1].Status != "compensated" {
		t.Fatalf("sagas ended %+v, want cat completed and dog compensated", got)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.maxTogether["cat"] != 3 || s.maxTogether["dog"] != 3 {
		t.Errorf("at most %d (cat) and %d (dog) of the three steps ran at once, want 3: they start together",
			s.maxTogether["cat"], s.maxTogether["dog"])
	}
	want := map[string]string{
		"cat/transcode": "made", "cat/thumbnails": "made", "cat/metadata": "made",
		"dog/thumbnails": "deleted", "dog/metadata": "deleted",
	}
	if len(s.artifacts) != len(want) {
		t.Errorf("artifacts %v, want %v", s.artifacts, want)
	}
	for k, v := range want {
		if s.artifacts[k] != v {
			t.Errorf("artifact %s: %q, want %q", k, s.artifacts[k], v)
		}
	}
	if !slices.Equal(s.events, []string{"VideoProcessed cat"}) {
		t.Errorf("announced %v, want VideoProcessed for cat only", s.events)
	}
	// The join: the announcement was scheduled after all three succeeded.
	page, err := c.SagaEvents(ctx, got[0].SagaID, client.EventOptions{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	for _, ev := range page.Items {
		if ev.Type == "step.succeeded" || ev.Type == "step.scheduled" {
			var body struct{ Step string }
			if err := json.Unmarshal(ev.Data, &body); err != nil {
				t.Fatal(err)
			}
			order = append(order, ev.Type+" "+body.Step)
		}
	}
	at := slices.Index(order, "step.scheduled processed")
	if at < 0 {
		t.Fatalf("log %v: processed never scheduled", order)
	}
	for _, step := range []string{"transcode", "thumbnails", "metadata"} {
		if i := slices.Index(order, "step.succeeded "+step); i < 0 || i > at {
			t.Errorf("log %v: %s did not succeed before processed was scheduled", order, step)
		}
	}
	dog, err := c.GetSaga(ctx, got[1].SagaID)
	if err != nil {
		t.Fatal(err)
	}
	if dog.FailedStep != "transcode" {
		t.Errorf("dog: failed step %q, want transcode", dog.FailedStep)
	}
}
