// Package postgres owns clerksync's connection to Postgres: the pool, transactions, migrations
// and the translation of driver errors into the sentinels callers branch on. Queries themselves
// live in queries/ and are generated into dbsqlc; this package must not grow hand-written SQL
// beyond what running migrations and probing health need.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/clerksync/clerksync/internal/postgres/dbsqlc"
)

// DefaultURL is DATABASE_URL's default.
const DefaultURL = "postgres://postgres@127.0.0.1:5432/clerksync?sslmode=disable"

// ErrUnavailable means Postgres could not be reached or dropped the connection: the operation may
// succeed later and must be retried, never given up on.
var ErrUnavailable = errors.New("postgres unavailable")

// Open connects a pool to url and checks that the server answers.
func Open(ctx context.Context, url string) (*pgxpool.Pool, error) {
	return OpenConns(ctx, url, 0)
}

// OpenConns is Open for a caller that holds up to conns connections at once: the pool allows at
// least that many (its default is max(4, CPUs); pool_max_conns in url wins when larger).
func OpenConns(ctx context.Context, url string, conns int) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		// The URL may hold a password: never echo it.
		return nil, errors.New("parsing DATABASE_URL: invalid connection string")
	}
	cfg.ConnConfig.ConnectTimeout = 5 * time.Second
	cfg.MaxConns = max(cfg.MaxConns, int32(min(conns, math.MaxInt32)))
	cfg.AfterConnect = func(_ context.Context, conn *pgx.Conn) error {
		registerUUID(conn)
		return nil
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("opening pool: %w", err)
	}
	pingCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := pool.Ping(pingCtx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connecting to postgres at %s: %w", cfg.ConnConfig.Host, InterpretError(err))
	}
	return pool, nil
}

// InTx runs fn in one transaction with the generated queries bound to it, committing when fn
// returns nil and rolling back otherwise.
func InTx(ctx context.Context, pool *pgxpool.Pool, fn func(q *dbsqlc.Queries) error) error {
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		return fn(dbsqlc.New(tx))
	})
	return InterpretError(err)
}

// Ping reports whether Postgres answers within a short deadline.
func Ping(ctx context.Context, pool *pgxpool.Pool) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return InterpretError(pool.Ping(ctx))
}

// InterpretError wraps err with ErrUnavailable when it means the server was out of reach
// (connection refused or lost, shutdown, too many connections, a read-only failover) so
// callers can tell a transient outage from a failure of the statement itself.
func InterpretError(err error) error {
	if err == nil || errors.Is(err, ErrUnavailable) {
		return err
	}
	if IsUnavailable(err) {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return err
}

// IsUnavailable reports whether err means Postgres could not be reached.
func IsUnavailable(err error) bool {
	if errors.Is(err, ErrUnavailable) {
		return true
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code[:2] {
		case "08", // connection exception
			"53", // insufficient resources (too many connections, disk full)
			"57": // operator intervention (admin shutdown, crash shutdown, cannot connect now)
			return pgErr.Code != "57014" // query_canceled is ours, not the server's
		case "25":
			return pgErr.Code == "25006" // read-only transaction: a failover in progress
		}
		return false
	}
	// The server closed the connection under a statement (pgx reports the cut as an unexpected
	// EOF): it was lost, whether or not the statement ran.
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return true
	}
	var netErr net.Error
	if errors.As(err, &netErr) {
		return true
	}
	var connectErr *pgconn.ConnectError
	if errors.As(err, &connectErr) {
		return true
	}
	return pgconn.SafeToRetry(err) || pgconn.Timeout(err) && !errors.Is(err, context.Canceled)
}
