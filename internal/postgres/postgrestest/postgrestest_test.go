package postgrestest

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

// closedURL is a server address that refuses connections: port 1 on loopback.
const closedURL = "postgres://postgres@127.0.0.1:1/postgres?sslmode=disable&connect_timeout=2"

func TestNewPoolGivesAMigratedDatabase(t *testing.T) {
	t.Parallel()
	pool := NewPool(t)
	var n int
	if err := pool.QueryRow(context.Background(), "SELECT count(*) FROM users").Scan(&n); err != nil || n != 0 {
		t.Fatalf("users in a fresh database: %d, %v; want 0, nil", n, err)
	}
}

func TestFallsBackToAPrivateCluster(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	admin, c, err := findServer(ctx, sources{localURL: closedURL})
	if err != nil {
		t.Fatal(err)
	}
	if c == nil {
		t.Fatal("findServer used a server on a closed port")
	}
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Error(err)
		}
		_ = os.RemoveAll(filepath.Dir(c.DataDir()))
	})

	// The whole harness works on it: template, clone, migrated schema.
	name, err := templateName()
	if err != nil {
		t.Fatal(err)
	}
	if err := ensureTemplate(ctx, admin, name); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE clone TEMPLATE "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	clone, err := pgx.Connect(ctx, withDatabase(admin, "clone"))
	if err != nil {
		t.Fatal(err)
	}
	defer clone.Close(ctx)
	var n int
	if err := clone.QueryRow(ctx, "SELECT count(*) FROM processed_events").Scan(&n); err != nil {
		t.Fatalf("clone of the template lacks the schema: %v", err)
	}
}

func TestNoServerFailsWithOneLineSayingHow(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, _, err := findServer(ctx, sources{localURL: closedURL, binDir: t.TempDir()})
	if err == nil {
		t.Fatal("findServer found a server without binaries or a reachable one")
	}
	msg := err.Error()
	for _, want := range []string{"TEST_DATABASE_URL", "127.0.0.1:5432", "apt-get install postgresql"} {
		if !strings.Contains(msg, want) {
			t.Errorf("failure message lacks %q: %s", want, msg)
		}
	}
	if strings.Contains(msg, "\n") {
		t.Errorf("failure message spans lines: %q", msg)
	}

	_, _, err = findServer(ctx, sources{testURL: closedURL, localURL: localURL})
	if err == nil || !strings.Contains(err.Error(), "TEST_DATABASE_URL does not answer") {
		t.Fatalf("an unreachable TEST_DATABASE_URL: %v; want it named, with no fallback", err)
	}
}

func TestRemoveStaleClusters(t *testing.T) {
	t.Parallel()
	// A directory whose owner cannot be alive (pid beyond pid_max) goes; ours stays.
	stale, err := os.MkdirTemp("", privatePrefix+"999999999-")
	if err != nil {
		t.Fatal(err)
	}
	live, err := os.MkdirTemp("", privatePrefix+"1-") // pid 1 always runs
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(live) })
	removeStaleClusters()
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("stale cluster directory %s was kept: %v", stale, err)
		_ = os.RemoveAll(stale)
	}
	if _, err := os.Stat(live); err != nil {
		t.Errorf("directory of a running test binary was removed: %v", err)
	}
}
