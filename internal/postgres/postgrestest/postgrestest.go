// Package postgrestest gives each test its own freshly migrated database on a real Postgres.
//
// The server is TEST_DATABASE_URL when set, else the local server at 127.0.0.1:5432. The
// migrations are applied once to a template database (named after a hash of the migrations, so a
// schema change makes a new one), and every test clones it with CREATE DATABASE … TEMPLATE,
// which takes milliseconds. When no server can be reached the test fails with one line saying how
// to provide one: it never skips. Only tests may import this package.
package postgrestest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/clerksync/clerksync/internal/postgres"
	"github.com/clerksync/clerksync/schema"
)

const localURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

var (
	setupOnce sync.Once
	serverURL string // admin URL of the server, database "postgres"
	template  string
	setupErr  error
	counter   atomic.Int64
)

// ServerURL returns the admin URL (database "postgres") of the server the tests use, failing the
// test when there is none.
func ServerURL(t testing.TB) string {
	t.Helper()
	setupOnce.Do(func() { serverURL, template, setupErr = setup() })
	if setupErr != nil {
		t.Fatal(setupErr)
	}
	return serverURL
}

// NewDatabase creates a fresh migrated database, dropped when the test ends, and returns its URL.
func NewDatabase(t testing.TB) string {
	t.Helper()
	admin := ServerURL(t)
	name := fmt.Sprintf("clerksync_test_%d_%d_%d", os.Getpid(), time.Now().UnixNano()%1e9, counter.Add(1))
	ctx := context.Background()
	if err := withConn(ctx, admin, func(conn *pgx.Conn) error {
		return retryBusy(ctx, func() error {
			_, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()+" TEMPLATE "+pgx.Identifier{template}.Sanitize())
			return err
		})
	}); err != nil {
		t.Fatalf("postgrestest: creating database: %v", err)
	}
	t.Cleanup(func() {
		_ = withConn(context.Background(), admin, func(conn *pgx.Conn) error {
			_, err := conn.Exec(context.Background(), "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
			return err
		})
	})
	return withDatabase(admin, name)
}

// NewPool returns a pool on a fresh migrated database, closed and dropped when the test ends.
func NewPool(t testing.TB) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), NewDatabase(t))
	if err != nil {
		t.Fatalf("postgrestest: opening pool: %v", err)
	}
	t.Cleanup(pool.Close)
	return pool
}

func setup() (string, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	admin := os.Getenv("TEST_DATABASE_URL")
	if admin == "" {
		admin = localURL
	}
	if err := withConn(ctx, admin, func(conn *pgx.Conn) error { return conn.Ping(ctx) }); err != nil {
		return "", "", fmt.Errorf("postgrestest: no Postgres for the tests (%v): set TEST_DATABASE_URL to a server the tests may create databases on, or start one on 127.0.0.1:5432 (trust auth, user postgres)", err)
	}
	name, err := templateName()
	if err != nil {
		return "", "", err
	}
	if err := ensureTemplate(ctx, admin, name); err != nil {
		return "", "", fmt.Errorf("postgrestest: preparing template database: %w", err)
	}
	return admin, name, nil
}

// templateName names the template after the migrations it holds.
func templateName() (string, error) {
	h := sha256.New()
	err := fs.WalkDir(schema.FS, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(schema.FS, path)
		h.Write([]byte(path))
		h.Write(b)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("postgrestest: hashing migrations: %w", err)
	}
	return "clerksync_template_" + hex.EncodeToString(h.Sum(nil))[:12], nil
}

// ensureTemplate creates and migrates the template once per server; an advisory lock keeps
// concurrent test binaries from racing.
func ensureTemplate(ctx context.Context, admin, name string) error {
	return withConn(ctx, admin, func(conn *pgx.Conn) error {
		if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock(hashtext('clerksync-postgrestest'))"); err != nil {
			return err
		}
		defer conn.Exec(context.Background(), "SELECT pg_advisory_unlock(hashtext('clerksync-postgrestest'))") //nolint:errcheck
		var ready bool
		err := conn.QueryRow(ctx, "SELECT datistemplate FROM pg_database WHERE datname = $1", name).Scan(&ready)
		if err == nil && ready {
			return nil
		}
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			return err
		}
		if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
			return err
		}
		pool, err := pgxpool.New(ctx, withDatabase(admin, name))
		if err != nil {
			return err
		}
		err = postgres.Migrate(ctx, pool, slog.New(slog.DiscardHandler))
		pool.Close()
		if err != nil {
			return err
		}
		_, err = conn.Exec(ctx, "ALTER DATABASE "+pgx.Identifier{name}.Sanitize()+" WITH IS_TEMPLATE true")
		return err
	})
}

func withConn(ctx context.Context, url string, fn func(*pgx.Conn) error) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	return fn(conn)
}

// retryBusy retries while another session is still attached to the template.
func retryBusy(ctx context.Context, fn func() error) error {
	for i := 0; ; i++ {
		err := fn()
		var pgErr *pgconn.PgError
		if err == nil || i == 50 || !errors.As(err, &pgErr) || pgErr.Code != "55006" {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func withDatabase(admin, name string) string {
	u, err := url.Parse(admin)
	if err != nil || u.Scheme == "" {
		// A key=value DSN.
		return strings.TrimSpace(admin) + " dbname=" + name
	}
	u.Path = "/" + name
	return u.String()
}
