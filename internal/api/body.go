package api

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// readBody reads a /v1 request's body into memory before the request takes
// an in-flight slot, so that a client sending its body slowly holds its own
// connection and nothing that others need. Config.BodyTimeout bounds the
// read (408 beyond), Config.MaxBodyBytes its size (413 beyond).
//
// It also sets the connection's deadlines for the rest of the request: no
// read deadline (the server's ReadTimeout bounds reading a request, not how
// long a long poll waits), and a write deadline that fits the route.
func (s *server) readBody(w http.ResponseWriter, r *http.Request, long bool) *Problem {
	rc := http.NewResponseController(w)
	// Errors here mean the writer cannot set deadlines (a test recorder);
	// the request timeout still bounds the handler.
	defer func() { _ = rc.SetReadDeadline(time.Time{}) }()
	if long {
		// Long polls and watches bound their own duration; a watch sets a
		// write deadline before each event.
		_ = rc.SetWriteDeadline(time.Time{})
	} else {
		_ = rc.SetWriteDeadline(time.Now().Add(s.cfg.BodyTimeout + s.cfg.RequestTimeout + writeGrace))
	}
	if r.ContentLength == 0 || r.Body == nil || r.Body == http.NoBody {
		return nil
	}
	_ = rc.SetReadDeadline(time.Now().Add(s.cfg.BodyTimeout))
	body, err := io.ReadAll(io.LimitReader(r.Body, s.cfg.MaxBodyBytes+1))
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		return newProblem(http.StatusRequestTimeout, TypeRequestTimeout,
			fmt.Sprintf("the request body did not arrive within %s", s.cfg.BodyTimeout))
	case err != nil:
		return newProblem(http.StatusBadRequest, TypeBadRequest, "the request body could not be read: it ended early")
	case int64(len(body)) > s.cfg.MaxBodyBytes:
		return bodyTooLarge(s.cfg.MaxBodyBytes)
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	return nil
}

// writeGrace is the time a response has to be written after its handler's
// timeout.
const writeGrace = 10 * time.Second

func bodyTooLarge(limit int64) *Problem {
	return newProblem(http.StatusRequestEntityTooLarge, TypePayloadTooLarge,
		fmt.Sprintf("the request body is over the limit of %d bytes", limit))
}
