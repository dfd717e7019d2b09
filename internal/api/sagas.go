package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/danielgtaylor/huma/v2"

	"github.com/accord-saga/accord/internal/engine"
	"github.com/accord-saga/accord/internal/saga"
	"github.com/accord-saga/accord/internal/storage"
)

// sagaStatuses are the values of a saga's status.
var sagaStatuses = []string{
	string(saga.StatusRunning), string(saga.StatusCompensating), string(saga.StatusCompleted),
	string(saga.StatusCompensated), string(saga.StatusCancelled), string(saga.StatusNeedsOperator),
	engine.StatusQuarantined, engine.StatusDiscarded,
}

// Saga is a saga with its steps, as GET /v1/sagas/{id} shows it.
type Saga struct {
	ID                string          `json:"id"`
	Definition        string          `json:"definition"`
	DefinitionVersion int             `json:"definition_version"`
	Status            string          `json:"status" enum:"running,compensating,completed,compensated,cancelled,needs_operator,quarantined,discarded"`
	Terminal          bool            `json:"terminal" doc:"True once the saga has ended (completed, compensated, cancelled, needs_operator, discarded)."`
	Quarantine        string          `json:"quarantine,omitempty" doc:"Why a quarantined or discarded saga was set aside: its stored state cannot be decoded. Its steps are then unknown."`
	Partition         int             `json:"partition"`
	Reason            string          `json:"reason,omitempty" doc:"Why the saga compensates: step_failed, cancelled, saga_timeout."`
	FailedStep        string          `json:"failed_step,omitempty"`
	Note              string          `json:"note,omitempty" doc:"The cancel's reason, or why the saga needs an operator."`
	TimedOut          bool            `json:"timed_out,omitempty"`
	Input             json.RawMessage `json:"input,omitempty"`
	CreatedAt         time.Time       `json:"created_at"`
	UpdatedAt         time.Time       `json:"updated_at"`
	StartedAt         time.Time       `json:"started_at,omitzero"`
	EndedAt           time.Time       `json:"ended_at,omitzero"`
	Deadline          time.Time       `json:"deadline,omitzero" doc:"When the saga timeout fires."`
	Steps             []Step          `json:"steps"`
}

// Step is one step of a saga.
type Step struct {
	Name           string          `json:"name"`
	Kind           string          `json:"kind" enum:"compensatable,pivot,retriable"`
	Status         string          `json:"status" enum:"pending,running,succeeded,failed,timed_out,compensating,compensated,compensation_failed,skipped"`
	Attempts       int             `json:"attempts"`
	OutcomeUnknown bool            `json:"outcome_unknown,omitempty" doc:"An attempt got no answer in time, so the action may have taken effect."`
	LastError      *ErrorInfo      `json:"last_error,omitempty"`
	StartedAt      time.Time       `json:"started_at,omitzero"`
	EndedAt        time.Time       `json:"ended_at,omitzero"`
	NextAttemptAt  time.Time       `json:"next_attempt_at,omitzero"`
	Output         json.RawMessage `json:"output,omitempty"`
	Compensation   *Compensation   `json:"compensation,omitempty" doc:"Present once the compensation has started."`
}

// Compensation is a step's compensation.
type Compensation struct {
	Attempts      int        `json:"attempts"`
	LastError     *ErrorInfo `json:"last_error,omitempty"`
	StartedAt     time.Time  `json:"started_at,omitzero"`
	EndedAt       time.Time  `json:"ended_at,omitzero"`
	NextAttemptAt time.Time  `json:"next_attempt_at,omitzero"`
}

// ErrorInfo is an error a participant reported.
type ErrorInfo struct {
	Code    string `json:"code,omitempty"`
	Message string `json:"message,omitempty"`
}

// SagaSummary is a saga in a listing.
type SagaSummary struct {
	ID                string    `json:"id"`
	Definition        string    `json:"definition"`
	DefinitionVersion int       `json:"definition_version"`
	Status            string    `json:"status"`
	Terminal          bool      `json:"terminal"`
	CreatedAt         time.Time `json:"created_at"`
	UpdatedAt         time.Time `json:"updated_at"`
	EndedAt           time.Time `json:"ended_at,omitzero"`
}

// SagaList is a page of sagas, newest first.
type SagaList struct {
	Items      []SagaSummary `json:"items"`
	NextCursor string        `json:"next_cursor,omitempty" doc:"Pass as cursor for the next page; absent on the last page."`
}

// StartedSaga answers a start.
type StartedSaga struct {
	ID      string `json:"id"`
	Status  string `json:"status"`
	Created bool   `json:"created" doc:"False when the Idempotency-Key named a saga started before."`
}

// SagaEvent is one event of a saga's log.
type SagaEvent struct {
	Position          int64           `json:"position" doc:"The event's place in the saga log, from 1."`
	PartitionPosition int64           `json:"partition_position" doc:"The event's place in its partition's log."`
	Type              string          `json:"type"`
	Time              time.Time       `json:"time" doc:"When the event was committed (database time)."`
	Data              json.RawMessage `json:"data,omitempty"`
}

// SagaEventList is a page of a saga's log.
type SagaEventList struct {
	Items      []SagaEvent `json:"items"`
	NextCursor string      `json:"next_cursor,omitempty" doc:"Pass as cursor for the next page; absent when the log has no more events now."`
}

type startSagaBody struct {
	Definition string          `json:"definition" minLength:"1" maxLength:"128" doc:"Definition name."`
	Version    int             `json:"version,omitempty" minimum:"0" maximum:"2147483647" doc:"Definition version; absent or 0: the latest enabled version."`
	Input      json.RawMessage `json:"input,omitempty" doc:"The saga input: any JSON value, usually an object. Default {}."`
}

type startSagaInput struct {
	IdempotencyKey string `header:"Idempotency-Key" maxLength:"512" doc:"Makes the start safe to retry: the same key returns the same saga (for 24h by default)."`
	Body           startSagaBody
}

type startSagaOutput struct {
	Status   int
	Location string `header:"Location"`
	Body     StartedSaga
}

type sagaIDInput struct {
	ID string `path:"id" doc:"Saga id."`
}

type getSagaInput struct {
	ID          string `path:"id"`
	IfNoneMatch string `header:"If-None-Match"`
}

type sagaOutput struct {
	Status int
	ETag   string `header:"ETag"`
	Body   *Saga
}

type listSagasInput struct {
	Status        []string  `query:"status,explode" doc:"Only sagas in these statuses; repeat the parameter or separate with commas."`
	Definition    string    `query:"definition" maxLength:"128" doc:"Only sagas of this definition."`
	CreatedAfter  time.Time `query:"created_after" doc:"Only sagas created at or after this time (RFC 3339)."`
	CreatedBefore time.Time `query:"created_before" doc:"Only sagas created before this time (RFC 3339)."`
	Cursor        string    `query:"cursor" doc:"next_cursor of the previous page."`
	Limit         int       `query:"limit" minimum:"1" maximum:"500" default:"50"`
}

type listSagasOutput struct {
	Body SagaList
}

type cancelSagaInput struct {
	ID   string `path:"id"`
	Body *struct {
		Reason string `json:"reason,omitempty" maxLength:"1024" doc:"Recorded in the saga as its note."`
	} `required:"false"`
}

type sagaEventsInput struct {
	ID     string `path:"id"`
	Cursor string `query:"cursor" doc:"next_cursor of the previous page."`
	Limit  int    `query:"limit" minimum:"1" maximum:"1000" default:"500"`
}

type sagaEventsOutput struct {
	Body SagaEventList
}

type waitSagaInput struct {
	ID      string `path:"id"`
	Timeout string `query:"timeout" default:"30s" doc:"How long to wait for the saga to end: a Go duration, at most 60s."`
}

// maxWait bounds a long poll, so that it outlives no proxy's idle timeout
// and holds its slot for a bounded time.
const maxWait = 60 * time.Second

func (s *server) registerSagas() {
	huma.Register(s.api, s.operation(huma.Operation{
		OperationID: "startSaga",
		Method:      http.MethodPost,
		Path:        "/v1/sagas",
		Summary:     "Start a saga",
		Description: "Starts a saga of a registered definition: the version given, or the latest enabled one. " +
			"201 when started; 200 when the Idempotency-Key named a saga started before. " +
			"409 definition-disabled when the version given is disabled. The answer comes once the start is durable.",
		Tags:          []string{"Sagas"},
		DefaultStatus: http.StatusCreated,
	}, http.StatusBadRequest, http.StatusNotFound, http.StatusConflict, http.StatusRequestEntityTooLarge, http.StatusUnprocessableEntity), s.handleStartSaga)
	alsoRespond(s.api, "/v1/sagas", http.MethodPost, http.StatusCreated, http.StatusOK,
		"The Idempotency-Key named a saga started before; it is returned.")

	huma.Register(s.api, s.operation(huma.Operation{
		OperationID: "listSagas",
		Method:      http.MethodGet,
		Path:        "/v1/sagas",
		Summary:     "List sagas",
		Description: "Lists sagas newest first, filtered by status, definition and creation time.",
		Tags:        []string{"Sagas"},
	}, http.StatusUnprocessableEntity), s.handleListSagas)

	huma.Register(s.api, s.operation(huma.Operation{
		OperationID: "getSaga",
		Method:      http.MethodGet,
		Path:        "/v1/sagas/{id}",
		Summary:     "Get a saga",
		Description: "Returns the saga's durable state: status, steps with attempts, errors, timings and outputs.",
		Tags:        []string{"Sagas"},
	}, http.StatusNotFound), s.handleGetSaga)

	huma.Register(s.api, s.operation(huma.Operation{
		OperationID: "cancelSaga",
		Method:      http.MethodPost,
		Path:        "/v1/sagas/{id}/cancel",
		Summary:     "Cancel a saga",
		Description: "The saga compensates what it has done and ends cancelled. 409 once its pivot has started or it has ended.",
		Tags:        []string{"Sagas"},
	}, http.StatusNotFound, http.StatusConflict, http.StatusUnprocessableEntity), s.handleCancelSaga)

	huma.Register(s.api, s.operation(huma.Operation{
		OperationID: "retrySaga",
		Method:      http.MethodPost,
		Path:        "/v1/sagas/{id}/retry",
		Summary:     "Resume a saga that needs an operator",
		Description: "Tries the failed compensation again with a fresh retry budget. 409 unless the saga is needs_operator.",
		Tags:        []string{"Sagas"},
	}, http.StatusNotFound, http.StatusConflict), s.handleRetrySaga)

	huma.Register(s.api, s.operation(huma.Operation{
		OperationID: "discardSaga",
		Method:      http.MethodPost,
		Path:        "/v1/sagas/{id}/discard",
		Summary:     "Discard a quarantined saga",
		Description: "Ends a quarantined saga (one whose stored state cannot be decoded): it becomes discarded, and retention removes it. " +
			"Tasks already handed to workers are not withdrawn. 409 unless the saga is quarantined.",
		Tags: []string{"Sagas"},
	}, http.StatusNotFound, http.StatusConflict), s.handleDiscardSaga)

	huma.Register(s.api, s.operation(huma.Operation{
		OperationID: "listSagaEvents",
		Method:      http.MethodGet,
		Path:        "/v1/sagas/{id}/events",
		Summary:     "Read a saga's log",
		Tags:        []string{"Sagas"},
	}, http.StatusNotFound, http.StatusUnprocessableEntity), s.handleSagaEvents)

	huma.Register(s.api, s.operation(huma.Operation{
		OperationID: "waitSaga",
		Method:      http.MethodGet,
		Path:        "/v1/sagas/{id}/wait",
		Summary:     "Wait for a saga to end",
		Description: "Long poll: answers when the saga has ended or the timeout has passed, with the saga as it is then (check terminal).",
		Tags:        []string{"Sagas"},
	}, http.StatusNotFound, http.StatusUnprocessableEntity), s.handleWaitSaga)
}

func (s *server) handleStartSaga(ctx context.Context, in *startSagaInput) (*startSagaOutput, error) {
	if n := len(in.Body.Input); n > engine.MaxInputBytes {
		return nil, tooLarge("body.input", n, engine.MaxInputBytes)
	}
	res, err := s.eng.StartSaga(ctx, engine.StartParams{
		Definition: in.Body.Definition, Version: in.Body.Version, Input: in.Body.Input, IdempotencyKey: in.IdempotencyKey,
	})
	if errors.Is(err, engine.ErrDefinitionNotFound) {
		return nil, s.problemFor(ctx, err, "body.definition")
	}
	if errors.Is(err, engine.ErrDefinitionDisabled) {
		return nil, s.problemFor(ctx, err, "body.version")
	}
	if err != nil {
		return nil, s.problemFor(ctx, err, "body.input")
	}
	out := &startSagaOutput{Status: http.StatusCreated, Location: "/v1/sagas/" + url.PathEscape(res.SagaID),
		Body: StartedSaga{ID: res.SagaID, Status: string(saga.StatusRunning), Created: res.Created}}
	if !res.Created {
		out.Status = http.StatusOK
		sg, err := s.eng.GetSaga(ctx, res.SagaID)
		if err != nil {
			return nil, s.problemFor(ctx, err, "")
		}
		out.Body.Status = sg.Status
	}
	return out, nil
}

func (s *server) handleGetSaga(ctx context.Context, in *getSagaInput) (*sagaOutput, error) {
	sg, err := s.eng.GetSaga(ctx, in.ID)
	if err != nil {
		return nil, s.problemFor(ctx, err, "path.id")
	}
	tag := sagaETag(sg.UpdatedAt)
	if in.IfNoneMatch != "" && etagMatch(in.IfNoneMatch, tag, true) {
		return &sagaOutput{Status: http.StatusNotModified, ETag: tag}, nil
	}
	return &sagaOutput{Status: http.StatusOK, ETag: tag, Body: sagaFrom(sg)}, nil
}

func (s *server) handleListSagas(ctx context.Context, in *listSagasInput) (*listSagasOutput, error) {
	params := &storage.SagaListParams{
		Definition: in.Definition, CreatedAfter: in.CreatedAfter, CreatedBefore: in.CreatedBefore, Limit: in.Limit + 1,
	}
	for _, v := range in.Status {
		for st := range strings.SplitSeq(v, ",") {
			st = strings.TrimSpace(st)
			if st == "" {
				continue
			}
			if !slices.Contains(sagaStatuses, st) {
				return nil, validation("query.status", "unknown status %q; one of %s", st, strings.Join(sagaStatuses, ", "))
			}
			if !slices.Contains(params.Statuses, st) {
				params.Statuses = append(params.Statuses, st)
			}
		}
	}
	if in.Cursor != "" {
		at, id, err := decodeSagaCursor(in.Cursor)
		if err != nil {
			return nil, validation("query.cursor", "%s", err.Error())
		}
		params.AfterCreatedAt, params.AfterID = at, id
	}
	recs, err := s.eng.ListSagas(ctx, params)
	if err != nil {
		return nil, s.problemFor(ctx, err, "query")
	}
	out := &listSagasOutput{Body: SagaList{Items: make([]SagaSummary, 0, min(len(recs), in.Limit))}}
	for i, rec := range recs {
		if i == in.Limit {
			last := recs[i-1]
			out.Body.NextCursor = encodeSagaCursor(last.CreatedAt, last.ID)
			break
		}
		out.Body.Items = append(out.Body.Items, SagaSummary{
			ID: rec.ID, Definition: rec.Definition, DefinitionVersion: rec.DefinitionVersion, Status: rec.Status,
			Terminal: rec.Terminal, CreatedAt: rec.CreatedAt, UpdatedAt: rec.UpdatedAt, EndedAt: rec.EndedAt,
		})
	}
	return out, nil
}

func (s *server) handleCancelSaga(ctx context.Context, in *cancelSagaInput) (*sagaOutput, error) {
	reason := ""
	if in.Body != nil {
		reason = in.Body.Reason
	}
	if err := s.eng.Cancel(ctx, in.ID, reason); err != nil {
		return nil, s.problemFor(ctx, err, "body.reason")
	}
	return s.currentSaga(ctx, in.ID)
}

func (s *server) handleRetrySaga(ctx context.Context, in *sagaIDInput) (*sagaOutput, error) {
	if err := s.eng.OperatorRetry(ctx, in.ID); err != nil {
		return nil, s.problemFor(ctx, err, "path.id")
	}
	return s.currentSaga(ctx, in.ID)
}

func (s *server) handleDiscardSaga(ctx context.Context, in *sagaIDInput) (*sagaOutput, error) {
	if err := s.eng.Discard(ctx, in.ID); err != nil {
		return nil, s.problemFor(ctx, err, "path.id")
	}
	return s.currentSaga(ctx, in.ID)
}

func (s *server) currentSaga(ctx context.Context, id string) (*sagaOutput, error) {
	sg, err := s.eng.GetSaga(ctx, id)
	if err != nil {
		return nil, s.problemFor(ctx, err, "path.id")
	}
	return &sagaOutput{Status: http.StatusOK, ETag: sagaETag(sg.UpdatedAt), Body: sagaFrom(sg)}, nil
}

func (s *server) handleSagaEvents(ctx context.Context, in *sagaEventsInput) (*sagaEventsOutput, error) {
	from := int64(1)
	if in.Cursor != "" {
		v, err := decodeEventCursor(in.Cursor)
		if err != nil {
			return nil, validation("query.cursor", "%s", err.Error())
		}
		from = v + 1
	}
	if in.ID == "" || len(in.ID) > storage.MaxKeyLength-len("saga/") {
		return nil, s.problemFor(ctx, engine.ErrSagaNotFound, "path.id")
	}
	events, err := s.store.StreamRead(ctx, &storage.StreamReadParams{Stream: "saga/" + in.ID, FromVersion: from, Limit: in.Limit + 1})
	if err != nil {
		return nil, s.problemFor(ctx, err, "path.id")
	}
	if len(events) == 0 && from == 1 {
		// Every saga's log starts with its start event.
		return nil, s.problemFor(ctx, fmt.Errorf("%w: %s", engine.ErrSagaNotFound, in.ID), "path.id")
	}
	out := &sagaEventsOutput{Body: SagaEventList{Items: make([]SagaEvent, 0, min(len(events), in.Limit))}}
	for i, ev := range events {
		if i == in.Limit {
			out.Body.NextCursor = encodeEventCursor(events[i-1].Version)
			break
		}
		out.Body.Items = append(out.Body.Items, SagaEvent{
			Position: ev.Version, PartitionPosition: ev.Position, Type: ev.Type, Time: ev.RecordedAt, Data: rawJSON(ev.Data),
		})
	}
	return out, nil
}

func (s *server) handleWaitSaga(ctx context.Context, in *waitSagaInput) (*sagaOutput, error) {
	timeout, err := time.ParseDuration(in.Timeout)
	if err != nil || timeout <= 0 || timeout > maxWait {
		return nil, validation("query.timeout", "must be a duration in (0s, %s], like 30s; got %q", maxWait, in.Timeout)
	}
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	sg, err := s.eng.Wait(wctx, in.ID)
	if err != nil && wctx.Err() != nil && ctx.Err() == nil {
		// The wait timed out: answer with the saga as it is now.
		sg, err = s.eng.GetSaga(ctx, in.ID)
	}
	if err != nil {
		return nil, s.problemFor(ctx, err, "path.id")
	}
	return &sagaOutput{Status: http.StatusOK, ETag: sagaETag(sg.UpdatedAt), Body: sagaFrom(sg)}, nil
}

func sagaFrom(sg engine.Saga) *Saga {
	v := sg.View
	out := &Saga{
		ID: sg.ID, Definition: sg.Definition, DefinitionVersion: sg.DefinitionVersion, Status: sg.Status,
		Terminal: sg.Terminal, Partition: sg.Partition, Reason: v.Reason, FailedStep: v.FailedStep, Note: v.Note,
		TimedOut: v.TimedOut, Input: rawJSON(v.Input), CreatedAt: sg.CreatedAt, UpdatedAt: sg.UpdatedAt, Quarantine: sg.Quarantine,
		StartedAt: v.StartedAt, EndedAt: sg.EndedAt, Deadline: v.Deadline, Steps: make([]Step, len(v.Steps)),
	}
	for i, st := range v.Steps {
		step := Step{
			Name: st.Name, Kind: string(st.Kind), Status: string(st.Status), Attempts: st.Attempts,
			OutcomeUnknown: st.OutcomeUnknown, LastError: errorInfo(st.LastError), StartedAt: st.StartedAt,
			EndedAt: st.EndedAt, NextAttemptAt: st.NextAttemptAt, Output: rawJSON(st.Output),
		}
		if c := st.Compensation; c != nil {
			step.Compensation = &Compensation{
				Attempts: c.Attempts, LastError: errorInfo(c.LastError), StartedAt: c.StartedAt,
				EndedAt: c.EndedAt, NextAttemptAt: c.NextAttemptAt,
			}
		}
		out.Steps[i] = step
	}
	return out
}

func errorInfo(e *saga.ErrorInfo) *ErrorInfo {
	if e == nil {
		return nil
	}
	return &ErrorInfo{Code: e.Code, Message: e.Message}
}
