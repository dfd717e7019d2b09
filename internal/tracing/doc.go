// Package tracing emits OpenTelemetry spans for sagas and gives every
// attempt the W3C trace context its participant receives.
//
// # Spans after the fact
//
// The engine never holds a span open across a commit or a crash. It tells
// the Tracer (as engine.Config.Tracer) each commit's events once they are
// durable, and the Tracer emits a span when the event that ends it is
// committed, with explicit start and end times taken from the events
// (database time):
//
//   - "saga <definition>", the root: from the saga's start to its end
//     (completed, compensated, cancelled, needs_operator), with the saga
//     id, definition, version, status, reason and failed step. Compensated
//     and needs_operator are errors.
//   - "<phase> <step>" (action or compensation), a child of the saga span,
//     per attempt: from its dispatch (the step.scheduled or
//     compensation.scheduled event) to the commit of its outcome (success,
//     failure, retryable, timed_out), with the step, phase, attempt, task
//     id, outcome and error code. Any outcome but success is an error.
//   - "saga <definition> resumed", a child of the saga span, when a saga
//     an operator retried ends again (its first end emitted the saga span).
//
// # Deterministic ids
//
// Spans of one saga are emitted at different times, possibly by different
// nodes (after a crash, another node finishes the saga), so their ids are
// derived, not random:
//
//	trace id           = sha256("accord-trace:" + sagaID)[:16]
//	saga span id       = sha256("accord-span:" + sagaID)[:8]
//	attempt span id    = sha256("accord-span:" + taskID)[:8]   (taskID = saga/step/phase/attempt)
//
// A custom sdktrace.IDGenerator takes them from the context the Tracer
// starts each span with. The traceparent handed to a participant (in a
// pull task, in a push call's header) names the attempt's span id as
// parent, so the participant's own spans nest under the attempt span
// Accord emits when the result is recorded. Sampling is decided on the
// trace id alone (TraceIDRatioBased, not parent based), so every span of a
// saga and its traceparents agree without sharing any state. Without a
// tracer, push calls still carry a traceparent with the same ids, not
// sampled, so participants' logs group by saga.
//
// # Limits
//
//   - A span is emitted only when its outcome is committed. An attempt in
//     flight at a crash appears once its outcome, retry or timeout is
//     recorded; with no attempt timeout and no answer, never.
//   - The spans of a saga still running at a crash are emitted by the node
//     that finishes it, in the same trace.
//   - An attempt's dispatch time comes from an event of an earlier commit,
//     which the Tracer remembers in a bounded map. After a restart, a
//     partition takeover or an eviction it is unknown: the first attempt
//     of a phase then starts at the phase's start recorded in the saga's
//     state (exact), a later attempt at its end (a zero-length span marked
//     accord.start_known=false).
//   - Nothing is exported synchronously: spans go through a batch span
//     processor, which drops them when its queue is full and loses those
//     queued at a crash. Tracing is diagnostics, not a record; the saga
//     log is the record.
package tracing
