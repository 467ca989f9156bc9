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
	"log/slog"
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

// Open connects a pool to url and checks that the server answers.
func Open(ctx context.Context, url string) (*pgxpool.Pool, error) {
	return OpenConns(ctx, url, 0)
}

// OpenConns is Open for a caller that holds up to conns connections at once: the pool allows at
// least that many (its default is max(4, CPUs); pool_max_conns in url wins when larger).
func OpenConns(ctx context.Context, url string, conns int) (*pgxpool.Pool, error) {
	pool, err := NewPool(ctx, url, conns)
	if err != nil {
		return nil, err
	}
	pingCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := pool.Ping(pingCtx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connecting to postgres at %s: %w", pool.Config().ConnConfig.Host, err)
	}
	return pool, nil
}

// NewPool is OpenConns without the check that the server answers: the pool connects when it is
// first used, so a service can start before Postgres does.
func NewPool(ctx context.Context, url string, conns int) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		// The URL may hold a password: never echo it.
		return nil, errors.New("parsing DATABASE_URL: invalid connection string")
	}
	cfg.ConnConfig.ConnectTimeout = 5 * time.Second
	cfg.MaxConns = max(cfg.MaxConns, int32(min(conns, math.MaxInt32))) //nolint:gosec // G115: min caps it to int32
	cfg.AfterConnect = func(_ context.Context, conn *pgx.Conn) error {
		registerUUID(conn)
		registerSlices(conn)
		return nil
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("opening pool: %w", err)
	}
	return pool, nil
}

// InTx runs fn in one transaction with the generated queries bound to it, committing when fn
// returns nil and rolling back otherwise.
func InTx(ctx context.Context, pool *pgxpool.Pool, fn func(q *dbsqlc.Queries) error) error {
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		return fn(dbsqlc.New(tx))
	})
}

// Ping reports whether Postgres answers within a short deadline.
func Ping(ctx context.Context, pool *pgxpool.Pool) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return pool.Ping(ctx)
}

// Fault is what a failed statement means for whoever would run it again. Classify is the one
// place that decides it; callers branch on the Fault, never on SQLSTATEs of their own.
type Fault int

const (
	// FaultNone means there was no error.
	FaultNone Fault = iota
	// FaultUnavailable means Postgres could not be reached or dropped the connection (refused, lost,
	// shutting down, too many connections, a read-only failover). It heals by itself: wait for
	// the server and run the statement again, spending no attempt.
	FaultUnavailable
	// FaultConflict means a deadlock or serialization failure with another transaction. Run it again
	// at once.
	FaultConflict
	// FaultPermanent means the statement can never succeed with these inputs (a data exception, an
	// integrity violation, a syntax or undefined-object error, a program limit): retrying only
	// delays it. Whatever carried the inputs is poison.
	FaultPermanent
	// FaultOther means anything else with the server reachable (a trigger's exception, a statement
	// timeout, an internal error): it may heal, so retry with back-off, a bounded number of times.
	FaultOther
)

// Classify says what err means for running the statement again.
func Classify(err error) Fault {
	if err == nil {
		return FaultNone
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch class := pgErr.Code[:2]; {
		case pgErr.Code == "40001", pgErr.Code == "40P01": // serialization failure, deadlock
			return FaultConflict
		case pgErr.Code == "57014": // query_canceled: our own deadline, not the server's doing
			return FaultOther
		case class == "08", // connection exception
			class == "53",         // insufficient resources (too many connections, disk full)
			class == "57",         // operator intervention (admin shutdown, crash shutdown, cannot connect now)
			pgErr.Code == "25006": // read-only transaction: a failover in progress
			return FaultUnavailable
		case pgErr.Code == "23505": // unique_violation: two writers racing; the ON CONFLICT clauses settle it on a rerun
			return FaultOther
		case class == "22", // data exception: a NUL in jsonb, a bad encoding, a value out of range
			class == "23", // integrity constraint violation
			class == "42", // syntax error or access rule violation, undefined column or table
			class == "54": // program limit exceeded: an index row too large
			return FaultPermanent
		}
		return FaultOther
	}
	// The server closed the connection under a statement (pgx reports the cut as an unexpected
	// EOF): it was lost, whether or not the statement ran.
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return FaultUnavailable
	}
	var netErr net.Error
	var connectErr *pgconn.ConnectError
	if errors.As(err, &netErr) || errors.As(err, &connectErr) {
		return FaultUnavailable
	}
	if pgconn.SafeToRetry(err) || pgconn.Timeout(err) && !errors.Is(err, context.Canceled) {
		return FaultUnavailable
	}
	return FaultOther
}

// IsUnavailable reports whether err means Postgres could not be reached (FaultUnavailable).
func IsUnavailable(err error) bool { return Classify(err) == FaultUnavailable }

// CreateDatabaseIfMissing creates the database url names when the server says it does not exist
// (SQLSTATE 3D000), by connecting to the same server's postgres database, and logs one line when
// it did. When the role may not create databases it returns one line saying what to run.
func CreateDatabaseIfMissing(ctx context.Context, url string, logger *slog.Logger) error {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return errors.New("parsing DATABASE_URL: invalid connection string")
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err == nil {
		return conn.Close(ctx)
	}
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "3D000" {
		return nil // not a missing database: Open reports it
	}
	name := cfg.Database
	admin := cfg.Copy()
	admin.Database = "postgres"
	conn, err = pgx.ConnectConfig(ctx, admin)
	if err != nil {
		return fmt.Errorf("database %q does not exist, and connecting to the server's postgres database to create it failed: %w; create it with: createdb %s", name, err, name)
	}
	defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }()
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		if errors.As(err, &pgErr) && pgErr.Code == "42P04" { // created meanwhile by another worker
			return nil
		}
		return fmt.Errorf("database %q does not exist and this role may not create it (%w): create it with: createdb %s", name, err, name)
	}
	logger.Info("created the database DATABASE_URL names", "database", name)
	return nil
}
