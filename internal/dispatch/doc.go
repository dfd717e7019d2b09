// Package dispatch delivers saga steps to HTTP participants (push
// dispatch).
//
// The engine hands every step attempt whose target is an HTTP URL to
// Push.Dispatch right after the commit that decided it, with a claim token
// the result must carry. Push calls the participant and reports the
// outcome through Config.Complete (the engine's CompleteTask). The attempt
// is not stored as a task row: the saga's durable state records it as in
// flight, and its attempt timeout retries it if no result comes back.
//
// # Ownership and concurrency
//
// Push owns a fixed pool of Config.Workers goroutines, started by Start and
// waited for by Stop; the goroutine count does not grow with the load.
// Dispatch never blocks: it puts the task into a bounded queue
// (Config.QueueSize). When the queue is full, or the dispatcher is
// stopping, the task is dropped and counted (Stats.Dropped): the attempt
// gets no result, its attempt timeout fires, and the saga retries it as a
// new attempt (or, when a node takes the partition over, it is dispatched
// again from the saga's state). Nothing is lost; it is only late.
//
// Stop stops intake, lets the calls in flight finish until its context
// ends, then cancels them; a cancelled call reports no result and is left to
// its attempt timeout. Tasks still queued are abandoned the same way. Stop is safe
// twice. The HTTP client's idle connections are closed by Stop. Quiesce is
// Stop's first half on its own: it stops intake at once and does not wait,
// so that a shutdown can start no new call before it waits for anything.
//
// All methods are safe for concurrent use. Config callbacks (Complete,
// Observe, OnBreakerChange, Propagate) are called from worker goroutines;
// OnBreakerChange is called under the breaker's lock and must not call
// back into Push.
//
// # The call
//
// One attempt is a POST to the task's URL, with a JSON body
//
//	{"task_id": "...", "saga_id": "...", "definition": "order", "definition_version": 3,
//	 "step": "reserve", "phase": "action", "attempt": 1, "operation": "",
//	 "idempotency_key": "...", "input": {...}, "deadline": "2025-01-02T03:04:05.678Z"}
//
// ("deadline" only when the step has an attempt timeout) and the headers
// Idempotency-Key (stable across every attempt of one step phase:
// participants deduplicate on it), Accord-Task-Id, Accord-Saga-Id,
// Accord-Step, Accord-Phase ("action" or "compensation"), Accord-Attempt,
// Accord-Epoch (the fencing epoch of the partition), Accord-Deadline (as
// the body's), traceparent (W3C: the saga's trace id and the attempt's span
// id as parent; see package tracing), Content-Type: application/json and
// User-Agent: accord/<version>.
//
// The attempt is bounded by the task's attempt timeout (Config default and
// cap), counted from Dispatch: a task that waited out its timeout in the
// queue is not called at all (Stats.Expired), since the engine has timed
// the attempt out already. Connections are pooled and kept alive.
// Redirects are never followed.
//
// # Response protocol
//
//   - 200, 201 or another 2xx with a JSON body: success; the body is the
//     step's output. An empty body or 204: success with a null output.
//   - 202 Accepted: the participant is still working. Accord calls again,
//     same attempt and idempotency key, after Retry-After (seconds or an
//     HTTP date; default Config.PollInterval, at least 100ms, at most
//     Config.MaxRetryAfter) while the attempt timeout allows; past it,
//     no result is reported and the engine's attempt timeout decides.
//   - 409 or 422: business failure. The outcome is "failure": no retry, the
//     saga compensates. An RFC 9457 problem body
//     ({"type","title","detail","code"}) gives the error code (its "code",
//     else http_409 or http_422) and message (title and detail).
//   - 408, 429 and 5xx: "retryable", code http_<status>; the saga retries
//     per its retry policy.
//   - Connection errors, TLS errors and timeouts: "retryable", codes
//     connection_error, tls_error, timeout.
//   - Other 4xx, and every 3xx: "failure", code http_<status>: the
//     participant refuses the request itself, and retrying cannot help.
//   - Unknown outcomes. A timeout, and a 2xx whose body is not JSON
//     (invalid_response), exceeds Config.MaxResponseBytes
//     (response_too_large) or is cut off: the participant may have acted,
//     and its answer does not say how it ended. The dispatcher does not
//     report such a result (Stats.Unknown counts them): the attempt's own
//     timeout records it as timed out, outcome unknown, so the step is
//     retried and, if the saga rolls back, compensated. A task without an
//     attempt timeout has nothing to record it, and gets the result as
//     "retryable".
//     Error bodies are read up to the same cap and only quoted.
//
// # Resilience
//
// Each endpoint (scheme://host:port) has a circuit breaker
// (github.com/sony/gobreaker/v2) and a bulkhead. Transport errors,
// timeouts, 5xx and 429 count as breaker failures; every other answer,
// business failures included, counts as a success. The breaker opens after
// Breaker.ConsecutiveFailures failures in a row, or when failures reach
// Breaker.FailureRatio of at least Breaker.MinRequests calls in the rolling
// Breaker.Window. Open, it rejects at once with "retryable", code
// circuit_open, so the saga backs off per its retry policy. After
// Breaker.OpenTimeout it lets Breaker.HalfOpenProbes calls through: that
// many successes close it, one failure opens it again.
//
// The bulkhead caps the calls in flight to an endpoint at
// Bulkhead.MaxConcurrent; a call that finds no slot within Bulkhead.MaxWait
// ends "retryable", code bulkhead_full.
//
// # Allowlist (SSRF guard)
//
// Push targets must match the operator's allowlist (Config.Allow, see
// Allowlist). AN EMPTY ALLOWLIST REFUSES EVERY PUSH, with "failure", code
// target_not_allowed; "*" allows every target. Addresses are checked at
// connect time, after name resolution, so DNS rebinding cannot move a call
// past the list; no proxy is used and redirects are not followed. A refused
// target ends "failure", code target_not_allowed: retrying cannot help.
// Allowlist.CheckURL (and Push.CheckURL) validate definitions' targets at
// registration time.
//
// # Errors
//
// New returns configuration errors; Start returns ErrAlreadyStarted or
// ErrStopped; Stop returns an error wrapping its context's when it had to
// cut calls off. Call failures are never returned: they become results.
// Results the engine refuses (claim lost, task gone) are counted in
// Stats.CompleteErrors and logged.
package dispatch
