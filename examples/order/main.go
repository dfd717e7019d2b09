// Command order runs the order saga's four services — order, payment,
// inventory and shipping, each with its own SQLite database — as HTTP
// participants of an Accord server, registers the saga, and places one
// order. Flags inject failures.
//
//	go run ./cmd/accord server                                     # in one terminal
//	go run ./examples/order                                        # an order that completes
//	go run ./examples/order --card declined                        # the payment is declined
//	go run ./examples/order --sku vase                             # out of stock
//	go run ./examples/order --shipping timeout                     # shipping never answers
//	go run ./examples/order --down payment=5s                      # payment answers 503 for 5s
//
// The services listen on new ports at every run, so each run registers the
// saga under a new version. With --serve they keep serving after the
// order, until Ctrl-C, for orders started with the CLI.
//
// `accord demo` runs all of this, and a server restart, with no setup.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"time"

	"github.com/accord-saga/accord/examples/order/shop"
	"github.com/accord-saga/accord/sdk/client"
)

func main() {
	var (
		server   = flag.String("server", envOr("ACCORD_SERVER", "http://127.0.0.1:7780"), "Accord server URL")
		dir      = flag.String("data", filepath.Join(os.TempDir(), "accord-order-example"), "directory of the services' databases")
		card     = flag.String("card", "4242-4242-4242-4242", `card number; "declined" is declined`)
		sku      = flag.String("sku", "book", "item to order: book (100 in stock), lamp (10) or vase (0: out of stock)")
		qty      = flag.Int("qty", 1, "quantity")
		shipping = flag.String("shipping", "", `shipping fault: "timeout" (never answers) or "slow" (answers late)`)
		down     = flag.String("down", "", "SERVICE=DURATION: the service answers 503 for that long, e.g. payment=5s")
		serve    = flag.Bool("serve", false, "keep serving after the order, until Ctrl-C")
	)
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if *card == "declined" {
		*card = shop.DeclinedCard
	}
	in := shop.Input{
		OrderID:  fmt.Sprintf("o-%d", time.Now().UnixMilli()),
		Customer: "ada", Card: *card, Items: []shop.Item{{SKU: *sku, Qty: *qty}}, Total: 1200 * *qty,
		Address: "12 Analytical Row, London", ShippingFault: *shipping,
	}
	if err := run(ctx, *server, *dir, in, *down, *serve); err != nil {
		fmt.Fprintln(os.Stderr, "order:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, server, dir string, in shop.Input, down string, serve bool) error {
	c, err := client.New(server)
	if err != nil {
		return err
	}
	svcs, err := shop.Start(ctx, shop.Options{Dir: dir, OnCall: func(call shop.Call) {
		outcome := call.Outcome
		if call.Code != "" {
			outcome += " (" + call.Code + ")"
		}
		fmt.Printf("  %-10s %-16s %-12s attempt %s -> %s\n", call.Service, call.Operation, call.Phase, call.Attempt, outcome)
	}})
	if err != nil {
		return err
	}
	defer svcs.Close()
	if down != "" {
		name, d, ok := strings.Cut(down, "=")
		dur, perr := time.ParseDuration(d)
		if !ok || perr != nil || svcs.Down(name, dur) != nil {
			return fmt.Errorf("--down %q: want SERVICE=DURATION with SERVICE one of %s", down, strings.Join(shop.Names, ", "))
		}
		fmt.Printf("%s is down for %s\n", name, dur)
	}
	// The services' ports are new at every run, so the definition is new
	// too: register it under the next free version.
	def, err := register(ctx, c, svcs.Definition())
	if err != nil {
		return fmt.Errorf("register the order saga (is the server running at %s? On a non-loopback address it needs --push-allow 'http://127.0.0.1:*'): %w", server, err)
	}
	started, err := c.StartSaga(ctx, client.StartRequest{Definition: shop.DefinitionName, Version: def.Version, Input: in})
	if err != nil {
		return err
	}
	fmt.Printf("order %s: saga %s (order v%d)\n", in.OrderID, started.ID, def.Version)
	s, err := c.WaitSaga(ctx, started.ID)
	if err != nil {
		return err
	}
	rec, err := svcs.Records(ctx, in.OrderID)
	if err != nil {
		return err
	}
	fmt.Printf("saga %s ended %s\n  records: %s\n", s.ID, s.Status, rec)
	if serve {
		fmt.Println("serving until Ctrl-C")
		<-ctx.Done()
	}
	return nil
}

// register registers the definition under the first version not taken by
// a different document.
func register(ctx context.Context, c *client.Client, doc []byte) (*client.Definition, error) {
	base := strings.Replace(string(doc), "version: 1\n", "version: %d\n", 1)
	for v := 1; v <= 1000; v++ {
		def, _, err := c.RegisterDefinition(ctx, fmt.Appendf(nil, base, v), "application/yaml")
		if err == nil {
			return def, nil
		}
		if !client.IsConflict(err) {
			return nil, err
		}
	}
	return nil, errors.New("versions 1 to 1000 of the order saga are all taken")
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
