// Command onboarding is the user onboarding orchestration as a saga, with
// its services as pull workers: when a user registers, create the profile,
// send the welcome email, write the audit record, then announce
// OnboardingComplete.
//
// An email cannot be unsent, so the welcome email is the saga's pivot: if
// it fails (the address bounces), the profile is deleted; once it is sent,
// the audit record and the announcement are retried until they succeed.
//
//	go run ./cmd/accord server        # in one terminal
//	go run ./examples/onboarding      # in another
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync"
	"time"

	"github.com/accord-saga/accord/sdk/client"
	"github.com/accord-saga/accord/sdk/worker"
)

const definition = `
name: onboarding
version: 1
description: user onboarding — profile, welcome email, audit, then OnboardingComplete
steps:
  - name: profile
    action: {queue: profiles, name: create_profile}
    compensation: {queue: profiles, name: delete_profile}
  - name: welcome_email
    kind: pivot
    action: {queue: email, name: send_welcome}
  - name: audit
    kind: retriable
    action: {queue: audit, name: record}
    retry: {initial_interval: 100ms, max_interval: 1s}
  - name: complete
    kind: retriable
    action: {queue: notifications, name: onboarding_complete}
`

// User is the saga input: the UserRegistered event.
type User struct {
	Name  string `json:"name"`
	Email string `json:"email"`
	// AuditFlaky makes the audit service fail its first attempt, as a
	// transient outage would.
	AuditFlaky bool `json:"audit_flaky,omitempty"`
}

// services is what the four services keep: each its own state, and the
// idempotency keys it has answered, so a redelivered task has its effect
// once.
type services struct {
	mu       sync.Mutex
	done     map[string]bool   // idempotency keys answered
	profiles map[string]string // name → active, deleted
	emails   []string          // addresses welcomed
	audit    []string          // audit records
	events   []string          // announcements: "OnboardingComplete <name>"
	attempts map[string]int    // audit attempts per user
	out      io.Writer
}

func newServices(out io.Writer) *services {
	return &services{done: map[string]bool{}, profiles: map[string]string{}, attempts: map[string]int{}, out: out}
}

// once runs fn for the first delivery of a key; later deliveries succeed
// without running it again.
func (s *services) once(t *worker.Task, fn func() error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done[t.IdempotencyKey] {
		return nil
	}
	if err := fn(); err != nil {
		return err
	}
	s.done[t.IdempotencyKey] = true
	return nil
}

func (s *services) register(w *worker.Worker) {
	user := func(t *worker.Task) (User, error) {
		var u User
		if t.Phase == "compensation" {
			var comp struct{ Input User }
			err := t.Decode(&comp)
			u = comp.Input
			if err != nil {
				return u, worker.Failure("bad_input", err.Error())
			}
		} else if err := t.Decode(&u); err != nil {
			return u, worker.Failure("bad_input", err.Error())
		}
		if u.Name == "" {
			return u, worker.Failure("bad_input", "name is required")
		}
		return u, nil
	}
	handle := func(queue, op string, fn func(u User) error) {
		w.Handle(queue, op, func(ctx context.Context, t *worker.Task) (any, error) {
			u, err := user(t)
			if err != nil {
				return nil, err
			}
			err = s.once(t, func() error { return fn(u) })
			outcome := "ok"
			if err != nil {
				outcome = err.Error()
			}
			fmt.Fprintf(s.out, "  %-14s %-20s %-6s attempt %d -> %s\n", queue, op, u.Name, t.Attempt, outcome)
			return map[string]string{"user": u.Name}, err
		})
	}
	handle("profiles", "create_profile", func(u User) error {
		if s.profiles[u.Name] == "active" {
			return worker.Failure("name_taken", "the name "+u.Name+" is taken")
		}
		s.profiles[u.Name] = "active"
		return nil
	})
	handle("profiles", "delete_profile", func(u User) error {
		if s.profiles[u.Name] == "active" {
			s.profiles[u.Name] = "deleted"
		}
		return nil
	})
	handle("email", "send_welcome", func(u User) error {
		if !strings.Contains(u.Email, "@") || strings.HasSuffix(u.Email, ".invalid") {
			return worker.Failure("bounced", "the address "+u.Email+" does not exist")
		}
		s.emails = append(s.emails, u.Email)
		return nil
	})
	handle("audit", "record", func(u User) error {
		s.attempts[u.Name]++
		if u.AuditFlaky && s.attempts[u.Name] == 1 {
			return worker.Retryable(errors.New("the audit log is busy"))
		}
		s.audit = append(s.audit, "onboarded "+u.Name)
		return nil
	})
	handle("notifications", "onboarding_complete", func(u User) error {
		s.events = append(s.events, "OnboardingComplete "+u.Name)
		return nil
	})
}

// onboarded is how one user's saga ended.
type onboarded struct {
	User   User
	SagaID string
	Status string
}

// run registers the saga, serves the services as a pull worker, and
// onboards the users one after the other.
func run(ctx context.Context, c *client.Client, s *services, users []User) ([]onboarded, error) {
	if _, _, err := c.RegisterDefinition(ctx, []byte(definition), "application/yaml"); err != nil {
		return nil, fmt.Errorf("register the onboarding saga: %w", err)
	}
	w := worker.New(c, worker.Options{PollWait: time.Second})
	s.register(w)
	wctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(wctx) }()
	var out []onboarded
	var err error
	for _, u := range users {
		fmt.Fprintf(s.out, "UserRegistered %s <%s>\n", u.Name, u.Email)
		var started *client.StartResult
		started, err = c.StartSaga(ctx, client.StartRequest{Definition: "onboarding", Input: u})
		if err != nil {
			break
		}
		var saga *client.Saga
		saga, err = c.WaitSaga(ctx, started.ID)
		if err != nil {
			break
		}
		fmt.Fprintf(s.out, "saga %s ended %s\n\n", saga.ID, saga.Status)
		out = append(out, onboarded{User: u, SagaID: saga.ID, Status: saga.Status})
	}
	stop()
	if werr := <-done; werr != nil && !errors.Is(werr, context.Canceled) && err == nil {
		err = werr
	}
	return out, err
}

func main() {
	server := flag.String("server", envOr("ACCORD_SERVER", "http://127.0.0.1:7780"), "Accord server URL")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	c, err := client.New(*server)
	if err != nil {
		fmt.Fprintln(os.Stderr, "onboarding:", err)
		os.Exit(1)
	}
	suffix := time.Now().Format("150405")
	users := []User{
		{Name: "ada-" + suffix, Email: "ada@example.com", AuditFlaky: true},
		{Name: "bob-" + suffix, Email: "bob@nowhere.invalid"},
	}
	if _, err := run(ctx, c, newServices(os.Stdout), users); err != nil {
		fmt.Fprintln(os.Stderr, "onboarding:", err)
		os.Exit(1)
	}
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
