package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/accord-saga/accord/examples/order/shop"
	"github.com/accord-saga/accord/internal/server"
	"github.com/accord-saga/accord/sdk/client"
)

func newDemoCommand() *cobra.Command {
	var opts demoOptions
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run the order saga example against an embedded server, through failures and a server restart",
		Long: `demo starts an Accord server in this process, on a fresh data directory, and
the order example's four services (order, payment, inventory, shipping: see
examples/order). It then runs orders through every kind of ending and prints
each as a timeline: one that completes, a declined card, an item out of
stock, a shipping service that never answers, a payment service that is down
for a few seconds, and a server restart while a step is in flight. It ends
with a summary and keeps the server running for the CLI until Ctrl-C; with
--exit it stops instead, and exits 1 if any order did not end as expected.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			opts.out = cmd.OutOrStdout()
			return runDemoCommand(cmd.Context(), opts)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&opts.exit, "exit", false, "stop when the scenarios are done; exit 1 if any did not end as expected")
	f.StringVar(&opts.dir, "data", "", "directory for the server's and the services' data (must not exist or be empty; default a temporary directory, removed at the end)")
	f.StringVar(&opts.addr, "addr", "127.0.0.1:0", "listen address of the embedded server (port 0: a free port)")
	f.DurationVar(&opts.downFor, "down-for", 3*time.Second, "how long the payment service is down in the outage scenario")
	return cmd
}

type demoOptions struct {
	exit    bool
	dir     string
	addr    string
	downFor time.Duration
	out     io.Writer
}

func runDemoCommand(ctx context.Context, opts demoOptions) error {
	dir := opts.dir
	if dir == "" {
		tmp, err := os.MkdirTemp("", "accord-demo-")
		if err != nil {
			return fmt.Errorf("demo: %w", err)
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	} else if entries, err := os.ReadDir(dir); err == nil && len(entries) > 0 {
		return &exitError{code: 2, err: fmt.Errorf("demo: --data %s is not empty: the demo starts from nothing", dir)}
	}
	d, err := startDemo(ctx, dir, opts.addr, opts.out)
	if err != nil {
		return err
	}
	defer d.close()
	results := d.runScenarios(ctx, opts.downFor)
	d.summary(results)
	failed := 0
	for _, r := range results {
		if !r.ok() {
			failed++
		}
	}
	if opts.exit {
		if failed > 0 {
			return &exitError{code: 1, err: fmt.Errorf("demo: %d of %d scenarios did not end as expected", failed, len(results))}
		}
		return nil
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	url := d.client.BaseURL()
	where := dir
	if opts.dir == "" {
		where += ", removed when the demo stops"
	}
	example := "SAGA_ID"
	for _, r := range results {
		if r.status == "compensated" && len(r.undone) > 1 {
			example = r.sagaID
			break
		}
	}
	fmt.Fprintf(d.out, `
The server keeps running at %[1]s (data in %[2]s). In another terminal:

  export ACCORD_SERVER=%[1]s
  go run ./cmd/accord saga list
  go run ./cmd/accord saga list --status compensated
  go run ./cmd/accord saga get %[3]s
  go run ./cmd/accord definition get order
  go run ./cmd/accord saga start order --wait --input '{"order_id":"o-2001","customer":"you","card":"4242-4242-4242-4242","items":[{"sku":"book","qty":1}],"total":1200,"address":"1 Main St"}'
  curl -s %[1]s/v1/breakers

Ctrl-C stops it. What the services answer from now on:
`, url, where, example)
	d.mu.Lock()
	d.t0 = time.Now()
	d.mu.Unlock()
	<-ctx.Done()
	return nil
}

// demo is an embedded server and the shop's services.
type demo struct {
	dir    string
	cfg    server.Config
	out    io.Writer
	shop   *shop.Services
	client *client.Client

	mu      sync.Mutex     // serializes output
	t0      time.Time      // start of the current scenario
	calls   map[string]int // "<service> <operation> <order> <outcome>" → deliveries answered
	srvStop context.CancelFunc
	srvDone chan error
}

// startDemo starts the server on dir/server and the services on
// dir/services, and registers the order saga.
func startDemo(ctx context.Context, dir, addr string, out io.Writer) (*demo, error) {
	if addr == "" || strings.HasSuffix(addr, ":0") {
		// The server restarts on the same port, so pick it now.
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("demo: find a free port: %w", err)
		}
		addr = ln.Addr().String()
		ln.Close()
	}
	cfg := server.DefaultConfig()
	cfg.Addr = addr
	cfg.DataDir = filepath.Join(dir, "server")
	cfg.Partitions = 4
	cfg.PushAllow = []string{"http://127.0.0.1:*"}
	cfg.PushBreakerFailures = 3
	cfg.PushBreakerOpen = time.Second
	cfg.ShutdownTimeout = 500 * time.Millisecond
	cfg.LogLevel = "error"
	cfg.Version = version
	d := &demo{dir: dir, cfg: cfg, out: out, t0: time.Now(), calls: map[string]int{}}
	svcs, err := shop.Start(ctx, shop.Options{Dir: filepath.Join(dir, "services"), OnCall: d.printCall})
	if err != nil {
		return nil, fmt.Errorf("demo: %w", err)
	}
	d.shop = svcs
	if err := d.startServer(ctx); err != nil {
		svcs.Close()
		return nil, err
	}
	if _, _, err := d.client.RegisterDefinition(ctx, svcs.Definition(), "application/yaml"); err != nil {
		d.close()
		return nil, fmt.Errorf("demo: register the order saga: %w", err)
	}
	fmt.Fprintf(out, "Accord demo: server at %s, services order %s, payment %s, inventory %s, shipping %s\n",
		d.client.BaseURL(), svcs.URL(shop.Order), svcs.URL(shop.Payment), svcs.URL(shop.Inventory), svcs.URL(shop.Shipping))
	fmt.Fprintln(out, "saga \"order\": order (pending) → payment → inventory → shipping → confirm (pivot: the order becomes confirmed)")
	return d, nil
}

// startServer runs the server in this process and waits until it is ready.
func (d *demo) startServer(ctx context.Context) error {
	sctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan error, 1)
	go func() { done <- server.Run(sctx, d.cfg) }()
	d.srvStop, d.srvDone = stop, done
	url := "http://" + d.cfg.Addr
	if d.client == nil {
		c, err := client.New(url)
		if err != nil {
			stop()
			return fmt.Errorf("demo: %w", err)
		}
		d.client = c
	}
	deadline := time.NewTimer(30 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url+"/readyz", nil)
		if res, err := http.DefaultClient.Do(req); err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case err := <-done:
			return fmt.Errorf("demo: server: %w", err)
		case <-ctx.Done():
			d.stopServer()
			return ctx.Err()
		case <-deadline.C:
			d.stopServer()
			return errors.New("demo: the server was not ready within 30s")
		case <-tick.C:
		}
	}
}

// stopServer shuts the server down and waits for it.
func (d *demo) stopServer() error {
	if d.srvStop == nil {
		return nil
	}
	d.srvStop()
	err := <-d.srvDone
	d.srvStop = nil
	return err
}

func (d *demo) close() {
	if err := d.stopServer(); err != nil {
		fmt.Fprintln(d.out, "demo: server:", err)
	}
	d.shop.Close()
}

// printf prints one timeline line, stamped with the time since the
// scenario began.
func (d *demo) printf(who, format string, args ...any) {
	d.mu.Lock()
	defer d.mu.Unlock()
	fmt.Fprintf(d.out, "  %5.2fs  %-10s %s\n", time.Since(d.t0).Seconds(), who, fmt.Sprintf(format, args...))
}

func (d *demo) printCall(c shop.Call) {
	d.mu.Lock()
	d.calls[c.Service+" "+c.Operation+" "+c.OrderID+" "+c.Outcome]++
	d.mu.Unlock()
	outcome := c.Outcome
	if c.Code != "" {
		outcome += " (" + c.Code + ")"
	}
	d.printf(c.Service, "%-16s %-12s attempt %s -> %s", c.Operation, c.Phase, c.Attempt, outcome)
}

// scenario is one order and how it must end.
type scenario struct {
	title       string
	input       shop.Input
	wantStatus  string
	wantRecords shop.Records
	wantUndone  []string // compensated steps, in the order they were undone
	down        bool     // the payment service is down when the order starts
	restart     bool     // the server restarts while shipping is in flight
}

// result is how a scenario ended.
type result struct {
	scenario
	sagaID   string
	status   string
	records  shop.Records
	undone   []string
	breakers []string // states the payment endpoint's breaker went through
	problems []string
}

func (r *result) ok() bool { return len(r.problems) == 0 }

func (r *result) fail(format string, args ...any) {
	r.problems = append(r.problems, fmt.Sprintf(format, args...))
}

func scenarios() []scenario {
	order := func(id, card string, items []shop.Item, fault string) shop.Input {
		total := 0
		for _, it := range items {
			total += it.Qty * 1200
		}
		return shop.Input{OrderID: id, Customer: "ada", Card: card, Items: items, Total: total,
			Address: "12 Analytical Row, London", ShippingFault: fault}
	}
	good := "4242-4242-4242-4242"
	books := []shop.Item{{SKU: "book", Qty: 2}}
	done := shop.Records{Order: "confirmed", Payment: "charged", Reservation: map[string]string{"book": "reserved"}, Shipment: "booked"}
	return []scenario{
		{title: "an order that completes", input: order("o-1001", good, books, ""),
			wantStatus: "completed", wantRecords: done},
		{title: "the card is declined: the order is cancelled", input: order("o-1002", shop.DeclinedCard, books, ""),
			wantStatus: "compensated", wantUndone: []string{"order"},
			wantRecords: shop.Records{Order: "cancelled", Reservation: map[string]string{}}},
		{title: "a vase is out of stock: the payment is refunded, then the order cancelled",
			input:      order("o-1003", good, []shop.Item{{SKU: "book", Qty: 1}, {SKU: "vase", Qty: 1}}, ""),
			wantStatus: "compensated", wantUndone: []string{"payment", "order"},
			wantRecords: shop.Records{Order: "cancelled", Payment: "refunded", Reservation: map[string]string{}}},
		{title: "the shipping service never answers: every done step is undone, last first",
			input:      order("o-1004", good, books, "timeout"),
			wantStatus: "compensated", wantUndone: []string{"shipping", "inventory", "payment", "order"},
			wantRecords: shop.Records{Order: "cancelled", Payment: "refunded", Reservation: map[string]string{"book": "released"}}},
		{title: "the payment service is down for a while: retries, the breaker opens and closes",
			input: order("o-1005", good, books, ""), down: true,
			wantStatus: "completed", wantRecords: done},
		{title: "the server restarts while the shipment is being booked",
			input: order("o-1006", good, books, "slow"), restart: true,
			wantStatus: "completed", wantRecords: done},
	}
}

// runScenarios runs every scenario in turn.
func (d *demo) runScenarios(ctx context.Context, downFor time.Duration) []*result {
	var out []*result
	for i, sc := range scenarios() {
		if ctx.Err() != nil {
			break
		}
		d.mu.Lock()
		fmt.Fprintf(d.out, "\n(%c) %s — order %s\n", 'a'+i, sc.title, sc.input.OrderID)
		d.t0 = time.Now()
		d.mu.Unlock()
		r := &result{scenario: sc}
		d.run(ctx, r, downFor)
		out = append(out, r)
		if r.ok() {
			d.printf("result", "as expected")
		} else {
			d.printf("result", "NOT AS EXPECTED: %s", strings.Join(r.problems, "; "))
		}
	}
	return out
}

// run runs one scenario and checks how it ended: the saga's status, the
// services' own records, and which steps were undone in which order.
func (d *demo) run(ctx context.Context, r *result, downFor time.Duration) {
	var stopWatch func() []string
	if r.down {
		if err := d.shop.Down(shop.Payment, downFor); err != nil {
			r.fail("%v", err)
			return
		}
		d.printf("payment", "is down for %s: it answers 503 to everything", downFor)
		stopWatch = d.watchBreaker(ctx, d.shop.URL(shop.Payment))
	}
	started, err := d.client.StartSaga(ctx, client.StartRequest{Definition: shop.DefinitionName, Input: r.input})
	if err != nil {
		r.fail("start: %v", err)
		return
	}
	r.sagaID = started.ID
	d.printf("accord", "saga %s started", started.ID)
	if r.restart {
		if err := d.restartDuring(ctx, shop.Shipping, "book"); err != nil {
			r.fail("restart: %v", err)
			return
		}
	}
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	s, err := d.client.WaitSaga(wctx, started.ID)
	cancel()
	if stopWatch != nil {
		r.breakers = stopWatch()
	}
	if err != nil {
		r.fail("wait: %v", err)
		return
	}
	r.status = s.Status
	d.printf("accord", "saga ended %s", s.Status)

	events, err := d.allEvents(ctx, s.ID)
	if err != nil {
		r.fail("read the saga log: %v", err)
		return
	}
	retries := map[string][]string{}
	for _, ev := range events {
		var body struct {
			Step  string `json:"step"`
			Error struct {
				Code string `json:"code"`
			} `json:"error"`
		}
		_ = json.Unmarshal(ev.Data, &body)
		switch ev.Type {
		case "compensation.succeeded":
			r.undone = append(r.undone, body.Step)
		case "step.failed", "step.timed_out":
			code := body.Error.Code
			if ev.Type == "step.timed_out" {
				code = "timed out"
			}
			retries[body.Step] = append(retries[body.Step], code)
		}
	}
	for _, step := range []string{"order", "payment", "inventory", "shipping", "confirm"} {
		if fails := retries[step]; len(fails) > 0 {
			noun := "attempts"
			if len(fails) == 1 {
				noun = "attempt"
			}
			d.printf("log", "%s: %d failed %s: %s", step, len(fails), noun, summarizeCodes(fails))
		}
	}
	if len(r.undone) > 0 {
		d.printf("log", "undone, in this order: %s", strings.Join(r.undone, " → "))
	}
	if r.down {
		d.printf("breaker", "payment endpoint went %s", strings.Join(r.breakers, " → "))
	}

	r.records, err = d.shop.Records(ctx, r.input.OrderID)
	if err != nil {
		r.fail("records: %v", err)
		return
	}
	d.printf("records", "%s", r.records)

	if r.status != r.wantStatus {
		r.fail("saga ended %s, want %s", r.status, r.wantStatus)
	}
	if !slices.Equal(r.undone, r.wantUndone) {
		r.fail("undone %v, want %v", r.undone, r.wantUndone)
	}
	if got, want := r.records, r.wantRecords; got.Order != want.Order || got.Payment != want.Payment ||
		got.Shipment != want.Shipment || !mapsEqual(got.Reservation, want.Reservation) {
		r.fail("records: %s, want %s", got, want)
	}
	if r.restart {
		// The booking in flight when the server stopped was delivered
		// again after the restart, and answered from the shipping
		// service's idempotency record: one shipment, not two.
		d.mu.Lock()
		replayed := d.calls[shop.Shipping+" book "+r.input.OrderID+" replayed"]
		d.mu.Unlock()
		if replayed == 0 {
			r.fail("the booking was not delivered again after the restart")
		}
	}
	if r.down {
		if !slices.Contains(r.breakers, "open") || len(r.breakers) == 0 || r.breakers[len(r.breakers)-1] != "closed" {
			r.fail("breaker went %v, want it to open and close again", r.breakers)
		}
		if len(retries["payment"]) == 0 {
			r.fail("no failed payment attempts in the log")
		}
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// summarizeCodes turns [http_503 http_503 circuit_open] into
// "http_503 ×2, circuit_open".
func summarizeCodes(codes []string) string {
	var parts []string
	for i := 0; i < len(codes); {
		j := i
		for j < len(codes) && codes[j] == codes[i] {
			j++
		}
		if j-i > 1 {
			parts = append(parts, fmt.Sprintf("%s ×%d", codes[i], j-i))
		} else {
			parts = append(parts, codes[i])
		}
		i = j
	}
	return strings.Join(parts, ", ")
}

func (d *demo) allEvents(ctx context.Context, id string) ([]client.SagaEvent, error) {
	var all []client.SagaEvent
	opts := client.EventOptions{Limit: 1000}
	for {
		page, err := d.client.SagaEvents(ctx, id, opts)
		if err != nil {
			return nil, err
		}
		all = append(all, page.Items...)
		if page.NextCursor == "" {
			return all, nil
		}
		opts.Cursor = page.NextCursor
	}
}

// restartDuring waits until a service is answering an operation, then
// stops the server and starts it again on the same data.
func (d *demo) restartDuring(ctx context.Context, service, operation string) error {
	deadline := time.Now().Add(30 * time.Second)
	for d.shop.InFlight(service, operation) == 0 {
		if time.Now().After(deadline) {
			return fmt.Errorf("%s %s was never called", service, operation)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
	d.printf("accord", "stopping the server while %s is answering %s", service, operation)
	if err := d.stopServer(); err != nil {
		return fmt.Errorf("stop the server: %w", err)
	}
	d.printf("accord", "server stopped; starting it again on the same data")
	if err := d.startServer(ctx); err != nil {
		return err
	}
	d.printf("accord", "server is ready again: it recovered the saga from its log")
	return nil
}

// watchBreaker records the states the breaker of an endpoint goes through,
// reading GET /v1/breakers, until the returned function is called.
func (d *demo) watchBreaker(ctx context.Context, endpoint string) func() []string {
	wctx, cancel := context.WithCancel(ctx)
	var (
		mu     sync.Mutex
		states []string
		wg     sync.WaitGroup
	)
	read := func() string {
		rctx, rcancel := context.WithTimeout(wctx, time.Second)
		defer rcancel()
		req, _ := http.NewRequestWithContext(rctx, http.MethodGet, d.client.BaseURL()+"/v1/breakers", nil)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			return ""
		}
		defer res.Body.Close()
		var body struct {
			Breakers []struct {
				Endpoint string `json:"endpoint"`
				State    string `json:"state"`
			} `json:"breakers"`
		}
		if res.StatusCode != http.StatusOK || json.NewDecoder(res.Body).Decode(&body) != nil {
			return ""
		}
		for _, b := range body.Breakers {
			if b.Endpoint == endpoint {
				return b.State
			}
		}
		return ""
	}
	note := func(s string) {
		mu.Lock()
		defer mu.Unlock()
		if s != "" && (len(states) == 0 || states[len(states)-1] != s) {
			states = append(states, s)
			d.printf("breaker", "payment endpoint is %s", s)
		}
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-wctx.Done():
				return
			case <-tick.C:
				note(read())
			}
		}
	}()
	return func() []string {
		// The breaker counts a call when it ends, which may be just after
		// the saga has moved on: give it a moment to record the last one.
		settle := time.Now().Add(5 * time.Second)
		for time.Now().Before(settle) && wctx.Err() == nil {
			mu.Lock()
			closed := len(states) > 0 && states[len(states)-1] == "closed"
			mu.Unlock()
			if closed {
				break
			}
			select {
			case <-wctx.Done():
			case <-time.After(10 * time.Millisecond):
			}
		}
		cancel()
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(states)
	}
}

// summary prints a table of the scenarios.
func (d *demo) summary(results []*result) {
	d.mu.Lock()
	defer d.mu.Unlock()
	fmt.Fprintln(d.out, "\nSummary")
	tw := tabwriter.NewWriter(d.out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  \torder\tsaga\tended\tundone\tservices' records\t")
	for i, r := range results {
		mark := "ok"
		if !r.ok() {
			mark = "FAILED"
		}
		undone := "-"
		if len(r.undone) > 0 {
			undone = strings.Join(r.undone, ",")
		}
		fmt.Fprintf(tw, "  (%c)\t%s\t%s\t%s\t%s\t%s\t%s\n", 'a'+i, r.input.OrderID, r.sagaID, r.status, undone, r.records, mark)
	}
	tw.Flush()
}
