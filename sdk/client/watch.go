package client

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// SagaStatus is one event of a saga watch.
type SagaStatus struct {
	ID        string         `json:"id"`
	Status    string         `json:"status"`
	Terminal  bool           `json:"terminal"`
	UpdatedAt time.Time      `json:"updated_at"`
	Steps     []StepProgress `json:"steps"`
}

// StepProgress is a step's status in a watch event.
type StepProgress struct {
	Name     string `json:"name"`
	Status   string `json:"status"`
	Attempts int    `json:"attempts"`
}

// maxEventBytes bounds one server-sent event line.
const maxEventBytes = 4 << 20

// ErrStopWatch, returned by a WatchSaga callback, ends the watch without
// an error.
var ErrStopWatch = errors.New("accord: stop watching")

// WatchSaga calls fn with the saga's status now and after every change,
// until the saga has ended (fn has then seen the terminal status), ctx is
// done, or fn returns an error (ErrStopWatch ends the watch quietly). It
// reconnects when the server ends the stream early; an event may then be
// repeated.
func (c *Client) WatchSaga(ctx context.Context, id string, fn func(SagaStatus) error) error {
	for attempt := 0; ; {
		ended, progressed, err := c.watchOnce(ctx, id, fn)
		switch {
		case errors.Is(err, ErrStopWatch):
			return nil
		case ended:
			return nil
		case err != nil && (ctx.Err() != nil || !retryable(retrySafe, err)):
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
		if progressed {
			attempt = 0
		} else if attempt++; attempt > c.retries {
			if err == nil {
				err = fmt.Errorf("accord: watch of saga %s: the stream ended without events", id)
			}
			return err
		}
		t := time.NewTimer(c.backoff(attempt))
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// watchOnce reads one event stream. ended: the terminal event was seen;
// progressed: at least one event was.
func (c *Client) watchOnce(ctx context.Context, id string, fn func(SagaStatus) error) (ended, progressed bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+sagaPath(id, "watch"), nil)
	if err != nil {
		return false, false, fmt.Errorf("accord: watch: %w", err)
	}
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("User-Agent", c.userAgent)
	res, err := c.hc.Do(req)
	if err != nil {
		return false, false, fmt.Errorf("%w: watch saga %s: %w", errTransport, id, err)
	}
	defer res.Body.Close()
	if res.StatusCode >= 400 {
		data, _ := io.ReadAll(io.LimitReader(res.Body, maxResponseBytes))
		return false, false, problemFrom(res, data)
	}
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 0, 64<<10), maxEventBytes)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue // event names, comments and blank separators
		}
		var st SagaStatus
		if err := json.Unmarshal([]byte(data), &st); err != nil {
			return false, progressed, fmt.Errorf("accord: watch saga %s: bad event: %w", id, err)
		}
		progressed = true
		if err := fn(st); err != nil {
			return false, true, err
		}
		if st.Terminal {
			return true, true, nil
		}
	}
	if err := sc.Err(); err != nil && ctx.Err() == nil {
		return false, progressed, fmt.Errorf("%w: watch saga %s: %w", errTransport, id, err)
	}
	return false, progressed, nil
}
