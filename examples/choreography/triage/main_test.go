package main

import (
	"context"
	"testing"
	"time"

	"github.com/accord-saga/accord/examples/internal/exampletest"
)

// TestTriage runs the flow against a real server: every ticket is
// classified and its team notified exactly once — the notification whose
// ack was lost is redelivered and not sent again — and each flow's trace
// shows every group done.
func TestTriage(t *testing.T) {
	c := exampletest.StartServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := run(ctx, c, t.TempDir(), sampleTickets, exampletest.Log(t))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"T-1": "#billing", "T-2": "#engineering", "T-3": "#accounts", "T-4": "#support"}
	count := map[string]int{}
	for _, n := range res.Notifications {
		count[n.Ticket]++
		if n.Channel != want[n.Ticket] {
			t.Errorf("ticket %s notified %s, want %s", n.Ticket, n.Channel, want[n.Ticket])
		}
		if n.CorrelationID != res.Flows[n.Ticket] {
			t.Errorf("ticket %s notified with correlation id %q, want its flow's %q", n.Ticket, n.CorrelationID, res.Flows[n.Ticket])
		}
	}
	for id := range want {
		if count[id] != 1 {
			t.Errorf("ticket %s notified %d times, want once", id, count[id])
		}
	}
	if res.Duplicates < 1 {
		t.Errorf("no redelivery reached the notifier; the lost ack should have caused one")
	}
	if len(res.Notifications) != len(want) {
		t.Errorf("%d notifications, want %d", len(res.Notifications), len(want))
	}
	for _, tk := range sampleTickets {
		exampletest.CheckTrace(t, c, res.Flows[tk.ID], [][2]string{
			{topicCreated, groupClassifier}, {topicClassified, groupNotifier},
		})
	}
}
