package ingest

import (
	"errors"
	"net/http"

	"github.com/clerksync/clerksync/internal/clerk"
)

// Why a webhook was refused. Every error the handler meets wraps one of these (or one of clerk's
// sentinels); problemFor is the one place that turns them into a status and a JSON code.
var (
	errNotFound          = errors.New("no such route")
	errMethodNotAllowed  = errors.New("method not allowed")
	errPayloadTooLarge   = errors.New("body over the limit")
	errUnreadableBody    = errors.New("reading the request body")
	errMissingHeaders    = errors.New("missing signature headers")
	errInvalidHeaders    = errors.New("invalid signature headers")
	errInvalidSignature  = errors.New("invalid signature")
	errStreamUnavailable = errors.New("stream unavailable")
)

// retryAfter is the Retry-After of a 503, in seconds. Svix retries on its own schedule anyway;
// other senders get a hint that the outage is expected to be short.
const retryAfter = "5"

// problem is what a refused request is answered.
type problem struct {
	status  int
	code    string
	message string
}

// problemFor maps an error to the contract's status and code. Messages are fixed strings: the
// error itself, which may carry internal detail, only goes to the log.
func problemFor(err error) problem {
	switch {
	case errors.Is(err, errNotFound):
		return problem{http.StatusNotFound, "not_found", "no such route"}
	case errors.Is(err, errMethodNotAllowed):
		return problem{http.StatusMethodNotAllowed, "method_not_allowed", "method not allowed"}
	case errors.Is(err, errPayloadTooLarge):
		return problem{http.StatusRequestEntityTooLarge, "payload_too_large", "request body is over the limit"}
	case errors.Is(err, errUnreadableBody):
		return problem{http.StatusBadRequest, "malformed_payload", "request body could not be read"}
	case errors.Is(err, errMissingHeaders):
		return problem{http.StatusBadRequest, "missing_headers", "svix-id, svix-timestamp and svix-signature (or webhook-*) are required"}
	case errors.Is(err, errInvalidHeaders):
		return problem{http.StatusBadRequest, "invalid_headers", "svix-timestamp must be an integer and svix-id 1 to 255 printable ASCII characters"}
	case errors.Is(err, errInvalidSignature):
		return problem{http.StatusUnauthorized, "invalid_signature", "no valid signature, or timestamp outside the tolerance"}
	case errors.Is(err, clerk.ErrInvalidType):
		return problem{http.StatusBadRequest, "invalid_event_type", "type must match ^[A-Za-z][A-Za-z0-9_]*(\\.[A-Za-z][A-Za-z0-9_]*)+$ (at most 255 bytes)"}
	case errors.Is(err, clerk.ErrMalformed):
		return problem{http.StatusBadRequest, "malformed_payload", "body must be a JSON object with a string type, an object data, and a string data.id for user.* events"}
	case errors.Is(err, errStreamUnavailable):
		return problem{http.StatusServiceUnavailable, "stream_unavailable", "the event stream is unavailable; retry later"}
	default:
		return problem{http.StatusInternalServerError, "internal", "internal error"}
	}
}
