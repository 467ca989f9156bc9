// Package api serves the frontend's reads — GET /auth/me — to callers authenticated by a Clerk
// session token. routes.go lists every route.
//
// It only reads: it must never write a projection (the worker owns them), and nothing reaches
// the database before the caller's token has been verified. Its one write is just-in-time sync's
// user.snapshot to the stream (jit.go), through package event, never a table. Tokens, cookies and
// CLERK_SECRET_KEY never reach a log line or a response.
package api

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/clerksync/clerksync/internal/clerkapi"
	"github.com/clerksync/clerksync/internal/postgres"
	"github.com/clerksync/clerksync/internal/postgres/dbsqlc"
	"github.com/clerksync/clerksync/internal/service"
	"github.com/clerksync/clerksync/internal/session"
)

// Config is the api's configuration, from the environment.
type Config struct {
	Addr        string `env:"API_ADDR" envDefault:":8081"`
	DatabaseURL string `env:"DATABASE_URL" envDefault:"postgres://postgres@127.0.0.1:5432/clerksync?sslmode=disable"`
	// The signing keys come from the first of JWTKey (a PEM public key), JWKSURL,
	// PublishableKey (its host's JWKS and issuer) and ClerkSecretKey alone (the Backend API's
	// /v1/jwks) that is set: see keySource.
	JWKSURL           string        `env:"CLERK_JWKS_URL"`
	JWTKey            string        `env:"CLERK_JWT_KEY"`
	PublishableKey    string        `env:"CLERK_PUBLISHABLE_KEY"`
	JWKSCacheTTL      time.Duration `env:"JWKS_CACHE_TTL" envDefault:"1h"`
	JWTLeeway         time.Duration `env:"JWT_LEEWAY" envDefault:"5s"`
	Issuer            string        `env:"CLERK_ISSUER"`
	AuthorizedParties []string      `env:"CLERK_AUTHORIZED_PARTIES" envSeparator:","`
	// CORSAllowedOrigins are the frontend origins allowed to call the api from a browser, or "*"
	// for any origin (then without cookies).
	CORSAllowedOrigins []string `env:"CORS_ALLOWED_ORIGINS" envSeparator:","`

	// Just-in-time sync (jit.go) is on when ClerkSecretKey is set; then the api publishes
	// snapshots to NATS_URL and /readyz includes NATS. Without it the api needs no NATS.
	ClerkSecretKey clerkapi.SecretKey `env:"CLERK_SECRET_KEY"`
	ClerkAPIURL    string             `env:"CLERK_API_URL" envDefault:"https://api.clerk.com"`
	// ClerkAPIRate is the most just-in-time Backend API reads in any second (0: 10).
	ClerkAPIRate float64 `env:"CLERK_API_RATE" envDefault:"10"`
	// JITWait bounds a just-in-time sync: the read, the publish and the wait for the worker.
	JITWait time.Duration `env:"JIT_WAIT" envDefault:"3s"`
	NATSURL string        `env:"NATS_URL" envDefault:"nats://127.0.0.1:4222"`
}

// check validates what the env tags cannot.
func (c Config) check() error {
	if _, err := c.keySource(); err != nil {
		return err
	}
	if c.JWKSCacheTTL < 30*time.Second {
		return fmt.Errorf("config: JWKS_CACHE_TTL %s: want at least 30s", c.JWKSCacheTTL)
	}
	if c.JWTLeeway < 0 || c.JWTLeeway > 5*time.Minute {
		return fmt.Errorf("config: JWT_LEEWAY %s: want between 0s and 5m", c.JWTLeeway)
	}
	if _, err := parseOrigins(c.CORSAllowedOrigins); err != nil {
		return err
	}
	if c.ClerkSecretKey != "" {
		switch {
		case c.ClerkAPIRate < 0:
			return fmt.Errorf("config: CLERK_API_RATE %v: want a positive number of requests per second", c.ClerkAPIRate)
		case c.JITWait <= 0 || c.JITWait > service.ShutdownTimeout:
			// A request waiting out JIT_WAIT must still finish within the shutdown's grace.
			return fmt.Errorf("config: JIT_WAIT %s: want a positive duration up to %s", c.JITWait, service.ShutdownTimeout)
		case strings.TrimSpace(c.NATSURL) == "":
			return errors.New("config: NATS_URL is required with CLERK_SECRET_KEY (just-in-time sync publishes snapshots)")
		}
	}
	return nil
}

// sessionOptions are the token checks the configuration asks for, with the keys from src.
func (c Config) sessionOptions(src keySource, logger *slog.Logger, m *metrics) session.Options {
	return session.Options{
		JWKSURL:           src.jwksURL,
		PublicKey:         src.pem,
		HTTPClient:        src.httpClient(),
		CacheTTL:          c.JWKSCacheTTL,
		Leeway:            c.JWTLeeway,
		Issuer:            cmp.Or(strings.TrimSpace(c.Issuer), src.issuer),
		AuthorizedParties: c.AuthorizedParties,
		Logger:            logger.With("component", "jwks"),
		OnRefresh:         m.observeJWKSFetch,
	}
}

// Run serves the api on ln (or on cfg.Addr when ln is nil) until ctx ends, then shuts down
// gracefully.
func Run(ctx context.Context, cfg Config, logger *slog.Logger, ln net.Listener) error {
	if err := cfg.check(); err != nil {
		return err
	}
	origins, _ := parseOrigins(cfg.CORSAllowedOrigins) // checked above
	src, _ := cfg.keySource()                          // checked above

	reg := service.NewRegistry()
	m := newMetrics(reg)
	opts := cfg.sessionOptions(src, logger, m)
	logger.Info("verifying session tokens", "keys_from", src.name, "jwks_url", src.jwksURL, "issuer", opts.Issuer)
	verifier, err := session.New(opts)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	defer verifier.Close()

	// The api starts whether or not Postgres answers yet: until it does, /readyz fails and
	// /auth/me answers 503 database_unavailable, and the pool connects as soon as it can.
	pool, err := postgres.NewPool(ctx, cfg.DatabaseURL, 0)
	if err != nil {
		return err
	}
	defer pool.Close()
	if err := postgres.Ping(ctx, pool); err != nil {
		logger.Warn("Postgres is not reachable yet: /readyz fails and /auth/me answers 503 until it is", "err", err)
	}

	var j *jit
	if cfg.ClerkSecretKey != "" {
		nc, err := connectNATS(cfg.NATSURL, logger)
		if err != nil {
			return err
		}
		defer nc.Close()
		j, err = newJIT(jitDeps{
			logger: logger, queries: dbsqlc.New(pool), nc: nc, registry: reg,
			apiURL: cfg.ClerkAPIURL, key: cfg.ClerkSecretKey, rate: cfg.ClerkAPIRate, wait: cfg.JITWait,
		})
		if err != nil {
			return err
		}
		defer j.close() // after Serve: requests in flight have finished
		logger.Info("just-in-time sync on", "clerk_api_url", cfg.ClerkAPIURL, "jit_wait", cfg.JITWait,
			"clerk_api_rate", j.limit.rate())
	}

	ln, err = service.Listen(ln, cfg.Addr)
	if err != nil {
		return err
	}
	h := newHandler(deps{
		logger:      logger,
		pool:        pool,
		verifier:    verifier,
		registry:    reg,
		metrics:     m,
		corsOrigins: origins,
		jit:         j,
	})
	return service.Serve(ctx, service.NewServer(h, logger), ln, logger)
}

// parseOrigins checks CORS_ALLOWED_ORIGINS: "*", or origins as browsers send them
// (scheme://host[:port], no path). A trailing slash is forgiven.
func parseOrigins(list []string) ([]string, error) {
	var origins []string
	for _, o := range list {
		o = strings.TrimSuffix(strings.TrimSpace(o), "/")
		if o == "" {
			continue
		}
		if o == "*" {
			return []string{"*"}, nil
		}
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
			u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
			return nil, fmt.Errorf("config: CORS_ALLOWED_ORIGINS: %q is not an origin (scheme://host[:port])", o)
		}
		origins = append(origins, o)
	}
	return origins, nil
}
