package api

import (
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/labstack/echo/v5"

	"github.com/clerksync/clerksync/internal/service"
)

// apiError is an error answer: status, the contract's code, a message for the caller and any
// headers the answer needs. cause is for the log only.
type apiError struct {
	status  int
	code    string
	message string
	header  map[string]string
	cause   error
}

func (e *apiError) Error() string {
	if e.cause != nil {
		return e.code + ": " + e.cause.Error()
	}
	return e.code
}

func (e *apiError) Unwrap() error { return e.cause }

// The api's error answers.
var (
	errMissingToken = &apiError{
		status: http.StatusUnauthorized, code: "missing_token",
		message: "a Clerk session token is required: send Authorization: Bearer <token> or the __session cookie",
		// RFC 6750 §3.1: a request without credentials gets a bare challenge.
		header: map[string]string{"WWW-Authenticate": "Bearer"},
	}
	errInvalidToken = &apiError{
		status: http.StatusUnauthorized, code: "invalid_token",
		message: "the session token is invalid or expired",
		header:  map[string]string{"WWW-Authenticate": `Bearer error="invalid_token"`},
	}
	errUserNotSynced = &apiError{
		status: http.StatusNotFound, code: "user_not_synced",
		message: "this Clerk user has not reached clerksync yet; retry shortly",
		header:  map[string]string{"Retry-After": "1"},
	}
	errUserDeleted = &apiError{
		status: http.StatusNotFound, code: "user_deleted",
		message: "this Clerk user has been deleted",
	}
	// errOrganizationNotFound answers alike for an unknown organization, a deleted one and one the
	// caller is not a live member of: existence is not disclosed.
	errOrganizationNotFound = &apiError{
		status: http.StatusNotFound, code: "organization_not_found",
		message: "no such organization, or you are not a member of it",
	}
	errInvalidLimit = &apiError{
		status: http.StatusBadRequest, code: "invalid_limit",
		message: "limit must be an integer from 1 to 500",
	}
	errInvalidCursor = &apiError{
		status: http.StatusBadRequest, code: "invalid_cursor",
		message: "cursor must be a next_cursor this api returned",
	}
	errDatabaseUnavailable = &apiError{
		status: http.StatusServiceUnavailable, code: "database_unavailable",
		message: "the database is unavailable; retry shortly",
		header:  map[string]string{"Retry-After": "5"},
	}
	errNotFound = &apiError{
		status: http.StatusNotFound, code: "not_found",
		message: "no such route",
	}
	errMethodNotAllowed = &apiError{
		status: http.StatusMethodNotAllowed, code: "method_not_allowed",
		message: "method not allowed on this route",
	}
	errInternal = &apiError{
		status: http.StatusInternalServerError, code: "internal",
		message: "internal error",
	}
)

// withCause returns a copy of e that logs cause.
func (e *apiError) withCause(cause error) *apiError {
	c := *e
	c.cause = cause
	return &c
}

// handleError is echo's HTTPErrorHandler: the one place an error becomes a status, a code and
// the contract's JSON body. A cause is logged, never sent.
func (s *server) handleError(c *echo.Context, err error) {
	if r, _ := echo.UnwrapResponse(c.Response()); r != nil && r.Committed {
		return
	}
	ae, ok := errors.AsType[*apiError](err)
	if !ok {
		ae = s.fromEcho(err, c)
	}
	h := c.Response().Header()
	for k, v := range ae.header {
		h.Set(k, v)
	}
	if ae.status >= 500 {
		s.requestLogger(c).Error("request failed", "code", ae.code, "err", err)
	}
	service.WriteError(c.Response(), ae.status, ae.code, ae.message)
}

// fromEcho maps echo's own errors (no route, wrong method) and anything unexpected.
func (s *server) fromEcho(err error, c *echo.Context) *apiError {
	// echo v5's own errors (ErrNotFound, ErrMethodNotAllowed) are not *echo.HTTPError: ask for the
	// status instead.
	code := echo.StatusCode(err)
	if code == 0 {
		return errInternal.withCause(err)
	}
	switch code {
	case http.StatusNotFound:
		return errNotFound
	case http.StatusMethodNotAllowed:
		return errMethodNotAllowed // echo has set Allow
	}
	if code >= 500 {
		return errInternal.withCause(err)
	}
	// Other 4xx from echo (none of our routes produce them today): the status text as the code.
	text := http.StatusText(code)
	if text == "" {
		text = "Error " + strconv.Itoa(code)
	}
	return &apiError{
		status:  code,
		code:    strings.ReplaceAll(strings.ToLower(text), " ", "_"),
		message: strings.ToLower(text),
	}
}
