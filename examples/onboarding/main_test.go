package main

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/accord-saga/accord/sdk/client"
	"github.com/accord-saga/accord/sdk/sdktest"
)

type logWriter struct{ t *testing.T }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// TestOnboarding runs the saga against a real server with the pull
// workers: ada is onboarded (through a failing audit attempt), bob's
// address bounces, so his profile is deleted and nothing else happens.
func TestOnboarding(t *testing.T) {
	srv := sdktest.NewServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s := newServices(logWriter{t})
	users := []User{
		{Name: "ada", Email: "ada@example.com", AuditFlaky: true},
		{Name: "bob", Email: "bob@nowhere.invalid"},
	}
	got, err := run(ctx, srv.Client, s, users)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Status != "completed" || got[1].Status != "compensated" {
		t.Fatalf("sagas ended %+v, want ada completed and bob compensated", got)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if want := map[string]string{"ada": "active", "bob": "deleted"}; len(s.profiles) != 2 ||
		s.profiles["ada"] != want["ada"] || s.profiles["bob"] != want["bob"] {
		t.Errorf("profiles %v, want %v", s.profiles, want)
	}
	if !slices.Equal(s.emails, []string{"ada@example.com"}) {
		t.Errorf("emails sent %v, want ada's only", s.emails)
	}
	if !slices.Equal(s.audit, []string{"onboarded ada"}) || s.attempts["ada"] != 2 {
		t.Errorf("audit %v after %d attempts, want ada's record after a retry", s.audit, s.attempts["ada"])
	}
	if !slices.Equal(s.events, []string{"OnboardingComplete ada"}) {
		t.Errorf("announced %v, want OnboardingComplete for ada only", s.events)
	}

	// The steps ran in order, and the announcement came last.
	ada, err := srv.Client.GetSaga(ctx, got[0].SagaID)
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range ada.Steps {
		if st.Status != "succeeded" {
			t.Errorf("ada: step %s %s", st.Name, st.Status)
		}
	}
	page, err := srv.Client.SagaEvents(ctx, got[0].SagaID, client.EventOptions{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, ev := range page.Items {
		types = append(types, ev.Type)
	}
	if types[len(types)-1] != "saga.completed" || !slices.Contains(types, "step.retry_scheduled") {
		t.Errorf("ada's log %v: want a retry of the audit and saga.completed last", types)
	}
	bob, err := srv.Client.GetSaga(ctx, got[1].SagaID)
	if err != nil {
		t.Fatal(err)
	}
	if bob.FailedStep != "welcome_email" {
		t.Errorf("bob: failed step %q, want welcome_email", bob.FailedStep)
	}
}
