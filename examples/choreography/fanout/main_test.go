package main

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/accord-saga/accord/examples/internal/exampletest"
)

// TestFanout runs the flow against a real server: each of the three
// services saw every upload, and each upload's trace shows the three
// groups done.
func TestFanout(t *testing.T) {
	c := exampletest.StartServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := run(ctx, c, sampleUploads, exampletest.Log(t))
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, up := range sampleUploads {
		ids = append(ids, up.ID)
	}
	slices.Sort(ids)
	for _, svc := range services {
		if !slices.Equal(res.Seen[svc], ids) {
			t.Errorf("%s saw %v, want %v", svc, res.Seen[svc], ids)
		}
	}
	groups := slices.Clone(services)
	slices.Sort(groups)
	for _, up := range sampleUploads {
		exampletest.CheckTrace(t, c, res.Flows[up.ID], [][2]string{{topicUploaded, strings.Join(groups, ",")}})
	}
}
