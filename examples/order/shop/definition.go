package shop

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// DefinitionName is the name of the order saga.
const DefinitionName = "order"

// Definition is the order saga over the running services, in YAML: create
// the order (pending), charge the card, reserve the stock, book the
// shipment, then confirm the order. Confirming is the pivot: once the order
// is confirmed nothing is undone any more, and everything that can be
// undone comes before it. Each step receives the saga input.
func (s *Services) Definition() []byte {
	return fmt.Appendf(nil, `name: %s
version: 1
description: the order saga of the shop example (examples/order)
timeout: 10m
steps:
  - name: order
    action: {http: "%[2]s/create_order", name: create_order}
    compensation: {http: "%[2]s/cancel_order", name: cancel_order}
    attempt_timeout: 5s
  - name: payment
    action: {http: "%[3]s/charge", name: charge}
    compensation: {http: "%[3]s/refund", name: refund}
    attempt_timeout: 5s
    retry: {initial_interval: 250ms, max_interval: 2s, max_attempts: 30, non_retryable_errors: [card_declined]}
    compensation_retry: {initial_interval: 250ms, max_interval: 2s}
  - name: inventory
    action: {http: "%[4]s/reserve", name: reserve}
    compensation: {http: "%[4]s/release", name: release}
    attempt_timeout: 5s
    compensation_retry: {initial_interval: 250ms, max_interval: 2s}
  - name: shipping
    action: {http: "%[5]s/book", name: book}
    compensation: {http: "%[5]s/cancel_shipment", name: cancel_shipment}
    attempt_timeout: 3s
    retry: {initial_interval: 250ms, max_interval: 1s, max_attempts: 2}
    compensation_retry: {initial_interval: 250ms, max_interval: 2s}
  - name: confirm
    kind: pivot
    action: {http: "%[2]s/confirm_order", name: confirm_order}
    attempt_timeout: 5s
`, DefinitionName, s.URL(Order), s.URL(Payment), s.URL(Inventory), s.URL(Shipping))
}

// Records is what the services' own databases say about one order. An
// empty string means there is no row.
type Records struct {
	Order       string            // pending, confirmed, cancelled
	Payment     string            // charged, refunded
	Reservation map[string]string // sku → reserved, released
	Shipment    string            // booked, cancelled
}

// Records reads one order's rows from every service's database.
func (s *Services) Records(ctx context.Context, orderID string) (Records, error) {
	var r Records
	one := func(db *sql.DB, q string, dst *string) error {
		err := db.QueryRowContext(ctx, q, orderID).Scan(dst)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		return err
	}
	if err := one(s.DB(Order), `SELECT status FROM orders WHERE id = ?`, &r.Order); err != nil {
		return r, fmt.Errorf("read order: %w", err)
	}
	if err := one(s.DB(Payment), `SELECT status FROM payments WHERE order_id = ?`, &r.Payment); err != nil {
		return r, fmt.Errorf("read payment: %w", err)
	}
	if err := one(s.DB(Shipping), `SELECT status FROM shipments WHERE order_id = ?`, &r.Shipment); err != nil {
		return r, fmt.Errorf("read shipment: %w", err)
	}
	rows, err := s.DB(Inventory).QueryContext(ctx, `SELECT sku, status FROM reservations WHERE order_id = ? ORDER BY sku`, orderID)
	if err != nil {
		return r, fmt.Errorf("read reservations: %w", err)
	}
	defer rows.Close()
	r.Reservation = map[string]string{}
	for rows.Next() {
		var sku, status string
		if err := rows.Scan(&sku, &status); err != nil {
			return r, fmt.Errorf("read reservations: %w", err)
		}
		r.Reservation[sku] = status
	}
	if err := rows.Err(); err != nil {
		return r, fmt.Errorf("read reservations: %w", err)
	}
	return r, nil
}

// Stock is the quantity of a SKU in stock.
func (s *Services) Stock(ctx context.Context, sku string) (int, error) {
	var n int
	if err := s.DB(Inventory).QueryRowContext(ctx, `SELECT qty FROM stock WHERE sku = ?`, sku).Scan(&n); err != nil {
		return 0, fmt.Errorf("read stock of %q: %w", sku, err)
	}
	return n, nil
}

// String is a one-line summary, e.g. "order confirmed, payment charged,
// stock reserved, shipment booked".
func (r Records) String() string {
	or := func(s string) string {
		if s == "" {
			return "none"
		}
		return s
	}
	stock := "none"
	for _, st := range r.Reservation {
		stock = st // every line of one order has the same status
	}
	return fmt.Sprintf("order %s, payment %s, stock %s, shipment %s", or(r.Order), or(r.Payment), stock, or(r.Shipment))
}
