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

// Organization is the Clerk side of an organization the tests sync.
type Organization struct {
	ID       string
	Name     *string
	Slug     *string
	ImageURL *string
	// UpdatedAt is its version; CreatedAt is fixed.
	UpdatedAt time.Time
}

// SyncOrganization writes org as the worker does on organization.created or .updated, with the
// worker's statement (ApplyOrganizationEvents), svix-id eventID.
func SyncOrganization(t testing.TB, ctx context.Context, q *dbsqlc.Queries, eventID string, org Organization) {
	t.Helper()
	created := time.Date(2024, 5, 28, 8, 0, 0, 0, time.UTC)
	if _, err := q.ApplyOrganizationEvents(ctx, dbsqlc.ApplyOrganizationEventsParams{
		EventIds:        []string{eventID},
		EventTypes:      []string{"organization.updated"},
		StreamSeqs:      []int64{1},
		OrganizationIds: []uuid.UUID{uuid.NewSHA1(uuid.NameSpaceURL, []byte("clerk:"+org.ID))},
		ClerkOrgIds:     []string{org.ID},
		Names:           []*string{org.Name},
		Slugs:           []*string{org.Slug},
		ImageUrls:       []*string{org.ImageURL},
		ClerkData:       [][]byte{fmt.Appendf(nil, `{"object":"organization","id":%q}`, org.ID)},
		ClerkCreatedAts: []pgtype.Timestamptz{{Time: created, Valid: true}},
		ClerkUpdatedAts: []pgtype.Timestamptz{{Time: org.UpdatedAt, Valid: true}},
		DeletedAts:      []pgtype.Timestamptz{{}},
	}); err != nil {
		t.Fatalf("apitest: syncing organization %s: %v", org.ID, err)
	}
}

// DeleteOrganization writes the tombstone of the organization clerkOrgID as the worker does on
// organization.deleted.
func DeleteOrganization(t testing.TB, ctx context.Context, q *dbsqlc.Queries, clerkOrgID string, at time.Time) {
	t.Helper()
	if _, err := q.ApplyOrganizationEvents(ctx, dbsqlc.ApplyOrganizationEventsParams{
		EventIds:        []string{"msg_deleted_" + clerkOrgID},
		EventTypes:      []string{"organization.deleted"},
		StreamSeqs:      []int64{1},
		OrganizationIds: []uuid.UUID{uuid.NewSHA1(uuid.NameSpaceURL, []byte("clerk:"+clerkOrgID))},
		ClerkOrgIds:     []string{clerkOrgID},
		Names:           []*string{nil},
		Slugs:           []*string{nil},
		ImageUrls:       []*string{nil},
		ClerkData:       [][]byte{nil},
		ClerkCreatedAts: []pgtype.Timestamptz{{}},
		ClerkUpdatedAts: []pgtype.Timestamptz{{}},
		DeletedAts:      []pgtype.Timestamptz{{Time: at, Valid: true}},
	}); err != nil {
		t.Fatalf("apitest: deleting organization %s: %v", clerkOrgID, err)
	}
}

// SyncMembership writes the membership clerkID of user userID in organization orgID with role
// as the worker does on organizationMembership.created (ApplyMembershipEvents); deletedAt, when
// set, makes it a tombstone instead, as organizationMembership.deleted does.
func SyncMembership(t testing.TB, ctx context.Context, q *dbsqlc.Queries, clerkID, orgID, userID, role string, deletedAt *time.Time) {
	t.Helper()
	created := time.Date(2024, 5, 28, 8, 0, 0, 0, time.UTC)
	p := dbsqlc.ApplyMembershipEventsParams{
		EventIds:           []string{"msg_" + clerkID},
		EventTypes:         []string{"organizationMembership.created"},
		StreamSeqs:         []int64{1},
		MembershipIds:      []uuid.UUID{uuid.NewSHA1(uuid.NameSpaceURL, []byte("clerk:"+clerkID))},
		ClerkMembershipIds: []string{clerkID},
		ClerkOrgIds:        []string{orgID},
		ClerkUserIds:       []string{userID},
		Roles:              []*string{&role},
		ClerkData: [][]byte{fmt.Appendf(nil, `{"object":"organization_membership","id":%q,"role":%q,"organization":{"id":%q},"public_user_data":{"user_id":%q}}`,
			clerkID, role, orgID, userID)},
		ClerkCreatedAts: []pgtype.Timestamptz{{Time: created, Valid: true}},
		ClerkUpdatedAts: []pgtype.Timestamptz{{Time: created, Valid: true}},
		DeletedAts:      []pgtype.Timestamptz{{}},
	}
	if deletedAt != nil {
		p.EventIds, p.EventTypes = []string{"msg_deleted_" + clerkID}, []string{"organizationMembership.deleted"}
		p.Roles, p.ClerkData = []*string{nil}, [][]byte{nil}
		p.ClerkCreatedAts, p.ClerkUpdatedAts = []pgtype.Timestamptz{{}}, []pgtype.Timestamptz{{}}
		p.DeletedAts = []pgtype.Timestamptz{{Time: *deletedAt, Valid: true}}
	}
	if _, err := q.ApplyMembershipEvents(ctx, p); err != nil {
		t.Fatalf("apitest: syncing membership %s: %v", clerkID, err)
	}
}
