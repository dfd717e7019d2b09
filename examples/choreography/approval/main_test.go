package main

import (
	"context"
	"testing"
	"time"

	"github.com/accord-saga/accord/examples/internal/exampletest"
)

// TestApproval runs the flow against a real server: the webhook endpoint
// received every document's approval, once, with the flow's correlation
// id, and each flow's trace shows every group done.
func TestApproval(t *testing.T) {
	c := exampletest.StartServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := run(ctx, c, sampleDocs, exampletest.Log(t))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for _, r := range res.Received {
		got[r.Approval.Document]++
		if r.CorrelationID != res.Flows[r.Approval.Document] {
			t.Errorf("approval of %s carried correlation id %q, want %q", r.Approval.Document, r.CorrelationID, res.Flows[r.Approval.Document])
		}
		if r.Approval.Reviewer == "" {
			t.Errorf("approval of %s names no reviewer", r.Approval.Document)
		}
	}
	for _, d := range sampleDocs {
		if got[d.ID] != 1 {
			t.Errorf("webhook received %d approvals of %s, want 1", got[d.ID], d.ID)
		}
		exampletest.CheckTrace(t, c, res.Flows[d.ID], [][2]string{
			{topicSubmitted, groupReviewer}, {topicApproved, groupWebhook},
		})
	}
}
