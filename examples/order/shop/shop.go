// Package shop is the e-commerce order saga as four small services — order,
// payment, inventory and shipping — each owning its own SQLite database and
// serving its saga steps as an HTTP participant that Accord pushes to.
//
// Every step's effect and its idempotency record (sdk/guard) are written in
// one transaction of the service's own database, so a redelivered step has
// its effect once, a compensation for an action that never ran is a no-op,
// and an action that arrives after its compensation is refused.
//
// The order step writes the order as "pending": a semantic lock that tells
// everyone else the order is not final yet. Only the last step, confirm,
// makes it "confirmed"; the order step's compensation makes it
// "cancelled".
//
// Failures are injected through the saga input (a declined card, more
// items than are in stock, a shipping service that never answers or answers
// slowly) or with Services.Down (a service answering 503 for a while).
package shop

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	_ "modernc.org/sqlite" // the services' own databases

	"github.com/accord-saga/accord/sdk/guard"
)

// The services, in the order the saga calls them.
const (
	Order     = "order"
	Payment   = "payment"
	Inventory = "inventory"
	Shipping  = "shipping"
)

// Names lists the services.
var Names = []string{Order, Payment, Inventory, Shipping}

// DeclinedCard is the card number the payment service declines.
const DeclinedCard = "4000-0000-0000-0002"

// Item is one line of an order.
type Item struct {
	SKU string `json:"sku"`
	Qty int    `json:"qty"`
}

// Input is the saga input of an order.
type Input struct {
	OrderID  string `json:"order_id"`
	Customer string `json:"customer"`
	Card     string `json:"card"`
	Items    []Item `json:"items"`
	Total    int    `json:"total"` // cents
	Address  string `json:"address"`
	// ShippingFault injects a shipping failure: "timeout" (the shipping
	// service never answers the booking) or "slow" (it books the shipment
	// at once but answers only after SlowShipping).
	ShippingFault string `json:"shipping_fault,omitempty"`
}

// Options configures Start.
type Options struct {
	// Dir holds the services' databases (order.db, payment.db, ...).
	Dir string
	// Addr is the listen host, default 127.0.0.1; each service takes a
	// free port of its own, so each is its own endpoint with its own
	// circuit breaker in Accord.
	Addr string
	// Stock is the initial stock of a new inventory database. Default
	// DefaultStock.
	Stock map[string]int
	// SlowShipping is how long a "slow" shipping answer takes. Default 2s
	// (the shipping step's attempt timeout is 3s).
	SlowShipping time.Duration
	// OnCall, when set, is told of every delivery a service answered.
	OnCall func(Call)
}

// DefaultStock is the stock of a new inventory.
var DefaultStock = map[string]int{"book": 100, "lamp": 10, "vase": 0}

// Call is one delivery a service answered.
type Call struct {
	Service   string
	Operation string
	Phase     string // action or compensation
	Attempt   string
	OrderID   string
	// Outcome is "ok", "replayed" (answered from the idempotency record),
	// "no-op" (a compensation with nothing to undo), "refused" (a
	// business failure, with Code), "unavailable" (the service is down),
	// "no answer" (the caller gave up waiting) or "error".
	Outcome string
	Code    string
}

// Services are the four running services.
type Services struct {
	svcs   map[string]*service
	opts   Options
	closed atomic.Bool
}

// service is one participant: its database, its guard and its HTTP server.
type service struct {
	name      string
	db        *sql.DB
	guard     *guard.Guard
	ops       map[string]op
	srv       *http.Server
	url       string
	downUntil atomic.Int64 // unix nanoseconds
	onCall    func(Call)
	inFlight  sync.Map // operation → *atomic.Int32
	slow      time.Duration
	wg        sync.WaitGroup
}

// op is one operation: it makes its effect through tx and returns its
// output. A *Refusal is a business failure.
type op func(ctx context.Context, tx *sql.Tx, in json.RawMessage) (any, error)

// Refusal is a business failure: the step cannot succeed.
type Refusal struct {
	Code    string
	Message string
}

func (r *Refusal) Error() string { return r.Code + ": " + r.Message }

// Start opens the services' databases in opts.Dir and serves them until
// Close. ctx bounds the start only.
func Start(ctx context.Context, opts Options) (*Services, error) {
	if opts.Dir == "" {
		return nil, errors.New("shop: Options.Dir is required")
	}
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1"
	}
	if opts.Stock == nil {
		opts.Stock = DefaultStock
	}
	if opts.SlowShipping <= 0 {
		opts.SlowShipping = 2 * time.Second
	}
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("shop: %w", err)
	}
	g, err := guard.New(guard.Options{Dialect: guard.SQLite})
	if err != nil {
		return nil, fmt.Errorf("shop: %w", err)
	}
	s := &Services{svcs: map[string]*service{}, opts: opts}
	for _, name := range Names {
		svc, err := s.open(ctx, name, g)
		if err != nil {
			s.Close()
			return nil, err
		}
		s.svcs[name] = svc
	}
	return s, nil
}

var schemas = map[string][]string{
	Order: {`CREATE TABLE IF NOT EXISTS orders(
		id TEXT PRIMARY KEY, customer TEXT NOT NULL, total INTEGER NOT NULL,
		status TEXT NOT NULL, updated_at TEXT NOT NULL)`},
	Payment: {`CREATE TABLE IF NOT EXISTS payments(
		order_id TEXT PRIMARY KEY, card TEXT NOT NULL, amount INTEGER NOT NULL,
		status TEXT NOT NULL, updated_at TEXT NOT NULL)`},
	Inventory: {
		`CREATE TABLE IF NOT EXISTS stock(sku TEXT PRIMARY KEY, qty INTEGER NOT NULL CHECK (qty >= 0))`,
		`CREATE TABLE IF NOT EXISTS reservations(
			order_id TEXT NOT NULL, sku TEXT NOT NULL, qty INTEGER NOT NULL,
			status TEXT NOT NULL, PRIMARY KEY (order_id, sku))`,
	},
	Shipping: {`CREATE TABLE IF NOT EXISTS shipments(
		order_id TEXT PRIMARY KEY, address TEXT NOT NULL, status TEXT NOT NULL,
		updated_at TEXT NOT NULL)`},
}

func (s *Services) open(ctx context.Context, name string, g *guard.Guard) (*service, error) {
	path := filepath.Join(s.opts.Dir, name+".db")
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=journal_mode(WAL)&_pragma=busy_timeout(10000)&_txlock=immediate")
	if err != nil {
		return nil, fmt.Errorf("shop: open %s: %w", path, err)
	}
	db.SetMaxOpenConns(1)
	for _, stmt := range schemas[name] {
		if _, err := db.ExecContext(ctx, stmt); err != nil {
			db.Close()
			return nil, fmt.Errorf("shop: %s schema: %w", name, err)
		}
	}
	if name == Inventory {
		for sku, qty := range s.opts.Stock {
			if _, err := db.ExecContext(ctx, `INSERT OR IGNORE INTO stock(sku, qty) VALUES (?, ?)`, sku, qty); err != nil {
				db.Close()
				return nil, fmt.Errorf("shop: seed stock: %w", err)
			}
		}
	}
	if err := g.Migrate(ctx, db); err != nil {
		db.Close()
		return nil, fmt.Errorf("shop: %s guard table: %w", name, err)
	}
	svc := &service{name: name, db: db, guard: g, onCall: s.opts.OnCall, slow: s.opts.SlowShipping}
	svc.ops = operations(name)
	ln, err := net.Listen("tcp", net.JoinHostPort(s.opts.Addr, "0"))
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("shop: %s listen: %w", name, err)
	}
	svc.url = "http://" + ln.Addr().String()
	svc.srv = &http.Server{Handler: svc, ReadHeaderTimeout: 10 * time.Second}
	svc.wg.Add(1)
	go func() {
		defer svc.wg.Done()
		_ = svc.srv.Serve(ln) // ends with ErrServerClosed at Close
	}()
	return svc, nil
}

// Close stops the services and closes their databases (safe twice).
func (s *Services) Close() {
	if s.closed.Swap(true) {
		return
	}
	for _, svc := range s.svcs {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = svc.srv.Shutdown(ctx)
		cancel()
		_ = svc.srv.Close()
		svc.wg.Wait()
		svc.db.Close()
	}
}

// URL is the base URL of a service; its operations are POSTed to
// URL/<operation>. It is empty for a name not in Names.
func (s *Services) URL(name string) string {
	if svc, ok := s.svcs[name]; ok {
		return svc.url
	}
	return ""
}

// DB is a service's own database, to read its records; nil for a name not
// in Names.
func (s *Services) DB(name string) *sql.DB {
	if svc, ok := s.svcs[name]; ok {
		return svc.db
	}
	return nil
}

// Down makes a service answer 503 to every delivery for d, as if it were
// down. Down(name, 0) brings it back at once. A name not in Names is an
// error.
func (s *Services) Down(name string, d time.Duration) error {
	svc, ok := s.svcs[name]
	if !ok {
		return fmt.Errorf("shop: no service %q", name)
	}
	svc.downUntil.Store(time.Now().Add(d).UnixNano())
	return nil
}

// InFlight is how many deliveries of an operation a service is answering.
func (s *Services) InFlight(name, operation string) int {
	svc, ok := s.svcs[name]
	if !ok {
		return 0
	}
	if v, ok := svc.inFlight.Load(operation); ok {
		return int(v.(*atomic.Int32).Load())
	}
	return 0
}

// delivery is the body Accord POSTs (docs/participants.md).
type delivery struct {
	Operation string          `json:"operation"`
	Phase     string          `json:"phase"`
	Attempt   int             `json:"attempt"`
	Input     json.RawMessage `json:"input"`
}

func (svc *service) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	call := Call{Service: svc.name, Phase: r.Header.Get(guard.HeaderPhase), Attempt: r.Header.Get("Accord-Attempt")}
	defer func() {
		if svc.onCall != nil {
			svc.onCall(call)
		}
	}()
	if r.Method != http.MethodPost {
		call.Outcome, call.Code = "error", "method"
		problem(w, http.StatusMethodNotAllowed, "method_not_allowed", "POST only")
		return
	}
	var d delivery
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&d); err != nil {
		call.Outcome, call.Code = "error", "bad_request"
		problem(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	call.Operation = d.Operation
	if time.Now().UnixNano() < svc.downUntil.Load() {
		call.Outcome = "unavailable"
		w.Header().Set("Retry-After", "1")
		problem(w, http.StatusServiceUnavailable, "unavailable", svc.name+" is down")
		return
	}
	key, phase, err := guard.KeyFromRequest(r)
	if err != nil {
		call.Outcome, call.Code = "error", "bad_key"
		problem(w, http.StatusBadRequest, "bad_key", err.Error())
		return
	}
	fn, ok := svc.ops[d.Operation]
	if !ok {
		call.Outcome, call.Code = "error", "unknown_operation"
		problem(w, http.StatusNotFound, "unknown_operation", fmt.Sprintf("%s has no operation %q", svc.name, d.Operation))
		return
	}
	input := d.Input
	if phase == guard.PhaseCompensation {
		// A compensation receives {"input": <the action's payload>, "output": ...}.
		var comp struct {
			Input json.RawMessage `json:"input"`
		}
		if err := json.Unmarshal(d.Input, &comp); err != nil {
			call.Outcome, call.Code = "error", "bad_input"
			problem(w, http.StatusBadRequest, "bad_input", err.Error())
			return
		}
		input = comp.Input
	}
	var common struct {
		OrderID       string `json:"order_id"`
		ShippingFault string `json:"shipping_fault"`
	}
	_ = json.Unmarshal(input, &common) // each operation checks its own input
	call.OrderID = common.OrderID

	counter, _ := svc.inFlight.LoadOrStore(d.Operation, new(atomic.Int32))
	counter.(*atomic.Int32).Add(1)
	defer counter.(*atomic.Int32).Add(-1)

	if phase == guard.PhaseAction && common.ShippingFault == "timeout" && svc.name == Shipping {
		// The carrier never answers: hold the call until Accord gives up.
		<-r.Context().Done()
		call.Outcome = "no answer"
		return
	}

	out, outcome, err := svc.run(r.Context(), key, phase, fn, input)
	var refusal *Refusal
	switch {
	case errors.As(err, &refusal):
		call.Outcome, call.Code = "refused", refusal.Code
		problem(w, http.StatusConflict, refusal.Code, refusal.Message)
		return
	case errors.Is(err, guard.ErrCompensated):
		// The action arrived after its compensation: refuse it, or its
		// effect would never be undone.
		call.Outcome, call.Code = "refused", "compensated"
		problem(w, http.StatusConflict, "compensated", "this step was already compensated")
		return
	case err != nil:
		call.Outcome, call.Code = "error", "internal"
		w.Header().Set("Retry-After", "1")
		problem(w, http.StatusServiceUnavailable, "internal", err.Error())
		return
	}
	call.Outcome = outcome
	if phase == guard.PhaseAction && common.ShippingFault == "slow" && svc.name == Shipping && outcome == "ok" {
		// Booked and committed, but the answer is slow to come back.
		select {
		case <-time.After(svc.slow):
		case <-r.Context().Done():
			call.Outcome = "no answer"
			return
		}
	}
	w.Header().Set("Content-Type", "application/json")
	if len(out) == 0 {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	_, _ = w.Write(out)
}

// run makes one delivery's effect, with its idempotency record, in one
// transaction of the service's database.
func (svc *service) run(ctx context.Context, key guard.Key, phase guard.Phase, fn op, input json.RawMessage) (out []byte, outcome string, err error) {
	tx, err := svc.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, "", fmt.Errorf("%s: begin: %w", svc.name, err)
	}
	defer tx.Rollback()
	outcome = "ok"
	if phase == guard.PhaseAction {
		var ran bool
		out, ran, err = svc.guard.Action(ctx, tx, key, func() ([]byte, error) {
			v, err := fn(ctx, tx, input)
			if err != nil {
				return nil, err
			}
			return json.Marshal(v)
		})
		if err == nil && !ran {
			outcome = "replayed"
		}
	} else {
		var ran bool
		ran, err = svc.guard.Compensate(ctx, tx, key, func() error {
			_, err := fn(ctx, tx, input)
			return err
		})
		if err == nil && !ran {
			outcome = "no-op"
		}
	}
	if err != nil {
		return nil, "", err
	}
	if err := tx.Commit(); err != nil {
		return nil, "", fmt.Errorf("%s: commit: %w", svc.name, err)
	}
	return out, outcome, nil
}

func problem(w http.ResponseWriter, status int, code, detail string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"type": "about:blank", "title": http.StatusText(status), "detail": detail, "code": code,
	})
}

func now() string { return time.Now().UTC().Format(time.RFC3339Nano) }

func decode(in json.RawMessage) (Input, error) {
	var v Input
	if err := json.Unmarshal(in, &v); err != nil {
		return Input{}, &Refusal{Code: "bad_input", Message: err.Error()}
	}
	if v.OrderID == "" {
		return Input{}, &Refusal{Code: "bad_input", Message: "order_id is required"}
	}
	return v, nil
}

// operations are the steps each service serves.
func operations(name string) map[string]op {
	switch name {
	case Order:
		return map[string]op{
			"create_order": func(ctx context.Context, tx *sql.Tx, raw json.RawMessage) (any, error) {
				in, err := decode(raw)
				if err != nil {
					return nil, err
				}
				res, err := tx.ExecContext(ctx, `INSERT INTO orders(id, customer, total, status, updated_at)
					VALUES (?, ?, ?, 'pending', ?) ON CONFLICT(id) DO NOTHING`, in.OrderID, in.Customer, in.Total, now())
				if err != nil {
					return nil, fmt.Errorf("create order: %w", err)
				}
				if n, _ := res.RowsAffected(); n == 0 {
					return nil, &Refusal{Code: "duplicate_order", Message: "order " + in.OrderID + " exists already"}
				}
				return map[string]any{"order_id": in.OrderID, "status": "pending"}, nil
			},
			"cancel_order": func(ctx context.Context, tx *sql.Tx, raw json.RawMessage) (any, error) {
				in, err := decode(raw)
				if err != nil {
					return nil, err
				}
				_, err = tx.ExecContext(ctx, `UPDATE orders SET status = 'cancelled', updated_at = ? WHERE id = ? AND status = 'pending'`, now(), in.OrderID)
				return nil, err
			},
			"confirm_order": func(ctx context.Context, tx *sql.Tx, raw json.RawMessage) (any, error) {
				in, err := decode(raw)
				if err != nil {
					return nil, err
				}
				res, err := tx.ExecContext(ctx, `UPDATE orders SET status = 'confirmed', updated_at = ? WHERE id = ? AND status = 'pending'`, now(), in.OrderID)
				if err != nil {
					return nil, fmt.Errorf("confirm order: %w", err)
				}
				if n, _ := res.RowsAffected(); n == 0 {
					return nil, &Refusal{Code: "not_pending", Message: "order " + in.OrderID + " is not pending"}
				}
				return map[string]any{"order_id": in.OrderID, "status": "confirmed"}, nil
			},
		}
	case Payment:
		return map[string]op{
			"charge": func(ctx context.Context, tx *sql.Tx, raw json.RawMessage) (any, error) {
				in, err := decode(raw)
				if err != nil {
					return nil, err
				}
				if in.Card == DeclinedCard {
					return nil, &Refusal{Code: "card_declined", Message: "the card was declined"}
				}
				if in.Total <= 0 {
					return nil, &Refusal{Code: "bad_amount", Message: "the total must be positive"}
				}
				if _, err := tx.ExecContext(ctx, `INSERT INTO payments(order_id, card, amount, status, updated_at)
					VALUES (?, ?, ?, 'charged', ?)`, in.OrderID, in.Card, in.Total, now()); err != nil {
					return nil, fmt.Errorf("charge: %w", err)
				}
				return map[string]any{"payment": "pay-" + in.OrderID, "amount": in.Total}, nil
			},
			"refund": func(ctx context.Context, tx *sql.Tx, raw json.RawMessage) (any, error) {
				in, err := decode(raw)
				if err != nil {
					return nil, err
				}
				_, err = tx.ExecContext(ctx, `UPDATE payments SET status = 'refunded', updated_at = ? WHERE order_id = ?`, now(), in.OrderID)
				return nil, err
			},
		}
	case Inventory:
		return map[string]op{
			"reserve": func(ctx context.Context, tx *sql.Tx, raw json.RawMessage) (any, error) {
				in, err := decode(raw)
				if err != nil {
					return nil, err
				}
				if len(in.Items) == 0 {
					return nil, &Refusal{Code: "bad_input", Message: "no items"}
				}
				for _, it := range in.Items {
					if it.Qty <= 0 {
						return nil, &Refusal{Code: "bad_input", Message: "quantities must be positive"}
					}
					res, err := tx.ExecContext(ctx, `UPDATE stock SET qty = qty - ? WHERE sku = ? AND qty >= ?`, it.Qty, it.SKU, it.Qty)
					if err != nil {
						return nil, fmt.Errorf("reserve: %w", err)
					}
					if n, _ := res.RowsAffected(); n == 0 {
						return nil, &Refusal{Code: "out_of_stock", Message: fmt.Sprintf("not enough %q in stock", it.SKU)}
					}
					if _, err := tx.ExecContext(ctx, `INSERT INTO reservations(order_id, sku, qty, status) VALUES (?, ?, ?, 'reserved')
						ON CONFLICT(order_id, sku) DO UPDATE SET qty = qty + excluded.qty`, in.OrderID, it.SKU, it.Qty); err != nil {
						return nil, fmt.Errorf("reserve: %w", err)
					}
				}
				return map[string]any{"reserved": in.Items}, nil
			},
			"release": func(ctx context.Context, tx *sql.Tx, raw json.RawMessage) (any, error) {
				in, err := decode(raw)
				if err != nil {
					return nil, err
				}
				if _, err := tx.ExecContext(ctx, `UPDATE stock SET qty = qty + (SELECT r.qty FROM reservations r
					WHERE r.order_id = ? AND r.sku = stock.sku AND r.status = 'reserved')
					WHERE sku IN (SELECT sku FROM reservations WHERE order_id = ? AND status = 'reserved')`, in.OrderID, in.OrderID); err != nil {
					return nil, fmt.Errorf("release: %w", err)
				}
				_, err = tx.ExecContext(ctx, `UPDATE reservations SET status = 'released' WHERE order_id = ? AND status = 'reserved'`, in.OrderID)
				return nil, err
			},
		}
	case Shipping:
		return map[string]op{
			"book": func(ctx context.Context, tx *sql.Tx, raw json.RawMessage) (any, error) {
				in, err := decode(raw)
				if err != nil {
					return nil, err
				}
				if in.Address == "" {
					return nil, &Refusal{Code: "no_address", Message: "no shipping address"}
				}
				if _, err := tx.ExecContext(ctx, `INSERT INTO shipments(order_id, address, status, updated_at)
					VALUES (?, ?, 'booked', ?)`, in.OrderID, in.Address, now()); err != nil {
					return nil, fmt.Errorf("book: %w", err)
				}
				return map[string]any{"shipment": "ship-" + in.OrderID}, nil
			},
			"cancel_shipment": func(ctx context.Context, tx *sql.Tx, raw json.RawMessage) (any, error) {
				in, err := decode(raw)
				if err != nil {
					return nil, err
				}
				_, err = tx.ExecContext(ctx, `UPDATE shipments SET status = 'cancelled', updated_at = ? WHERE order_id = ?`, now(), in.OrderID)
				return nil, err
			},
		}
	}
	return nil
}
