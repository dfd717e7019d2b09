// Command hello runs a saga against an Accord server: it registers a
// two-step money transfer, serves its steps as a pull worker, and starts two
// sagas — one that completes, and one whose credit step is declined, so
// Accord compensates the debit. It prints each saga's log as it ends.
//
//	go run ./cmd/accord server      # in one terminal
//	go run ./examples/hello         # in another
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"time"

	"github.com/accord-saga/accord/sdk/client"
	"github.com/accord-saga/accord/sdk/worker"
)

const definition = `
name: transfer
version: 1
steps:
  - name: debit
    action: {queue: bank, name: debit}
    compensation: {queue: bank, name: refund}
    input: {account: "${input.from}", amount: "${input.amount}"}
  - name: credit
    action: {queue: bank, name: credit}
    compensation: {queue: bank, name: reverse_credit}
    input: {account: "${input.to}", amount: "${input.amount}"}
`

func main() {
	server := flag.String("server", envOr("ACCORD_SERVER", "http://127.0.0.1:7780"), "Accord server URL")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, *server); err != nil {
		fmt.Fprintln(os.Stderr, "hello:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, server string) error {
	c, err := client.New(server)
	if err != nil {
		return err
	}
	if _, _, err := c.RegisterDefinition(ctx, []byte(definition), "application/yaml"); err != nil {
		return fmt.Errorf("register the transfer saga (is the server running at %s?): %w", server, err)
	}

	// The bank: a participant that owns the accounts. Crediting the
	// account "closed" is declined, a business failure.
	w := worker.New(c, worker.Options{PollWait: time.Second})
	type leg struct {
		Account string `json:"account"`
		Amount  int    `json:"amount"`
	}
	serve := func(op string) {
		w.Handle("bank", op, func(ctx context.Context, t *worker.Task) (any, error) {
			var in leg
			if t.Phase == "compensation" {
				var comp struct{ Input leg }
				if err := t.Decode(&comp); err != nil {
					return nil, worker.Failure("bad_input", err.Error())
				}
				in = comp.Input
			} else if err := t.Decode(&in); err != nil {
				return nil, worker.Failure("bad_input", err.Error())
			}
			if op == "credit" && in.Account == "closed" {
				fmt.Printf("  bank: %-14s %-8s %4d  -> declined (account closed)\n", op, in.Account, in.Amount)
				return nil, worker.Failure("account_closed", "the account is closed")
			}
			fmt.Printf("  bank: %-14s %-8s %4d  -> ok\n", op, in.Account, in.Amount)
			return map[string]any{"account": in.Account, "amount": in.Amount}, nil
		})
	}
	for _, op := range []string{"debit", "refund", "credit", "reverse_credit"} {
		serve(op)
	}
	wctx, stopWorker := context.WithCancel(ctx)
	defer stopWorker()
	done := make(chan error, 1)
	go func() { done <- w.Run(wctx) }()

	for _, to := range []string{"bob", "closed"} {
		input := map[string]any{"from": "alice", "to": to, "amount": 100}
		fmt.Printf("\nstarting a transfer of 100 from alice to %s\n", to)
		started, err := c.StartSaga(ctx, client.StartRequest{Definition: "transfer", Input: input})
		if err != nil {
			return err
		}
		s, err := c.WaitSaga(ctx, started.ID)
		if err != nil {
			return err
		}
		fmt.Printf("saga %s ended %s\n", s.ID, s.Status)
		events, err := c.SagaEvents(ctx, s.ID, client.EventOptions{})
		if err != nil {
			return err
		}
		for _, ev := range events.Items {
			var body struct {
				Step string `json:"step"`
			}
			_ = json.Unmarshal(ev.Data, &body)
			fmt.Printf("  log: %-24s %s\n", ev.Type, body.Step)
		}
	}
	stopWorker()
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	fmt.Println("\nexplore them with: accord saga list   (go run ./cmd/accord saga list)")
	return nil
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
