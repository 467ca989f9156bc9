package api

import (
	"crypto/rand"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/labstack/echo/v5"
)

const loggerKey = "clerksync.logger"

// observe gives every request an id (X-Request-Id: the caller's when it is sane, else a new
// one), turns a panic into a 500, answers errors through handleError, then counts and logs the
// request. The log line holds the path without its query (Clerk's handshake puts tokens there)
// and never a header or cookie.
func (s *server) observe(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c *echo.Context) error {
		start := time.Now()
		req := c.Request()
		id := req.Header.Get(echo.HeaderXRequestID)
		if !validRequestID(id) {
			id = rand.Text()
		}
		c.Response().Header().Set(echo.HeaderXRequestID, id)
		logger := s.logger.With("request_id", id)
		c.Set(loggerKey, logger)

		if err := callRecovering(next, c); err != nil {
			s.handleError(c, err)
		}

		route := c.Path()
		if !s.known[route] {
			route = "unmatched" // raw paths would make metric labels unbounded
		}
		status := http.StatusOK
		if r, _ := echo.UnwrapResponse(c.Response()); r != nil {
			status = r.Status
		}
		elapsed := time.Since(start)
		s.metrics.requests.WithLabelValues(route, methodLabel(req.Method), strconv.Itoa(status)).Inc()
		s.metrics.duration.WithLabelValues(route).Observe(elapsed.Seconds())

		level := slog.LevelInfo
		if isOpsRoute(route) {
			level = slog.LevelDebug
		}
		attrs := []any{
			"method", req.Method,
			"route", route,
			"path", truncate(req.URL.Path, 256),
			"status", status,
			"duration", elapsed,
			"remote", req.RemoteAddr,
		}
		if reason, ok := c.Get(authFailureKey).(string); ok {
			attrs = append(attrs, "auth_failure", reason)
		}
		if claims := sessionClaims(c); claims != nil {
			attrs = append(attrs, "clerk_user_id", claims.UserID())
		}
		logger.Log(req.Context(), level, "request", attrs...)
		return nil
	}
}

// callRecovering calls next, turning a panic into an error (http.ErrAbortHandler still aborts).
func callRecovering(next echo.HandlerFunc, c *echo.Context) (err error) {
	defer func() {
		if r := recover(); r != nil {
			if r == http.ErrAbortHandler { //nolint:errorlint // a recovered value: net/http panics with the sentinel itself and compares it so
				panic(r)
			}
			err = fmt.Errorf("panic: %v\n%s", r, debug.Stack())
		}
	}()
	return next(c)
}

// requestLogger is the logger carrying the request's id.
func (s *server) requestLogger(c *echo.Context) *slog.Logger {
	if l, ok := c.Get(loggerKey).(*slog.Logger); ok {
		return l
	}
	return s.logger
}

// validRequestID accepts a caller's request id only when it is short and plain, so it cannot
// forge log lines or bloat them.
func validRequestID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for _, r := range id {
		switch {
		case 'a' <= r && r <= 'z', 'A' <= r && r <= 'Z', '0' <= r && r <= '9', r == '-', r == '_', r == '.', r == ':':
		default:
			return false
		}
	}
	return true
}

// methodLabel keeps the method label bounded: a client may send any token as a method.
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions:
		return m
	}
	return "other"
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
