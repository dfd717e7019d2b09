package engine_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/accord-saga/accord/internal/engine"
	"github.com/accord-saga/accord/internal/storage"
	"github.com/accord-saga/accord/internal/storage/postgres/pgtest"
	"github.com/accord-saga/accord/internal/storage/sqlite"
)

// testPartitions keeps stores small: every partition has a loop.
const testPartitions = 4

// backend opens a fresh store; reopen opens the same store again.
// setState overwrites a saga record's stored state behind the store's
// back, as a fault or a bug would; it works once open has run.
type backend struct {
	name     string
	open     func(t *testing.T) (store storage.Driver, reopen func(t *testing.T) storage.Driver)
	setState func(t *testing.T, sagaID string, state []byte)
}

func backends() []backend {
	var path, url, schema string // of the store open made last
	return []backend{
		{name: "sqlite", setState: func(t *testing.T, id string, state []byte) {
			db, err := sql.Open("sqlite", path)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if res, err := db.Exec(`UPDATE sagas SET state = ? WHERE id = ?`, state, id); err != nil {
				t.Fatalf("set state: %v", err)
			} else if n, _ := res.RowsAffected(); n != 1 {
				t.Fatalf("set state: saga %s not found", id)
			}
		}, open: func(t *testing.T) (storage.Driver, func(t *testing.T) storage.Driver) {
			path = filepath.Join(t.TempDir(), "accord.db")
			open := func(t *testing.T) storage.Driver {
				d, err := sqlite.Open(context.Background(), sqlite.Config{Path: path, Partitions: testPartitions})
				if err != nil {
					t.Fatalf("open sqlite: %v", err)
				}
				t.Cleanup(func() { _ = d.Close() })
				return d
			}
			return open(t), open
		}},
		{name: "postgres", setState: func(t *testing.T, id string, state []byte) {
			ctx := context.Background()
			conn, err := pgx.Connect(ctx, url)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(ctx)
			tag, err := conn.Exec(ctx, `UPDATE `+pgx.Identifier{schema, "sagas"}.Sanitize()+` SET state = $1 WHERE id = $2`, state, id)
			if err != nil {
				t.Fatalf("set state: %v", err)
			}
			if tag.RowsAffected() != 1 {
				t.Fatalf("set state: saga %s not found", id)
			}
		}, open: func(t *testing.T) (storage.Driver, func(t *testing.T) storage.Driver) {
			url, schema = pgtest.Schema(t)
			open := func(t *testing.T) storage.Driver {
				d, err := pgtest.Open(context.Background(), url, schema, testPartitions)
				if err != nil {
					t.Fatalf("open postgres: %v", err)
				}
				t.Cleanup(func() { _ = d.Close() })
				return d
			}
			return open(t), open
		}},
	}
}

// forEachBackend runs f as a subtest on every backend.
func forEachBackend(t *testing.T, f func(t *testing.T, b backend)) {
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			f(t, b)
		})
	}
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// startEngine starts an engine on store and stops it at cleanup.
func startEngine(t *testing.T, store storage.Driver, mod func(*engine.Config)) *engine.Engine {
	t.Helper()
	cfg := engine.Config{Store: store, Logger: quietLogger(), LeaseTTL: time.Minute, TaskPollInterval: 20 * time.Millisecond}
	if mod != nil {
		mod(&cfg)
	}
	e, err := engine.New(cfg)
	if err != nil {
		t.Fatalf("new engine: %v", err)
	}
	if err := e.Start(context.Background()); err != nil {
		t.Fatalf("start engine: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := e.Stop(ctx); err != nil {
			t.Errorf("stop engine: %v", err)
		}
	})
	return e
}

func register(t *testing.T, e *engine.Engine, doc string) {
	t.Helper()
	if _, _, err := e.RegisterDefinition(context.Background(), []byte(doc)); err != nil {
		t.Fatalf("register: %v", err)
	}
}

// call is one delivery a test participant received.
type call struct {
	Saga, Step, Phase, Operation string
	Attempt                      int
}

// handler decides a task's result; nil means "never answer" (the worker
// crashed or hangs).
type handler func(t engine.Task) *engine.Result

// participant is a set of in-process pull workers that log every delivery.
type participant struct {
	mu    sync.Mutex
	calls []call
}

func (p *participant) log() []call {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]call(nil), p.calls...)
}

// callsOf returns the deliveries for one saga, in order.
func (p *participant) callsOf(sagaID string) []string {
	var out []string
	for _, c := range p.log() {
		if c.Saga == sagaID {
			out = append(out, c.Phase+":"+c.Step)
		}
	}
	return out
}

// serve runs n workers per queue until the test ends.
func (p *participant) serve(t *testing.T, e *engine.Engine, queues []string, n int, h handler) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, q := range queues {
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for ctx.Err() == nil {
					tasks, err := e.PollTasks(ctx, engine.PollParams{Queue: q, Max: 8, Visibility: 5 * time.Second, Wait: 200 * time.Millisecond})
					if err != nil {
						if ctx.Err() == nil && !errors.Is(err, engine.ErrStopped) {
							t.Errorf("poll %s: %v", q, err)
						}
						return
					}
					for _, task := range tasks {
						p.mu.Lock()
						p.calls = append(p.calls, call{Saga: task.SagaID, Step: task.Step, Phase: task.Phase, Operation: task.Operation, Attempt: task.Attempt})
						p.mu.Unlock()
						res := h(task)
						if res == nil {
							continue
						}
						res.TaskID, res.ClaimToken = task.ID, task.ClaimToken
						if err := e.CompleteTask(ctx, *res); err != nil && ctx.Err() == nil && !errors.Is(err, engine.ErrStopped) {
							t.Errorf("complete %s: %v", task.ID, err)
						}
					}
				}
			}()
		}
	}
	t.Cleanup(func() { cancel(); wg.Wait() })
}

func success(output any) *engine.Result {
	b, _ := json.Marshal(output)
	return &engine.Result{Outcome: "success", Output: b}
}

func failure(code string) *engine.Result {
	return &engine.Result{Outcome: "failure", ErrorCode: code, ErrorMessage: "test failure " + code}
}

func retryable(code string) *engine.Result {
	return &engine.Result{Outcome: "retryable", ErrorCode: code, ErrorMessage: "transient " + code}
}

// waitEnd waits for a saga to end and returns it.
func waitEnd(t *testing.T, e *engine.Engine, id string) engine.Saga {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := e.Wait(ctx, id)
	if err != nil {
		t.Fatalf("wait for saga %s: %v (status %s)", id, err, s.Status)
	}
	return s
}

func startSaga(t *testing.T, e *engine.Engine, def string, input any) string {
	t.Helper()
	b, _ := json.Marshal(input)
	res, err := e.StartSaga(context.Background(), engine.StartParams{Definition: def, Input: b})
	if err != nil {
		t.Fatalf("start %s: %v", def, err)
	}
	return res.SagaID
}

func eq[T comparable](t *testing.T, what string, got, want []T) {
	t.Helper()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("%s:\n got  %v\n want %v", what, got, want)
	}
}
