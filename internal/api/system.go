package api

import (
	"context"
	"encoding/json"
	"net/http"

	"github.com/danielgtaylor/huma/v2"

	"github.com/accord-saga/accord/internal/buildinfo"
)

type breakersOutput struct {
	Body json.RawMessage
}

// storeInfo is the store part of GET /v1/system.
type storeInfo struct {
	Backend       string `json:"backend" enum:"sqlite,postgres" doc:"Storage backend."`
	Partitions    int    `json:"partitions" doc:"Partition count, fixed when the store was created."`
	SchemaVersion int    `json:"schema_version" doc:"Schema version of the open store."`
}

type systemOutput struct {
	Body struct {
		Build buildinfo.Info `json:"build" doc:"The running binary."`
		Store storeInfo      `json:"store" doc:"The store this node runs on."`
	}
}

func (s *server) registerSystem() {
	huma.Register(s.api, s.operation(huma.Operation{
		OperationID: "getSystem",
		Method:      http.MethodGet,
		Path:        "/v1/system",
		Summary:     "Build and store of this node",
		Description: "Which build runs (version, commit, build date, Go version) and the backend, partition count and schema version of its store.",
		Tags:        []string{"System"},
	}), s.handleSystem)
	if s.cfg.Breakers == nil {
		return
	}
	huma.Register(s.api, s.operation(huma.Operation{
		OperationID: "listBreakers",
		Method:      http.MethodGet,
		Path:        "/v1/breakers",
		Summary:     "Push circuit breakers",
		Description: "The state of the circuit breaker of every HTTP participant this node has called.",
		Tags:        []string{"System"},
	}), s.handleBreakers)
}

func (s *server) handleSystem(context.Context, *struct{}) (*systemOutput, error) {
	out := &systemOutput{}
	out.Body.Build = buildinfo.Read()
	info := s.store.Info()
	out.Body.Store = storeInfo{Backend: info.Backend, Partitions: info.Partitions, SchemaVersion: info.SchemaVersion}
	return out, nil
}

func (s *server) handleBreakers(ctx context.Context, _ *struct{}) (*breakersOutput, error) {
	b, err := json.Marshal(s.cfg.Breakers())
	if err != nil {
		return nil, s.problemFor(ctx, err, "")
	}
	return &breakersOutput{Body: b}, nil
}
