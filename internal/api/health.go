package api

import (
	"context"
	"encoding/json"
	"net/http"
	"time"
)

// ReadinessCheck reports why the server cannot serve yet (nil when ready).
type ReadinessCheck func(ctx context.Context) error

// readyTimeout bounds one readiness probe, so a hung database makes the
// probe fail rather than hang the prober.
const readyTimeout = 2 * time.Second

func handleHealthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func handleReadyz(checks map[string]ReadinessCheck) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
		defer cancel()
		status := http.StatusOK
		out := map[string]string{}
		for name, check := range checks {
			if err := check(ctx); err != nil {
				status = http.StatusServiceUnavailable
				out[name] = err.Error()
			} else {
				out[name] = "ok"
			}
		}
		writeJSON(w, status, out)
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	_ = enc.Encode(v) // the client may be gone; nothing to do about it
}
