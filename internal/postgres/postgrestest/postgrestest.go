// Package postgrestest gives each test its own freshly migrated database on a real Postgres.
//
// The server is TEST_DATABASE_URL when set, else the local server at 127.0.0.1:5432, else a
// private cluster that the test binary starts once from the PostgreSQL server binaries on the
// machine (package pgcluster; data under the system temporary directory, fsync off). There is
// no TestMain to stop that cluster: on Linux the kernel sends its postmaster SIGINT (a fast
// shutdown) when the test binary exits, however it exits, and the next test binary to start a
// cluster removes the data directories of clusters whose test binary is gone. The
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
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/clerksync/clerksync/internal/pgcluster"
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
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	admin, _, err := findServer(ctx, sources{testURL: os.Getenv("TEST_DATABASE_URL"), localURL: localURL})
	if err != nil {
		return "", "", err
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

// sources are where findServer looks for a server, in order.
type sources struct {
	testURL  string // TEST_DATABASE_URL: when set, the only choice
	localURL string
	binDir   string // the server binaries for a private cluster; found when empty
}

// findServer returns the admin URL of the first server that answers, and the private cluster
// when it had to start one.
func findServer(ctx context.Context, s sources) (string, *pgcluster.Cluster, error) {
	if s.testURL != "" {
		if err := ping(ctx, s.testURL); err != nil {
			return "", nil, fmt.Errorf("postgrestest: TEST_DATABASE_URL does not answer (%v): point it at a server the tests may create databases on, or unset it to use 127.0.0.1:5432 or a private cluster", oneLine(err))
		}
		return s.testURL, nil, nil
	}
	localErr := ping(ctx, s.localURL)
	if localErr == nil {
		return s.localURL, nil, nil
	}
	c, err := startPrivate(ctx, s.binDir)
	if err != nil {
		if errors.Is(err, pgcluster.ErrNoBinaries) {
			err = errors.New("no PostgreSQL server binaries found")
		}
		return "", nil, fmt.Errorf("postgrestest: no Postgres for the tests: nothing usable at 127.0.0.1:5432 (%v) and no private cluster (%v): set TEST_DATABASE_URL to a server the tests may create databases on, start one on 127.0.0.1:5432 (trust auth, user postgres), or install the PostgreSQL server binaries (Debian/Ubuntu: apt-get install postgresql; macOS: brew install postgresql)", oneLine(localErr), oneLine(err))
	}
	return c.URL("postgres"), c, nil
}

func ping(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return withConn(ctx, url, func(conn *pgx.Conn) error { return conn.Ping(ctx) })
}

// privatePrefix names the temporary directories of private clusters; the creator's pid follows.
const privatePrefix = "clerksync-pgtest-"

// startPrivate starts a throwaway cluster for this test binary, left running until the binary
// exits (see the package comment).
func startPrivate(ctx context.Context, binDir string) (*pgcluster.Cluster, error) {
	removeStaleClusters()
	base, err := os.MkdirTemp("", privatePrefix+strconv.Itoa(os.Getpid())+"-")
	if err != nil {
		return nil, err
	}
	// As root the server runs as the postgres user, which must be able to reach its data.
	if err := os.Chmod(base, 0o755); err != nil {
		return nil, err
	}
	c, err := pgcluster.Start(ctx, pgcluster.Options{DataDir: filepath.Join(base, "data"), BinDir: binDir, Ephemeral: true})
	if err != nil {
		_ = os.RemoveAll(base)
		return nil, err
	}
	return c, nil
}

// removeStaleClusters deletes the directories of private clusters whose test binary and
// postmaster have both exited.
func removeStaleClusters() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), privatePrefix+"*"))
	for _, dir := range dirs {
		owner, _, _ := strings.Cut(strings.TrimPrefix(filepath.Base(dir), privatePrefix), "-")
		if pid, err := strconv.Atoi(owner); err != nil || alive(pid) {
			continue
		}
		if b, err := os.ReadFile(filepath.Join(dir, "data", "postmaster.pid")); err == nil {
			first, _, _ := strings.Cut(string(b), "\n")
			if pid, err := strconv.Atoi(strings.TrimSpace(first)); err == nil && alive(pid) {
				continue // still shutting down
			}
		}
		_ = os.RemoveAll(dir)
	}
}

// alive reports whether a process exists (or may: a process we may not signal exists).
func alive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

func oneLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
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
		defer conn.Exec(context.Background(), "SELECT pg_advisory_unlock(hashtext('clerksync-postgrestest'))") //nolint:errcheck // withConn closes the session next, which releases the lock anyway
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
