package guard_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"

	_ "modernc.org/sqlite"

	"github.com/accord-saga/accord/sdk/guard"
)

// chargeHandler is a payment service's endpoint for the step "charge":
// Accord POSTs the action to debit the customer, and the compensation to
// refund them. Each delivery runs in one transaction of the service's own
// database, with the guard's record beside the balance it changes.
func chargeHandler(db *sql.DB, g *guard.Guard) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		k, phase, err := guard.KeyFromRequest(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		ctx := r.Context()
		tx, err := db.BeginTx(ctx, nil) // BEGIN IMMEDIATE: see the DSN
		if err != nil {
			http.Error(w, "database unavailable", http.StatusServiceUnavailable) // Accord retries
			return
		}
		defer func() { _ = tx.Rollback() }()

		var output []byte
		switch phase {
		case guard.PhaseAction:
			output, _, err = g.Action(ctx, tx, k, func() ([]byte, error) {
				var balance int
				err := tx.QueryRowContext(ctx,
					`UPDATE accounts SET balance = balance - 10 WHERE id = 'alice' RETURNING balance`).Scan(&balance)
				return fmt.Appendf(nil, `{"balance":%d}`, balance), err
			})
		case guard.PhaseCompensation:
			_, err = g.Compensate(ctx, tx, k, func() error {
				_, err := tx.ExecContext(ctx, `UPDATE accounts SET balance = balance + 10 WHERE id = 'alice'`)
				return err
			})
		}
		if err == nil {
			err = tx.Commit()
		}
		switch {
		case errors.Is(err, guard.ErrCompensated):
			// A business failure (409): the action must never run now.
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(http.StatusConflict)
			_, _ = io.WriteString(w, `{"title":"step already compensated","code":"compensated"}`)
		case err != nil:
			http.Error(w, "try again", http.StatusServiceUnavailable) // Accord retries
		case output != nil:
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(output)
		default:
			w.WriteHeader(http.StatusNoContent)
		}
	})
}

// An HTTP participant answering Accord's deliveries of one step, duplicates
// and late arrivals included.
func Example_httpParticipant() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "payments")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	// BEGIN IMMEDIATE and a busy timeout, as the guard requires on SQLite.
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "payments.db")+
		"?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)&_txlock=immediate")
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()

	g, err := guard.New(guard.Options{Dialect: guard.SQLite})
	if err != nil {
		log.Fatal(err)
	}
	if err := g.Migrate(ctx, db); err != nil {
		log.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `CREATE TABLE accounts (id TEXT PRIMARY KEY, balance INTEGER NOT NULL);
		INSERT INTO accounts VALUES ('alice', 100)`); err != nil {
		log.Fatal(err)
	}

	srv := httptest.NewServer(chargeHandler(db, g))
	defer srv.Close()

	// deliver sends a step the way Accord pushes it.
	deliver := func(sagaID string, phase guard.Phase) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL, strings.NewReader(`{}`))
		if err != nil {
			log.Fatal(err)
		}
		req.Header.Set(guard.HeaderSagaID, sagaID)
		req.Header.Set(guard.HeaderStep, "charge")
		req.Header.Set(guard.HeaderPhase, string(phase))
		req.Header.Set(guard.HeaderIdempotencyKey, sagaID+"/charge/"+string(phase))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			log.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var balance int
		if err := db.QueryRowContext(ctx, `SELECT balance FROM accounts WHERE id = 'alice'`).Scan(&balance); err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%-8s %-12s → %d %s (balance %d)\n", sagaID, phase, resp.StatusCode, body, balance)
	}

	deliver("order-1", guard.PhaseAction)       // runs
	deliver("order-1", guard.PhaseAction)       // duplicate: the same answer, no second debit
	deliver("order-1", guard.PhaseCompensation) // refunds
	deliver("order-1", guard.PhaseCompensation) // duplicate: nothing to do
	deliver("order-1", guard.PhaseAction)       // late copy of the action: refused

	deliver("order-2", guard.PhaseCompensation) // the action never arrived: null compensation
	deliver("order-2", guard.PhaseAction)       // ... and when it does, it is refused

	// Output:
	// order-1  action       → 200 {"balance":90} (balance 90)
	// order-1  action       → 200 {"balance":90} (balance 90)
	// order-1  compensation → 204  (balance 100)
	// order-1  compensation → 204  (balance 100)
	// order-1  action       → 409 {"title":"step already compensated","code":"compensated"} (balance 100)
	// order-2  compensation → 204  (balance 100)
	// order-2  action       → 409 {"title":"step already compensated","code":"compensated"} (balance 100)
}
