package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"testing"

	"github.com/google/uuid"

	"github.com/clerksync/clerksync/internal/postgres"
	"github.com/clerksync/clerksync/internal/postgres/dbsqlc"
	"github.com/clerksync/clerksync/internal/postgres/postgrestest"
)

func TestMigrateIsIdempotent(t *testing.T) {
	t.Parallel()
	pool := postgrestest.NewPool(t)
	ctx := context.Background()
	// The template is migrated already: running again must apply nothing and not fail.
	for range 2 {
		if err := postgres.Migrate(ctx, pool, slog.New(slog.DiscardHandler)); err != nil {
			t.Fatal(err)
		}
	}
	n, err := dbsqlc.New(pool).CountProcessedEvents(ctx)
	if err != nil || n != 0 {
		t.Fatalf("CountProcessedEvents = %d, %v; want 0, nil", n, err)
	}
}

func TestInTxRollsBackOnError(t *testing.T) {
	t.Parallel()
	pool := postgrestest.NewPool(t)
	ctx := context.Background()
	boom := errors.New("boom")
	err := postgres.InTx(ctx, pool, func(q *dbsqlc.Queries) error {
		if _, err := q.InsertProcessedEvents(ctx, dbsqlc.InsertProcessedEventsParams{
			EventIds: []string{"msg_1"}, EventTypes: []string{"user.created"},
			ClerkUserIds: []string{"user_1"}, StreamSeqs: []int64{1},
		}); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("InTx error = %v, want %v", err, boom)
	}
	if n, _ := dbsqlc.New(pool).CountProcessedEvents(ctx); n != 0 {
		t.Fatalf("rolled-back insert left %d rows", n)
	}
}

func TestUnavailableWhenServerUnreachable(t *testing.T) {
	t.Parallel()
	// Port 1 on loopback refuses connections.
	_, err := postgres.Open(context.Background(), "postgres://postgres@127.0.0.1:1/x?sslmode=disable&connect_timeout=2")
	if !postgres.IsUnavailable(err) {
		t.Fatalf("Open on a closed port: %v, want FaultUnavailable", err)
	}
}

func TestUnavailableWhenConnectionCut(t *testing.T) {
	t.Parallel()
	// pgx reports a connection the server side closed under a statement as an unexpected EOF
	// (worker's TestRunHoldsDuringPostgresOutage cuts one for real).
	if err := fmt.Errorf("applying events: %w", io.ErrUnexpectedEOF); !postgres.IsUnavailable(err) {
		t.Fatalf("IsUnavailable(%v) = false, want true", err)
	}
}

func TestOpenSendsUUIDs(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, err := postgres.OpenConns(ctx, postgrestest.NewDatabase(t), 3)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if got := pool.Config().MaxConns; got < 3 {
		t.Errorf("MaxConns = %d, want at least 3", got)
	}
	ids := []uuid.UUID{uuid.NewSHA1(uuid.NameSpaceURL, []byte("clerk:user_1")), uuid.Nil}
	var one, many string
	if err := pool.QueryRow(ctx, "SELECT $1::uuid::text, $2::uuid[]::text", ids[0], ids).Scan(&one, &many); err != nil {
		t.Fatal(err)
	}
	want := "{" + ids[0].String() + "," + ids[1].String() + "}"
	if one != ids[0].String() || many != want {
		t.Errorf("sent %v, Postgres read %s and %s", ids, one, many)
	}
}
