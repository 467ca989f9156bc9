package api

import (
	"net/http"
	"slices"

	"github.com/labstack/echo/v5"
	"github.com/labstack/echo/v5/middleware"
)

// corsMiddleware lets the listed origins call the api from a browser, with credentials (the
// __session cookie) and the Authorization header, as Clerk frontends do. "*" lets any origin in,
// without credentials. No origins, no middleware.
func corsMiddleware(origins []string) echo.MiddlewareFunc {
	if len(origins) == 0 {
		return nil
	}
	cfg := middleware.CORSConfig{
		AllowMethods: []string{http.MethodGet, http.MethodHead},
		AllowHeaders: []string{echo.HeaderAuthorization, echo.HeaderContentType, echo.HeaderXRequestID},
		// Retry-After and WWW-Authenticate are not safelisted: expose them so the frontend can act on
		// user_not_synced and 401s.
		ExposeHeaders: []string{echo.HeaderXRequestID, echo.HeaderRetryAfter, echo.HeaderWWWAuthenticate},
		MaxAge:        600,
	}
	if slices.Contains(origins, "*") {
		cfg.AllowOrigins = []string{"*"}
		return middleware.CORSWithConfig(cfg)
	}
	// Exact matches only: echo's own matching also treats entries as wildcard patterns.
	cfg.AllowCredentials = true
	cfg.UnsafeAllowOriginFunc = func(_ *echo.Context, origin string) (string, bool, error) {
		if slices.Contains(origins, origin) {
			return origin, true, nil
		}
		return "", false, nil
	}
	return middleware.CORSWithConfig(cfg)
}
