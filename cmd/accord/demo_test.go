package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/accord-saga/accord/examples/order/shop"
	"github.com/accord-saga/accord/sdk/client"
)

// syncBuffer is an io.Writer safe for the demo's concurrent printing.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestDemoScenarios runs every scenario of accord demo against its embedded
// server and checks how each ended from the outside: the saga's status and
// log through the API, and the rows in the services' own databases.
func TestDemoScenarios(t *testing.T) {
	if testing.Short() {
		t.Skip("the demo takes about ten seconds")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out := &syncBuffer{}
	d, err := startDemo(ctx, t.TempDir(), "127.0.0.1:0", out)
	if err != nil {
		t.Fatal(err)
	}
	defer d.close()
	results := d.runScenarios(ctx, 2*time.Second)
	d.summary(results)
	t.Log("\n" + out.String())
	if len(results) != len(scenarios()) {
		t.Fatalf("%d results for %d scenarios", len(results), len(scenarios()))
	}
	byOrder := map[string]*result{}
	for _, r := range results {
		if !r.ok() {
			t.Errorf("%s: %v", r.input.OrderID, r.problems)
		}
		byOrder[r.input.OrderID] = r
	}

	// The saga log, read here, not through the runner.
	undone := func(id string) []string {
		t.Helper()
		page, err := d.client.SagaEvents(ctx, id, client.EventOptions{Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		var steps []string
		for _, ev := range page.Items {
			if ev.Type == "compensation.succeeded" {
				var body struct{ Step string }
				if err := json.Unmarshal(ev.Data, &body); err != nil {
					t.Fatal(err)
				}
				steps = append(steps, body.Step)
			}
		}
		return steps
	}
	wantSagas := map[string]struct {
		status string
		undone []string
	}{
		"o-1001": {"completed", nil},
		"o-1002": {"compensated", []string{"order"}},
		"o-1003": {"compensated", []string{"payment", "order"}},
		"o-1004": {"compensated", []string{"shipping", "inventory", "payment", "order"}},
		"o-1005": {"completed", nil},
		"o-1006": {"completed", nil},
	}
	for order, want := range wantSagas {
		r := byOrder[order]
		if r == nil || r.sagaID == "" {
			t.Errorf("%s: no saga", order)
			continue
		}
		s, err := d.client.GetSaga(ctx, r.sagaID)
		if err != nil {
			t.Fatal(err)
		}
		if s.Status != want.status {
			t.Errorf("%s: saga %s, want %s", order, s.Status, want.status)
		}
		if got := undone(r.sagaID); !slices.Equal(got, want.undone) {
			t.Errorf("%s: compensated %v, want %v (last done, first undone)", order, got, want.undone)
		}
	}

	// The services' own records.
	query := func(service, q string, args ...any) []string {
		t.Helper()
		rows, err := d.shop.DB(service).QueryContext(ctx, q, args...)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var out []string
		for rows.Next() {
			var a, b sql.NullString
			if err := rows.Scan(&a, &b); err != nil {
				t.Fatal(err)
			}
			out = append(out, a.String+"="+b.String)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		return out
	}
	check := func(what string, got []string, want ...string) {
		t.Helper()
		if !slices.Equal(got, want) {
			t.Errorf("%s: %v, want %v", what, got, want)
		}
	}
	check("orders", query(shop.Order, `SELECT id, status FROM orders ORDER BY id`),
		"o-1001=confirmed", "o-1002=cancelled", "o-1003=cancelled", "o-1004=cancelled", "o-1005=confirmed", "o-1006=confirmed")
	// The declined card charged nothing; the other failures were refunded.
	check("payments", query(shop.Payment, `SELECT order_id, status FROM payments ORDER BY order_id`),
		"o-1001=charged", "o-1003=refunded", "o-1004=refunded", "o-1005=charged", "o-1006=charged")
	// The vase was out of stock, so o-1003 reserved nothing at all.
	check("reservations", query(shop.Inventory, `SELECT order_id || ':' || sku, status FROM reservations ORDER BY order_id`),
		"o-1001:book=reserved", "o-1004:book=released", "o-1005:book=reserved", "o-1006:book=reserved")
	check("stock", query(shop.Inventory, `SELECT sku, qty FROM stock ORDER BY sku`),
		"book=94", "lamp=10", "vase=0")
	// The shipment that never answered left nothing (a null compensation);
	// the one booked across the server restart exists once.
	check("shipments", query(shop.Shipping, `SELECT order_id, status FROM shipments ORDER BY order_id`),
		"o-1001=booked", "o-1005=booked", "o-1006=booked")

	// The outage: the breaker opened and closed, and the log shows the
	// payment service's 503s.
	if r := byOrder["o-1005"]; r != nil {
		if !slices.Contains(r.breakers, "open") || r.breakers[len(r.breakers)-1] != "closed" {
			t.Errorf("breaker states %v, want open then closed", r.breakers)
		}
	}
	for _, want := range []string{"http_503", "stopping the server while shipping is answering book", "Summary"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the demo's output lacks %q", want)
		}
	}
}

// TestDemoCommand runs accord demo --exit as a user would.
func TestDemoCommand(t *testing.T) {
	if testing.Short() {
		t.Skip("the demo takes about ten seconds")
	}
	dir := filepath.Join(t.TempDir(), "demo")
	code, stdout, stderr := runAccordTimeout(t, 2*time.Minute, "demo", "--exit", "--data", dir, "--down-for", "2s")
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	if n := strings.Count(stdout, "as expected"); n != len(scenarios()) {
		t.Errorf("%d scenarios as expected, want %d:\n%s", n, len(scenarios()), stdout)
	}
	if strings.Contains(stdout, "NOT AS EXPECTED") || strings.Contains(stdout, "FAILED") {
		t.Errorf("a scenario failed:\n%s", stdout)
	}
	for _, db := range []string{"server", "services/order.db", "services/payment.db"} {
		if _, err := os.Stat(filepath.Join(dir, db)); err != nil {
			t.Errorf("--data: %v", err)
		}
	}
	// A second run refuses the used directory rather than mixing orders.
	code, _, stderr = runAccordTimeout(t, 30*time.Second, "demo", "--exit", "--data", dir)
	if code != 2 || !strings.Contains(stderr, "not empty") {
		t.Errorf("demo on a used --data: exit %d, stderr %q; want 2 and 'not empty'", code, stderr)
	}
}

// runAccordTimeout runs the binary to its end, within limit, and returns its
// exit code, stdout and stderr.
func runAccordTimeout(t *testing.T, limit time.Duration, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, accordBin, args...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		return ee.ExitCode(), stdout.String(), stderr.String()
	case err != nil:
		t.Fatalf("run accord: %v", err)
	}
	return 0, stdout.String(), stderr.String()
}
