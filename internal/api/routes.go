package api

import (
	"net/http"

	"github.com/labstack/echo/v5"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/clerksync/clerksync/internal/service"
)

// routes registers every route the api serves. Anything else is 404 not_found, a known path
// with another method 405 method_not_allowed.
func (s *server) routes(e *echo.Echo) {
	// The caller's user, subscription, usage and organizations. requireSession runs first: no
	// token, no query.
	e.GET("/auth/me", s.me, s.requireSession)
	// An organization the caller is a live member of, with a page of its live members.
	e.GET("/organizations/:clerk_org_id", s.organization, s.requireSession)

	// Operations: liveness, readiness (Postgres and the session keys), Prometheus metrics.
	e.GET("/healthz", echo.WrapHandler(http.HandlerFunc(service.HealthzHandler)))
	e.GET("/readyz", echo.WrapHandler(service.ReadyzHandler(s.logger, s.probes())))
	e.GET("/metrics", echo.WrapHandler(promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{Registry: s.registry})))
}

// isOpsRoute reports the routes logged at debug level: probes and scrapes would drown the rest.
func isOpsRoute(route string) bool {
	switch route {
	case "/healthz", "/readyz", "/metrics":
		return true
	}
	return false
}
