package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"time"

	"github.com/danielgtaylor/huma/v2"
	"github.com/danielgtaylor/huma/v2/adapters/humago"

	"github.com/accord-saga/accord/internal/engine"
)

// SagaStatusEvent is one event of a saga watch: the saga's status whenever
// it changed.
type SagaStatusEvent struct {
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

// Watch timing. A watch rereads the saga every watchPoll (the engine wakes
// it at once when the saga ends), sends a comment every watchKeepAlive so
// that proxies keep an idle stream open, and ends after watchMaxDuration
// (the client reconnects): every watch holds a long-poll slot.
const (
	watchPoll        = 500 * time.Millisecond
	watchKeepAlive   = 15 * time.Second
	watchMaxDuration = 10 * time.Minute
	watchWriteWait   = 10 * time.Second
)

type watchOutput struct {
	Body func(huma.Context)
}

func (s *server) registerWatch() {
	eventSchema := s.api.OpenAPI().Components.Schemas.Schema(reflect.TypeFor[SagaStatusEvent](), true, "SagaStatusEvent")
	huma.Register(s.api, s.operation(huma.Operation{
		OperationID: "watchSaga",
		Method:      http.MethodGet,
		Path:        "/v1/sagas/{id}/watch",
		Summary:     "Watch a saga's status (server-sent events)",
		Description: "A text/event-stream of `status` events, one whenever the saga's status or a step's changed, " +
			"starting with the current state and ending after the event whose terminal is true. " +
			"The stream also ends after 10 minutes; reconnect to go on.",
		Tags: []string{"Sagas"},
		Responses: map[string]*huma.Response{
			"200": {Description: "OK", Content: map[string]*huma.MediaType{
				"text/event-stream": {Schema: &huma.Schema{
					Type:        "string",
					Description: "Lines `event: status` and `data: <SagaStatusEvent JSON>`, per the SSE specification.",
				}},
			}},
		},
		Extensions: map[string]any{"x-event-schema": eventSchema},
	}, http.StatusNotFound), s.handleWatchSaga)
}

func (s *server) handleWatchSaga(ctx context.Context, in *sagaIDInput) (*watchOutput, error) {
	sg, err := s.eng.GetSaga(ctx, in.ID)
	if err != nil {
		return nil, s.problemFor(ctx, err, "path.id")
	}
	return &watchOutput{Body: func(hctx huma.Context) {
		r, w := humago.Unwrap(hctx)
		s.streamSaga(r.Context(), w, in.ID, sg)
	}}, nil
}

// streamSaga writes status events until the saga ends, the client leaves
// or the watch has lasted watchMaxDuration.
func (s *server) streamSaga(ctx context.Context, w http.ResponseWriter, id string, sg engine.Saga) {
	ctx, cancel := context.WithTimeout(ctx, watchMaxDuration)
	defer cancel()
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)

	send := func(payload []byte) bool {
		_ = rc.SetWriteDeadline(time.Now().Add(watchWriteWait))
		if _, err := w.Write(payload); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	var last []byte
	lastSent := time.Now()
	for {
		ev, err := json.Marshal(statusEvent(sg))
		if err != nil {
			return
		}
		if string(ev) != string(last) {
			if !send(fmt.Appendf(nil, "event: status\ndata: %s\n\n", ev)) {
				return
			}
			last, lastSent = ev, time.Now()
		} else if time.Since(lastSent) >= watchKeepAlive {
			if !send([]byte(": keep-alive\n\n")) {
				return
			}
			lastSent = time.Now()
		}
		if sg.Terminal {
			return
		}
		pctx, pcancel := context.WithTimeout(ctx, watchPoll)
		next, err := s.eng.Wait(pctx, id)
		if err != nil && pctx.Err() != nil && ctx.Err() == nil {
			next, err = s.eng.GetSaga(ctx, id)
		}
		pcancel()
		if err != nil {
			// The client left, the watch is over, or the saga cannot be
			// read now: end the stream; the client reconnects.
			return
		}
		sg = next
	}
}

func statusEvent(sg engine.Saga) SagaStatusEvent {
	ev := SagaStatusEvent{ID: sg.ID, Status: sg.Status, Terminal: sg.Terminal, UpdatedAt: sg.UpdatedAt,
		Steps: make([]StepProgress, len(sg.View.Steps))}
	for i, st := range sg.View.Steps {
		ev.Steps[i] = StepProgress{Name: st.Name, Status: string(st.Status), Attempts: st.Attempts}
	}
	return ev
}
