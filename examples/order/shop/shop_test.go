package shop

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

func start(t *testing.T) *Services {
	t.Helper()
	s, err := Start(context.Background(), Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// deliver POSTs one delivery as Accord would and returns the status and
// the body.
func deliver(t *testing.T, s *Services, service, op, saga, step, phase string, input any) (int, string) {
	t.Helper()
	payload, err := json.Marshal(input)
	if err != nil {
		t.Fatal(err)
	}
	body := fmt.Sprintf(`{"operation":%q,"phase":%q,"attempt":1,"input":%s}`, op, phase, payload)
	req, err := http.NewRequest(http.MethodPost, s.URL(service)+"/"+op, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accord-Saga-Id", saga)
	req.Header.Set("Accord-Step", step)
	req.Header.Set("Accord-Phase", phase)
	req.Header.Set("Accord-Attempt", "1")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

func order(id string) Input {
	return Input{OrderID: id, Customer: "ada", Card: "4242", Items: []Item{{SKU: "lamp", Qty: 2}}, Total: 2400, Address: "1 Main St"}
}

// A redelivered action has its effect once and answers as the first time.
func TestActionTwiceHasItsEffectOnce(t *testing.T) {
	s := start(t)
	in := order("o-1")
	st1, out1 := deliver(t, s, Inventory, "reserve", "saga-1", "inventory", "action", in)
	st2, out2 := deliver(t, s, Inventory, "reserve", "saga-1", "inventory", "action", in)
	if st1 != http.StatusOK || st2 != http.StatusOK || out1 != out2 {
		t.Fatalf("answers %d %q and %d %q, want the same 200 twice", st1, out1, st2, out2)
	}
	if n, err := s.Stock(context.Background(), "lamp"); err != nil || n != 8 {
		t.Fatalf("lamps in stock %d (%v), want 10-2", n, err)
	}
}

// A compensation for an action that never ran does nothing, and the action
// arriving after it is refused.
func TestCompensationBeforeActionRefusesTheAction(t *testing.T) {
	s := start(t)
	in := order("o-2")
	comp := map[string]any{"input": in, "output": nil}
	if st, body := deliver(t, s, Payment, "refund", "saga-2", "payment", "compensation", comp); st != http.StatusNoContent {
		t.Fatalf("null compensation: %d %s", st, body)
	}
	st, body := deliver(t, s, Payment, "charge", "saga-2", "payment", "action", in)
	if st != http.StatusConflict || !strings.Contains(body, `"compensated"`) {
		t.Fatalf("late action: %d %s, want 409 compensated", st, body)
	}
	r, err := s.Records(context.Background(), "o-2")
	if err != nil {
		t.Fatal(err)
	}
	if r.Payment != "" {
		t.Fatalf("payment %q after a refused charge, want none", r.Payment)
	}
}

// The order stays pending until confirmed; its compensation cancels it,
// and a cancelled order cannot be confirmed.
func TestOrderPendingUntilFinal(t *testing.T) {
	s := start(t)
	ctx := context.Background()
	if st, body := deliver(t, s, Order, "create_order", "saga-3", "order", "action", order("o-3")); st != http.StatusOK {
		t.Fatalf("create: %d %s", st, body)
	}
	if r, _ := s.Records(ctx, "o-3"); r.Order != "pending" {
		t.Fatalf("order %q, want pending", r.Order)
	}
	deliver(t, s, Order, "cancel_order", "saga-3", "order", "compensation", map[string]any{"input": order("o-3")})
	if r, _ := s.Records(ctx, "o-3"); r.Order != "cancelled" {
		t.Fatalf("order %q, want cancelled", r.Order)
	}
	if st, body := deliver(t, s, Order, "confirm_order", "saga-3", "confirm", "action", order("o-3")); st != http.StatusConflict || !strings.Contains(body, "not_pending") {
		t.Fatalf("confirm a cancelled order: %d %s, want 409 not_pending", st, body)
	}
}

// Business failures are 409 with the documented codes; a service that is
// down answers 503 with Retry-After; bad deliveries are 4xx.
func TestAnswers(t *testing.T) {
	s := start(t)
	declined := order("o-4")
	declined.Card = DeclinedCard
	if st, body := deliver(t, s, Payment, "charge", "saga-4", "payment", "action", declined); st != http.StatusConflict || !strings.Contains(body, "card_declined") {
		t.Errorf("declined: %d %s", st, body)
	}
	vase := order("o-5")
	vase.Items = []Item{{SKU: "vase", Qty: 1}}
	if st, body := deliver(t, s, Inventory, "reserve", "saga-5", "inventory", "action", vase); st != http.StatusConflict || !strings.Contains(body, "out_of_stock") {
		t.Errorf("out of stock: %d %s", st, body)
	}
	if err := s.Down(Shipping, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := s.Down("warehouse", time.Minute); err == nil {
		t.Error("Down of an unknown service: no error")
	}
	if st, _ := deliver(t, s, Shipping, "book", "saga-6", "shipping", "action", order("o-6")); st != http.StatusServiceUnavailable {
		t.Errorf("down: %d, want 503", st)
	}
	if err := s.Down(Shipping, 0); err != nil {
		t.Fatal(err)
	}
	if st, _ := deliver(t, s, Shipping, "book", "saga-6", "shipping", "action", order("o-6")); st != http.StatusOK {
		t.Errorf("back up: %d, want 200", st)
	}
	for _, c := range []struct{ op, step, phase string }{
		{"nope", "shipping", "action"},   // unknown operation
		{"book", "", "action"},           // no step header
		{"book", "shipping", "sideways"}, // unknown phase
	} {
		if st, body := deliver(t, s, Shipping, c.op, "saga-7", c.step, c.phase, order("o-7")); st < 400 || st >= 500 {
			t.Errorf("%+v: %d %s, want a 4xx", c, st, body)
		}
	}
	res, err := http.Post(s.URL(Order)+"/create_order", "application/json", strings.NewReader(`{"input": [`))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusBadRequest {
		t.Errorf("malformed body: %d, want 400", res.StatusCode)
	}
}
