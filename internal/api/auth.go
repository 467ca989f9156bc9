package api

import (
	"net/http"
	"strings"

	"github.com/labstack/echo/v5"

	"github.com/clerksync/clerksync/internal/session"
)

// sessionCookie is the cookie Clerk's frontend SDKs keep the session token in.
const sessionCookie = "__session"

// Context keys set by requireSession.
const (
	claimsKey      = "clerksync.claims"
	authFailureKey = "clerksync.auth_failure"
)

// sessionToken returns the session token the request carries and whether it carries one: the
// Authorization header's Bearer token wins over the __session cookie. An Authorization header
// with another scheme is not a session token.
func sessionToken(r *http.Request) (string, bool) {
	if scheme, token, _ := strings.Cut(r.Header.Get("Authorization"), " "); strings.EqualFold(scheme, "Bearer") {
		return strings.TrimSpace(token), true
	}
	if c, err := r.Cookie(sessionCookie); err == nil && c.Value != "" {
		return c.Value, true
	}
	return "", false
}

// requireSession lets a request through only with a valid session token, and puts its claims
// in the context. Nothing before it touches the database.
func (s *server) requireSession(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c *echo.Context) error {
		token, ok := sessionToken(c.Request())
		if !ok {
			s.metrics.authFailures.WithLabelValues(reasonMissingToken).Inc()
			c.Set(authFailureKey, reasonMissingToken)
			return errMissingToken
		}
		claims, err := s.verifier.Verify(c.Request().Context(), token)
		if err != nil {
			// The error names the reason, never the token.
			reason := string(session.ReasonOf(err))
			s.metrics.authFailures.WithLabelValues(reason).Inc()
			c.Set(authFailureKey, reason)
			s.requestLogger(c).Debug("session token refused", "err", err)
			return errInvalidToken
		}
		c.Set(claimsKey, claims)
		return next(c)
	}
}

// sessionClaims returns the claims requireSession verified.
func sessionClaims(c *echo.Context) *session.Claims {
	claims, _ := c.Get(claimsKey).(*session.Claims)
	return claims
}
