package api

import (
	"context"
	"log/slog"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/labstack/echo/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/clerksync/clerksync/internal/postgres"
	"github.com/clerksync/clerksync/internal/postgres/dbsqlc"
	"github.com/clerksync/clerksync/internal/service"
	"github.com/clerksync/clerksync/internal/session"
)

// deps are what the handler is built from; Run builds them from the configuration, tests from
// their own database and issuer.
type deps struct {
	logger      *slog.Logger
	pool        *pgxpool.Pool
	verifier    *session.Verifier
	registry    *prometheus.Registry
	metrics     *metrics
	corsOrigins []string // checked by parseOrigins
	jit         *jit     // nil when just-in-time sync is off
}

// server holds the handlers' dependencies.
type server struct {
	deps
	queries *dbsqlc.Queries
	known   map[string]bool // registered route paths, for bounded metric labels
}

// newHandler builds the echo instance: middleware, error mapping and routes.
func newHandler(d deps) *echo.Echo {
	s := &server{deps: d, queries: dbsqlc.New(d.pool), known: make(map[string]bool)}
	// echo's own lines (few: a response written twice) go through our logger, so they follow
	// LOG_FORMAT. service.Serve runs the server, so echo has no banner to print.
	e := echo.NewWithConfig(echo.Config{Logger: d.logger, HTTPErrorHandler: s.handleError})
	e.Use(s.observe)
	if cors := corsMiddleware(d.corsOrigins); cors != nil {
		e.Use(cors)
	}
	s.routes(e)
	for _, r := range e.Router().Routes() {
		s.known[r.Path] = true
	}
	return e
}

func (s *server) probes() map[string]service.Probe {
	p := map[string]service.Probe{
		"postgres":     func(ctx context.Context) error { return postgres.Ping(ctx, s.pool) },
		"session_keys": func(context.Context) error { return s.verifier.Ready() },
	}
	if s.jit != nil {
		p["nats"] = s.jit.ready
	}
	return p
}
