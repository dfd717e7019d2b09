package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/danielgtaylor/huma/v2"

	"github.com/accord-saga/accord/internal/engine"
	"github.com/accord-saga/accord/internal/saga"
	"github.com/accord-saga/accord/internal/storage"
)

// Definition is a registered definition version with its canonical form.
type Definition struct {
	Name      string    `json:"name" doc:"Definition name."`
	Version   int       `json:"version" doc:"Definition version."`
	Hash      string    `json:"hash" doc:"SHA-256 of the canonical form; the ETag is this, quoted."`
	CreatedAt time.Time `json:"created_at" doc:"When this version was registered."`
	Enabled   bool      `json:"enabled" doc:"False once disabled: no saga starts on it, and it is never the latest."`
	// Definition is the canonical form: every default written out.
	Definition json.RawMessage `json:"definition" doc:"The canonical form: compact JSON with every default written out (see docs/sagas.md)."`
}

// DefinitionSummary is a definition version in a listing.
type DefinitionSummary struct {
	Name      string    `json:"name"`
	Version   int       `json:"version"`
	Hash      string    `json:"hash"`
	CreatedAt time.Time `json:"created_at"`
	Enabled   bool      `json:"enabled"`
}

// DefinitionList is a page of definitions.
type DefinitionList struct {
	Items      []DefinitionSummary `json:"items"`
	NextCursor string              `json:"next_cursor,omitempty" doc:"Pass as cursor for the next page; absent on the last page."`
}

type registerDefinitionInput struct {
	ContentType string `header:"Content-Type" doc:"application/json, application/yaml or text/yaml; required with a body."`
	IfMatch     string `header:"If-Match" doc:"ETag of the name's latest version, as last read: the registration fails with 412 if another version was registered since."`
	RawBody     []byte
}

type definitionOutput struct {
	Status   int
	ETag     string `header:"ETag"`
	Location string `header:"Location"`
	Body     *Definition
}

type getDefinitionInput struct {
	Name        string `path:"name" maxLength:"128" doc:"Definition name."`
	IfNoneMatch string `header:"If-None-Match" doc:"A 304 answers a request whose ETag matches."`
}

type getDefinitionVersionInput struct {
	Name        string `path:"name" maxLength:"128"`
	Version     int    `path:"version" minimum:"1" maximum:"2147483647"`
	IfNoneMatch string `header:"If-None-Match"`
}

type definitionVersionInput struct {
	Name    string `path:"name" maxLength:"128"`
	Version int    `path:"version" minimum:"1" maximum:"2147483647"`
}

type listDefinitionsInput struct {
	Name   string `query:"name" maxLength:"128" doc:"Only versions of this definition."`
	Cursor string `query:"cursor" doc:"next_cursor of the previous page."`
	Limit  int    `query:"limit" minimum:"1" maximum:"500" default:"50"`
}

type listDefinitionsOutput struct {
	Body DefinitionList
}

// yamlTypes are the media types a YAML definition may come as.
var yamlTypes = map[string]bool{
	"application/yaml": true, "application/x-yaml": true, "text/yaml": true, "text/x-yaml": true,
}

func (s *server) registerDefinitions() {
	yamlBody := &huma.MediaType{Schema: &huma.Schema{Type: "string", Description: "The definition in YAML."}}
	huma.Register(s.api, s.operation(huma.Operation{
		OperationID: "registerDefinition",
		Method:      http.MethodPost,
		Path:        "/v1/definitions",
		Summary:     "Register a definition version",
		Description: "Registers a saga definition (JSON or YAML, schema/definition.schema.json). 201 when new; " +
			"200 when the same name and version is registered with identical content; 409 when with different content.",
		Tags:             []string{"Definitions"},
		DefaultStatus:    http.StatusCreated,
		SkipValidateBody: true, // the core validates the document, JSON or YAML
		RequestBody: &huma.RequestBody{Required: true, Content: map[string]*huma.MediaType{
			"application/json": {Schema: &huma.Schema{Type: "object", Description: "The definition in JSON (see schema/definition.schema.json)."}},
			"application/yaml": yamlBody,
			"text/yaml":        yamlBody,
		}},
	}, http.StatusBadRequest, http.StatusConflict, http.StatusPreconditionFailed, http.StatusRequestEntityTooLarge,
		http.StatusUnsupportedMediaType, http.StatusUnprocessableEntity), s.handleRegisterDefinition)
	alsoRespond(s.api, "/v1/definitions", http.MethodPost, http.StatusCreated, http.StatusOK,
		"The identical definition version was registered already.")

	huma.Register(s.api, s.operation(huma.Operation{
		OperationID: "listDefinitions",
		Method:      http.MethodGet,
		Path:        "/v1/definitions",
		Summary:     "List definition versions",
		Description: "Lists definition versions ordered by name, then version.",
		Tags:        []string{"Definitions"},
	}, http.StatusUnprocessableEntity), s.handleListDefinitions)

	huma.Register(s.api, s.operation(huma.Operation{
		OperationID: "getDefinition",
		Method:      http.MethodGet,
		Path:        "/v1/definitions/{name}",
		Summary:     "Get a definition's latest enabled version",
		Tags:        []string{"Definitions"},
	}, http.StatusNotFound, http.StatusUnprocessableEntity), s.handleGetDefinition)

	huma.Register(s.api, s.operation(huma.Operation{
		OperationID: "getDefinitionVersion",
		Method:      http.MethodGet,
		Path:        "/v1/definitions/{name}/versions/{version}",
		Summary:     "Get a definition version",
		Tags:        []string{"Definitions"},
	}, http.StatusNotFound, http.StatusUnprocessableEntity), s.handleGetDefinitionVersion)

	huma.Register(s.api, s.operation(huma.Operation{
		OperationID: "disableDefinitionVersion",
		Method:      http.MethodPost,
		Path:        "/v1/definitions/{name}/versions/{version}/disable",
		Summary:     "Disable a definition version",
		Description: "No saga starts on the version any more (409 definition-disabled when named), and the latest is the newest " +
			"enabled version; sagas running on it go on. Disabling twice is harmless.",
		Tags: []string{"Definitions"},
	}, http.StatusNotFound, http.StatusUnprocessableEntity), s.handleDisableDefinitionVersion)

	huma.Register(s.api, s.operation(huma.Operation{
		OperationID: "enableDefinitionVersion",
		Method:      http.MethodPost,
		Path:        "/v1/definitions/{name}/versions/{version}/enable",
		Summary:     "Enable a definition version again",
		Tags:        []string{"Definitions"},
	}, http.StatusNotFound, http.StatusUnprocessableEntity), s.handleEnableDefinitionVersion)

	huma.Register(s.api, s.operation(huma.Operation{
		OperationID: "deleteDefinitionVersion",
		Method:      http.MethodDelete,
		Path:        "/v1/definitions/{name}/versions/{version}",
		Summary:     "Delete a definition version",
		Description: "Deletes a version that no unfinished saga (needs_operator included) runs on; 409 definition-in-use, " +
			"counting them, otherwise. Ended sagas of the version stay readable. The number stays bound to its content: " +
			"registering the same content again brings it back, other content under it is refused.",
		Tags: []string{"Definitions"},
	}, http.StatusNotFound, http.StatusConflict, http.StatusUnprocessableEntity), s.handleDeleteDefinitionVersion)
}

func (s *server) handleDisableDefinitionVersion(ctx context.Context, in *definitionVersionInput) (*definitionOutput, error) {
	return s.setDefinitionDisabled(ctx, in, true)
}

func (s *server) handleEnableDefinitionVersion(ctx context.Context, in *definitionVersionInput) (*definitionOutput, error) {
	return s.setDefinitionDisabled(ctx, in, false)
}

func (s *server) setDefinitionDisabled(ctx context.Context, in *definitionVersionInput, disabled bool) (*definitionOutput, error) {
	rec, err := s.eng.SetDefinitionDisabled(ctx, in.Name, in.Version, disabled)
	if err != nil {
		return nil, s.definitionProblem(ctx, err, in.Name, in.Version)
	}
	return &definitionOutput{Status: http.StatusOK, ETag: etag(rec.Hash), Body: definitionFrom(rec)}, nil
}

func (s *server) handleDeleteDefinitionVersion(ctx context.Context, in *definitionVersionInput) (*struct{}, error) {
	if err := s.eng.DeleteDefinition(ctx, in.Name, in.Version); err != nil {
		return nil, s.definitionProblem(ctx, err, in.Name, in.Version)
	}
	return nil, nil
}

// definitionProblem says which version is not registered, once.
func (s *server) definitionProblem(ctx context.Context, err error, name string, version int) *Problem {
	if errors.Is(err, engine.ErrDefinitionNotFound) {
		return s.problemFor(ctx, err, "path.version").withDetail("definition " + name + " version " + strconv.Itoa(version) + " is not registered")
	}
	return s.problemFor(ctx, err, "path.version")
}

func (s *server) handleRegisterDefinition(ctx context.Context, in *registerDefinitionInput) (*definitionOutput, error) {
	if p := checkDefinitionBody(in.ContentType, in.RawBody); p != nil {
		return nil, p
	}
	if in.IfMatch != "" {
		// The name is needed to find the latest version before anything is
		// stored; a document that does not parse fails here as it would in
		// the engine.
		d, err := saga.ParseDefinition(in.RawBody)
		if err != nil {
			return nil, s.problemFor(ctx, err, "body")
		}
		unlock := s.defLock.lock(d.Name)
		defer unlock()
		latest, err := s.store.DefinitionGet(ctx, d.Name, 0)
		if errors.Is(err, storage.ErrNotFound) {
			return nil, newProblem(http.StatusPreconditionFailed, TypePreconditionFailed,
				"If-Match was given, but definition "+d.Name+" has no version yet",
				ProblemDetail{Location: "header.If-Match", Message: "no current version"})
		}
		if err != nil {
			return nil, s.problemFor(ctx, err, "")
		}
		if !etagMatch(in.IfMatch, etag(latest.Hash), false) {
			return nil, withHeader(newProblem(http.StatusPreconditionFailed, TypePreconditionFailed,
				"definition "+d.Name+" has changed: its latest version is "+strconv.Itoa(latest.Version)+"; read it again",
				ProblemDetail{Location: "header.If-Match", Message: "does not match the latest version's ETag"}),
				"ETag", etag(latest.Hash))
		}
	}
	rec, created, err := s.eng.RegisterDefinition(ctx, in.RawBody)
	if err != nil {
		return nil, s.problemFor(ctx, err, "body")
	}
	out := &definitionOutput{
		Status:   http.StatusOK,
		ETag:     etag(rec.Hash),
		Location: definitionPath(rec.Name, rec.Version),
		Body:     definitionFrom(rec),
	}
	if created {
		out.Status = http.StatusCreated
	}
	return out, nil
}

// checkDefinitionBody checks what the core cannot: the media type, that a
// JSON body is JSON, and the size (a 413 rather than the core's 422).
func checkDefinitionBody(contentType string, body []byte) *Problem {
	if len(body) > saga.MaxDefinitionBytes {
		return tooLarge("body", len(body), saga.MaxDefinitionBytes)
	}
	if contentType == "" {
		return nil
	}
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return newProblem(http.StatusUnsupportedMediaType, TypeUnsupportedMediaType, "unreadable Content-Type: "+err.Error(),
			ProblemDetail{Location: "header.Content-Type", Message: err.Error()})
	}
	switch {
	case mt == "application/json":
		if trimmed := bytes.TrimLeft(body, " \t\r\n"); len(trimmed) > 0 && trimmed[0] != '{' {
			return newProblem(http.StatusBadRequest, TypeBadRequest, "the Content-Type is application/json but the body is not a JSON object",
				ProblemDetail{Location: "body", Message: "expected a JSON object"})
		}
	case yamlTypes[mt]:
	default:
		return newProblem(http.StatusUnsupportedMediaType, TypeUnsupportedMediaType,
			"a definition is sent as application/json, application/yaml or text/yaml, not "+mt,
			ProblemDetail{Location: "header.Content-Type", Message: "unsupported media type", Value: mt})
	}
	return nil
}

func (s *server) handleListDefinitions(ctx context.Context, in *listDefinitionsInput) (*listDefinitionsOutput, error) {
	params := &storage.DefinitionListParams{Name: in.Name, Limit: in.Limit + 1}
	if in.Cursor != "" {
		name, version, err := decodeDefinitionCursor(in.Cursor)
		if err != nil {
			return nil, validation("query.cursor", "%s", err.Error())
		}
		params.AfterName, params.AfterVersion = name, version
	}
	recs, err := s.store.DefinitionList(ctx, params)
	if err != nil {
		return nil, s.problemFor(ctx, err, "query")
	}
	out := &listDefinitionsOutput{Body: DefinitionList{Items: make([]DefinitionSummary, 0, min(len(recs), in.Limit))}}
	for i, rec := range recs {
		if i == in.Limit {
			last := recs[i-1]
			out.Body.NextCursor = encodeDefinitionCursor(last.Name, last.Version)
			break
		}
		out.Body.Items = append(out.Body.Items, DefinitionSummary{Name: rec.Name, Version: rec.Version, Hash: rec.Hash, CreatedAt: rec.CreatedAt, Enabled: !rec.Disabled})
	}
	return out, nil
}

func (s *server) handleGetDefinition(ctx context.Context, in *getDefinitionInput) (*definitionOutput, error) {
	return s.getDefinition(ctx, in.Name, 0, in.IfNoneMatch)
}

func (s *server) handleGetDefinitionVersion(ctx context.Context, in *getDefinitionVersionInput) (*definitionOutput, error) {
	return s.getDefinition(ctx, in.Name, in.Version, in.IfNoneMatch)
}

func (s *server) getDefinition(ctx context.Context, name string, version int, ifNoneMatch string) (*definitionOutput, error) {
	rec, err := s.store.DefinitionGet(ctx, name, version)
	if errors.Is(err, storage.ErrNotFound) {
		what := "definition " + name
		if version > 0 {
			what += " version " + strconv.Itoa(version)
		}
		return nil, s.problemFor(ctx, engine.ErrDefinitionNotFound, "path.name").withDetail(what + " is not registered")
	}
	if err != nil {
		return nil, s.problemFor(ctx, err, "")
	}
	tag := etag(rec.Hash)
	if ifNoneMatch != "" && etagMatch(ifNoneMatch, tag, true) {
		return &definitionOutput{Status: http.StatusNotModified, ETag: tag}, nil
	}
	return &definitionOutput{Status: http.StatusOK, ETag: tag, Body: definitionFrom(rec)}, nil
}

func definitionFrom(rec storage.Definition) *Definition {
	return &Definition{Name: rec.Name, Version: rec.Version, Hash: rec.Hash, CreatedAt: rec.CreatedAt, Enabled: !rec.Disabled, Definition: rawJSON(rec.Content)}
}

func definitionPath(name string, version int) string {
	return "/v1/definitions/" + url.PathEscape(name) + "/versions/" + strconv.Itoa(version)
}

// rawJSON returns b as a JSON value; bytes that are not JSON (which the
// store should never hold) become a JSON string rather than a broken
// response.
func rawJSON(b []byte) json.RawMessage {
	if len(b) == 0 {
		return nil
	}
	if json.Valid(b) {
		return b
	}
	q, _ := json.Marshal(string(b)) // a string always marshals
	return q
}

func (p *Problem) withDetail(detail string) *Problem {
	p.Detail = detail
	return p
}

// alsoRespond documents a second success status of an operation with the
// body schema of the first.
func alsoRespond(api huma.API, path, method string, from, status int, description string) {
	item := api.OpenAPI().Paths[path]
	if item == nil {
		return
	}
	var op *huma.Operation
	switch method {
	case http.MethodGet:
		op = item.Get
	case http.MethodPost:
		op = item.Post
	}
	if op == nil {
		return
	}
	src := op.Responses[strconv.Itoa(from)]
	if src == nil {
		return
	}
	op.Responses[strconv.Itoa(status)] = &huma.Response{Description: description, Content: src.Content, Headers: src.Headers}
}
