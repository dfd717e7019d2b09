package e2e

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	_ "modernc.org/sqlite"

	"github.com/accord-saga/accord/sdk/guard"
)

// shop is a participant that owns its data: every step's effect is a row
// in its own SQLite database, written through the idempotency guard in the
// same transaction, so a redelivered step has its effect once.
type shop struct {
	db    *sql.DB
	guard *guard.Guard
}

func newShop(t *testing.T) *shop {
	t.Helper()
	path := filepath.Join(t.TempDir(), "shop.db")
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=journal_mode(WAL)&_pragma=busy_timeout(10000)&_txlock=immediate")
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { db.Close() })
	if _, err := db.Exec(`CREATE TABLE effects(seq INTEGER PRIMARY KEY AUTOINCREMENT, saga TEXT, step TEXT, phase TEXT)`); err != nil {
		t.Fatal(err)
	}
	g, err := guard.New(guard.Options{Dialect: guard.SQLite})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Migrate(context.Background(), db); err != nil {
		t.Fatal(err)
	}
	return &shop{db: db, guard: g}
}

var errDeclined = errors.New("declined")

// do runs one delivery. An action of the step named in failAt is declined
// (a business failure, nothing done); an action after its compensation is
// refused (guard.ErrCompensated).
func (s *shop) do(ctx context.Context, sagaID, step, phase, failAt string) error {
	key, ph, err := guard.KeyFromTask(sagaID, step, phase)
	if err != nil {
		return err
	}
	if ph == guard.PhaseAction && step == failAt {
		return errDeclined
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	effect := func() error {
		_, err := tx.ExecContext(ctx, `INSERT INTO effects(saga, step, phase) VALUES (?,?,?)`, sagaID, step, phase)
		return err
	}
	if ph == guard.PhaseAction {
		_, _, err = s.guard.Action(ctx, tx, key, func() ([]byte, error) { return []byte(`{"done":true}`), effect() })
	} else {
		_, err = s.guard.Compensate(ctx, tx, key, effect)
	}
	if err != nil {
		return err
	}
	return tx.Commit()
}

// effects lists what the shop did for a saga, in order.
func (s *shop) effects(t *testing.T, sagaID string) []string {
	t.Helper()
	rows, err := s.db.Query(`SELECT phase, step FROM effects WHERE saga = ? ORDER BY seq`, sagaID)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var phase, step string
		if err := rows.Scan(&phase, &step); err != nil {
			t.Fatal(err)
		}
		out = append(out, phase+":"+step)
	}
	return out
}

// failAtOf reads the failure point from a step's input: an action gets
// {"fail_at": ...}; a compensation {"input": {"fail_at": ...}, "output": ...}.
func failAtOf(input json.RawMessage) string {
	var in struct {
		FailAt string `json:"fail_at"`
		Input  *struct {
			FailAt string `json:"fail_at"`
		} `json:"input"`
	}
	_ = json.Unmarshal(input, &in)
	if in.Input != nil {
		return in.Input.FailAt
	}
	return in.FailAt
}

// pushHandler serves the shop as a push participant, following the
// documented response protocol.
func (s *shop) pushHandler(t *testing.T) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			SagaID string          `json:"saga_id"`
			Step   string          `json:"step"`
			Phase  string          `json:"phase"`
			Input  json.RawMessage `json:"input"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if r.Header.Get("Idempotency-Key") != body.SagaID+"/"+body.Step+"/"+body.Phase {
			t.Errorf("Idempotency-Key %q for %s/%s/%s", r.Header.Get("Idempotency-Key"), body.SagaID, body.Step, body.Phase)
		}
		err := s.do(r.Context(), body.SagaID, body.Step, body.Phase, failAtOf(body.Input))
		switch {
		case err == nil:
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"done":true}`))
		case errors.Is(err, errDeclined), errors.Is(err, guard.ErrCompensated):
			code := "declined"
			if errors.Is(err, guard.ErrCompensated) {
				code = "compensated"
			}
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(http.StatusUnprocessableEntity)
			fmt.Fprintf(w, `{"type":"about:blank","title":"refused","code":%q}`, code)
		default:
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
		}
	})
}

// shopDefinition is the seed's order saga over the shop: order, payment,
// inventory, then shipping as the pivot. target(step) says where a step
// runs.
func shopDefinition(name string, target func(step string) string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "name: %s\nversion: 1\nsteps:\n", name)
	for _, step := range []string{"order", "payment", "inventory"} {
		fmt.Fprintf(&b, `  - name: %[1]s
    action: {%[2]s, name: do_%[1]s}
    compensation: {%[2]s, name: undo_%[1]s}
    input: {fail_at: "${input.fail_at}"}
    attempt_timeout: 5s
    retry: {initial_interval: 20ms, max_interval: 200ms, max_attempts: 10}
    compensation_retry: {initial_interval: 20ms, max_interval: 200ms}
`, step, target(step))
	}
	fmt.Fprintf(&b, `  - name: shipping
    kind: pivot
    action: {%s, name: do_shipping}
    input: {fail_at: "${input.fail_at}"}
    attempt_timeout: 5s
`, target("shipping"))
	return b.String()
}

func pushServer(t *testing.T, h http.Handler) string {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}
