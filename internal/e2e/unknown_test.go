package e2e

import (
	"context"
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/accord-saga/accord/sdk/client"
)

// TestGarbage2xxIsCompensated: a participant answers 2xx with a body that
// is not JSON. It may have acted, so the step's outcome is unknown, like a
// timeout: when the saga rolls back (its other step fails), the step is
// compensated rather than left "failed" with its effect in place.
func TestGarbage2xxIsCompensated(t *testing.T) {
	t.Parallel()
	var reserves, undos atomic.Int64
	mux := http.NewServeMux()
	mux.HandleFunc("/reserve", func(w http.ResponseWriter, r *http.Request) {
		reserves.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte(`{"reserved": tru`)) // acted, then answered garbage
	})
	mux.HandleFunc("/unreserve", func(w http.ResponseWriter, r *http.Request) {
		undos.Add(1)
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("/charge", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(http.StatusUnprocessableEntity)
		_, _ = w.Write([]byte(`{"title": "Card declined", "code": "declined"}`))
	})
	mux.HandleFunc("/refund", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	url := pushServer(t, mux)
	srv := startServer(t, t.TempDir())
	c := srv.client(t)
	def := fmt.Sprintf(`name: garbage
version: 1
steps:
  - name: reserve
    action: {http: %q}
    compensation: {http: %q}
    attempt_timeout: 300ms
    retry: {max_attempts: 1}
  - name: charge
    action: {http: %q}
    compensation: {http: %q}
`, url+"/reserve", url+"/unreserve", url+"/charge", url+"/refund")
	if _, _, err := c.RegisterDefinition(context.Background(), []byte(def), "application/yaml"); err != nil {
		t.Fatal(err)
	}
	res, err := c.StartSaga(context.Background(), client.StartRequest{Definition: "garbage", Input: map[string]int{}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := c.WaitSaga(ctx, res.ID)
	if err != nil {
		t.Fatalf("wait: %v", err)
	}
	if s.Status != client.StatusCompensated {
		t.Fatalf("saga %s, want compensated", s.Status)
	}
	var reserve client.Step
	for _, st := range s.Steps {
		if st.Name == "reserve" {
			reserve = st
		}
	}
	if reserves.Load() != 1 || undos.Load() != 1 || reserve.Status != "compensated" || !reserve.OutcomeUnknown {
		t.Fatalf("reserve step %+v: %d calls, %d compensations; want its unknown outcome compensated once",
			reserve, reserves.Load(), undos.Load())
	}
}
