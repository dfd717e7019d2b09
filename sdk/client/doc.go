// Package client is the Go client of Accord's HTTP API: definitions,
// sagas, and the task calls pull workers make (package worker builds a
// worker on them).
//
//	c, err := client.New("http://127.0.0.1:7780")
//	res, err := c.StartSaga(ctx, client.StartRequest{Definition: "order", Input: order})
//	saga, err := c.WaitSaga(ctx, res.ID)
//
// Errors: an answer of the server other than 2xx is an *Error carrying the
// problem document (RFC 9457): its Type is stable (the Problem*
// constants) and its Errors name the offending fields. errors.Is matches it
// against ErrNotFound, ErrConflict, ErrClaimLost, ErrInvalid,
// ErrPreconditionFailed and ErrUnavailable; IsNotFound and its siblings
// are shorthands. A server that cannot be reached is IsUnavailable too.
//
// Retries: a call the server refused before doing anything (503 overloaded
// or not-owner) is retried, honoring Retry-After. Calls that are safe to
// repeat — reads, StartSaga (which always sends an idempotency key,
// generated when the request has none), RegisterDefinition without
// If-Match, Complete and Heartbeat — are also retried after connection
// errors and other 502/503/504 answers. Cancel, operator retry and Poll are
// not: a repeat could act twice, or claim tasks that then wait out their
// visibility.
//
// A Client is safe for concurrent use; its methods take a context that
// bounds the whole call, retries included.
package client
