package api

import (
	"context"
	"encoding/json"
	"net/http"

	"github.com/danielgtaylor/huma/v2"
)

type breakersOutput struct {
	Body json.RawMessage
}

func (s *server) registerSystem() {
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

func (s *server) handleBreakers(ctx context.Context, _ *struct{}) (*breakersOutput, error) {
	b, err := json.Marshal(s.cfg.Breakers())
	if err != nil {
		return nil, s.problemFor(ctx, err, "")
	}
	return &breakersOutput{Body: b}, nil
}
