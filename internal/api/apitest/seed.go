package apitest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/clerksync/clerksync/internal/postgres/dbsqlc"
)

// Impostor is the Clerk user a few rows of the table name beside the victim's sub, under another
// spelling of the claim. Tests running the table sync it first (SyncUser), so that a token read
// as the impostor's would answer 200 where the contract says 404 user_not_synced (the victim's)
// or 401.
const Impostor = "user_2impostor"

// SyncUser writes the Clerk user clerkID as the worker does on user.created, with no profile
// fields: the users row, its subscription and its usage row.
func SyncUser(t testing.TB, ctx context.Context, q *dbsqlc.Queries, clerkID string) {
	t.Helper()
	none := []*string{nil}
	created := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	ApplyEvent(t, ctx, q, dbsqlc.ApplyEventsParams{
		EventIds:        []string{"msg_" + clerkID},
		EventTypes:      []string{"user.created"},
		ClerkUserIds:    []string{clerkID},
		Emails:          none,
		Usernames:       none,
		FirstNames:      none,
		LastNames:       none,
		ImageUrls:       none,
		ClerkData:       [][]byte{fmt.Appendf(nil, `{"id":%q}`, clerkID)},
		ClerkCreatedAts: []pgtype.Timestamptz{{Time: created, Valid: true}},
		ClerkUpdatedAts: []pgtype.Timestamptz{{Time: created, Valid: true}},
		DeletedAts:      []pgtype.Timestamptz{{}},
	})
}

// ApplyEvent applies one event for the Clerk user ev.ClerkUserIds[0] with the worker's statement
// (ApplyEvents), so the rows the api reads are the ones the worker writes. It fills in the stream
// sequence and the ids the worker derives from the Clerk id (worker.UserID, SubscriptionID).
func ApplyEvent(t testing.TB, ctx context.Context, q *dbsqlc.Queries, ev dbsqlc.ApplyEventsParams) {
	t.Helper()
	clerkID := ev.ClerkUserIds[0]
	ev.StreamSeqs = []int64{1}
	ev.UserIds = []uuid.UUID{uuid.NewSHA1(uuid.NameSpaceURL, []byte("clerk:"+clerkID))}
	ev.SubscriptionIds = []uuid.UUID{uuid.NewSHA1(uuid.NameSpaceURL, []byte("clerk:"+clerkID+":subscription"))}
	if _, err := q.ApplyEvents(ctx, ev); err != nil {
		t.Fatalf("apitest: applying %s for %s: %v", ev.EventTypes[0], clerkID, err)
	}
}
