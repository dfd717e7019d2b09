// Package api is Accord's HTTP interface: handlers decode a request, call
// the engine or the store, and encode the answer. No business logic lives
// here.
//
// Routes: /healthz, /readyz and /metrics for operators; everything else
// under /v1/ (definitions, sagas, task queues), described by the OpenAPI
// 3.1 document at /v1/openapi.json, which huma generates from the Go types
// of this package. A test holds the document and the routes to each other.
// docs/api.md shows every route with an example.
//
// Errors are RFC 9457 problem details (type Problem) whose Type is stable
// (the Type* constants); Errors names each offending field, as
// body.steps[2].after[0], query.limit or header.If-Match. Client input
// never produces a 5xx or a panic: unreadable bodies are 400, invalid
// fields 422, oversized bodies 413. A 503 always carries Retry-After: the
// engine is at capacity (overloaded), the partition lives on another node
// (not-owner), or storage cannot serve now (unavailable).
//
// Limits: a body cap (Config.MaxBodyBytes), two in-flight caps — one for
// ordinary requests, one for long polls (task polls, saga waits and
// watches) — beyond which requests are refused at once with 503
// overloaded, and a timeout on every ordinary /v1 request. Large JSON
// responses are gzipped for clients that accept it.
//
// Concurrency: the handler New returns is safe for concurrent use; it
// keeps no per-request state beyond the request.
package api
