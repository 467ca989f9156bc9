package postgres_test

import (
	"bytes"
	"context"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/clerksync/clerksync/internal/postgres"
	"github.com/clerksync/clerksync/internal/postgres/postgrestest"
)

// TestCreateDatabaseIfMissing: a database DATABASE_URL names but the server lacks is created,
// with one log line; an existing one is left alone; a role that may not create databases gets
// one line saying createdb.
func TestCreateDatabaseIfMissing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	server := postgrestest.ServerURL(t)
	withDB := func(name string) string {
		u, err := url.Parse(server)
		if err != nil {
			t.Fatal(err)
		}
		u.Path = "/" + name
		return u.String()
	}
	name := "clerksync_create_" + strconv.FormatInt(time.Now().UnixNano(), 36)
	t.Cleanup(func() {
		conn, err := pgx.Connect(ctx, withDB("postgres"))
		if err != nil {
			return
		}
		defer func() { _ = conn.Close(ctx) }()
		_, _ = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
		_, _ = conn.Exec(ctx, "DROP ROLE IF EXISTS "+pgx.Identifier{name + "_role"}.Sanitize())
	})

	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	if err := postgres.CreateDatabaseIfMissing(ctx, withDB(name), logger); err != nil {
		t.Fatal(err)
	}
	pool, err := postgres.Open(ctx, withDB(name))
	if err != nil {
		t.Fatalf("the created database does not open: %v", err)
	}
	pool.Close()
	if n := strings.Count(logs.String(), "created the database"); n != 1 {
		t.Errorf("%d log lines about creating it, want 1:\n%s", n, &logs)
	}
	if err := postgres.CreateDatabaseIfMissing(ctx, withDB(name), logger); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(logs.String(), "created the database"); n != 1 {
		t.Errorf("an existing database was created again:\n%s", &logs)
	}

	// A role without CREATEDB.
	admin, err := pgx.Connect(ctx, withDB("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = admin.Close(ctx) }()
	role := name + "_role"
	if _, err := admin.Exec(ctx, "CREATE ROLE "+pgx.Identifier{role}.Sanitize()+" LOGIN NOCREATEDB"); err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(withDB(name + "_other"))
	u.User = url.User(role)
	err = postgres.CreateDatabaseIfMissing(ctx, u.String(), logger)
	if err == nil || !strings.Contains(err.Error(), "createdb "+name+"_other") {
		t.Errorf("a role that may not create databases: %v, want a line saying createdb", err)
	}
}
