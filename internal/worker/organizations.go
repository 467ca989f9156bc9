package worker

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/clerksync/clerksync/internal/clerk"
	"github.com/clerksync/clerksync/internal/postgres/dbsqlc"
)

// OrganizationID is the organizations.organization_id of a Clerk organization: UUIDv5 of
// "clerk:" + its id, like UserID, stable across replays and rebuilds.
func OrganizationID(clerkOrgID string) uuid.UUID {
	return uuid.NewSHA1(uuid.NameSpaceURL, []byte("clerk:"+clerkOrgID))
}

// MembershipID is the organization_memberships.membership_id of a Clerk organization membership,
// derived like OrganizationID.
func MembershipID(clerkMembershipID string) uuid.UUID {
	return uuid.NewSHA1(uuid.NameSpaceURL, []byte("clerk:"+clerkMembershipID))
}

// organizationRows are a batch's organization events as ApplyOrganizationEvents takes them, one
// slice per column. A delete has deleted_at set (its timestamp) and every Clerk-derived column NULL.
type organizationRows dbsqlc.ApplyOrganizationEventsParams

func (r *organizationRows) add(d *delivery) {
	ev := d.org
	r.EventIds = append(r.EventIds, d.EventID)
	r.EventTypes = append(r.EventTypes, d.Type)
	r.StreamSeqs = append(r.StreamSeqs, int64(d.Seq)) //nolint:gosec // G115: a stream sequence counts messages from 1, far below 2^63
	r.OrganizationIds = append(r.OrganizationIds, OrganizationID(ev.ClerkOrgID))
	r.ClerkOrgIds = append(r.ClerkOrgIds, ev.ClerkOrgID)
	o := ev.Organization
	if o == nil {
		r.Names = append(r.Names, nil)
		r.Slugs = append(r.Slugs, nil)
		r.ImageUrls = append(r.ImageUrls, nil)
		r.ClerkData = append(r.ClerkData, nil)
		r.ClerkCreatedAts = append(r.ClerkCreatedAts, pgtype.Timestamptz{})
		r.ClerkUpdatedAts = append(r.ClerkUpdatedAts, pgtype.Timestamptz{})
		r.DeletedAts = append(r.DeletedAts, timestamptz(ev.Timestamp))
		return
	}
	r.Names = append(r.Names, o.Name)
	r.Slugs = append(r.Slugs, o.Slug)
	r.ImageUrls = append(r.ImageUrls, o.ImageURL)
	r.ClerkData = append(r.ClerkData, o.Data)
	r.ClerkCreatedAts = append(r.ClerkCreatedAts, optionalTimestamptz(o.CreatedAt))
	r.ClerkUpdatedAts = append(r.ClerkUpdatedAts, timestamptz(o.UpdatedAt))
	r.DeletedAts = append(r.DeletedAts, pgtype.Timestamptz{})
}

// foldOrganizations applies evs (all organization events) with q in one statement,
// ApplyOrganizationEvents, by the rules of foldUsers, and returns each one's outcome.
func foldOrganizations(ctx context.Context, q *dbsqlc.Queries, evs []*delivery, reapply bool) ([]outcome, error) {
	rows := organizationRows{Reapply: reapply}
	return foldStatement(evs, rows.add, func() ([]applied, error) {
		results, err := q.ApplyOrganizationEvents(ctx, dbsqlc.ApplyOrganizationEventsParams(rows))
		if err != nil {
			return nil, fmt.Errorf("applying organization events: %w", err)
		}
		out := make([]applied, len(results))
		for i, r := range results {
			out[i] = applied{r.EventID, r.Applied}
		}
		return out, nil
	})
}

// membershipRows are a batch's membership events as ApplyMembershipEvents takes them. A delete
// keeps its Clerk ids and has deleted_at set (the envelope timestamp: a deleted membership's
// updated_at is not when it was deleted), every Clerk-derived column NULL, role included.
type membershipRows dbsqlc.ApplyMembershipEventsParams

func (r *membershipRows) add(d *delivery) {
	ev := d.membership
	m := ev.Membership
	r.EventIds = append(r.EventIds, d.EventID)
	r.EventTypes = append(r.EventTypes, d.Type)
	r.StreamSeqs = append(r.StreamSeqs, int64(d.Seq)) //nolint:gosec // G115: as above
	r.MembershipIds = append(r.MembershipIds, MembershipID(m.ID))
	r.ClerkMembershipIds = append(r.ClerkMembershipIds, m.ID)
	r.ClerkOrgIds = append(r.ClerkOrgIds, m.OrgID)
	r.ClerkUserIds = append(r.ClerkUserIds, m.UserID)
	if d.Type == clerk.MembershipDeleted {
		r.Roles = append(r.Roles, nil)
		r.ClerkData = append(r.ClerkData, nil)
		r.ClerkCreatedAts = append(r.ClerkCreatedAts, pgtype.Timestamptz{})
		r.ClerkUpdatedAts = append(r.ClerkUpdatedAts, pgtype.Timestamptz{})
		r.DeletedAts = append(r.DeletedAts, timestamptz(ev.Timestamp))
		return
	}
	r.Roles = append(r.Roles, m.Role)
	r.ClerkData = append(r.ClerkData, m.Data)
	r.ClerkCreatedAts = append(r.ClerkCreatedAts, optionalTimestamptz(m.CreatedAt))
	r.ClerkUpdatedAts = append(r.ClerkUpdatedAts, timestamptz(m.UpdatedAt))
	r.DeletedAts = append(r.DeletedAts, pgtype.Timestamptz{})
}

// foldMemberships applies evs (all membership events) with q in one statement,
// ApplyMembershipEvents, by the rules of foldUsers, and returns each one's outcome. The statement
// leaves the user's personal data out of a version it writes while the membership's user or
// organization is a tombstone.
func foldMemberships(ctx context.Context, q *dbsqlc.Queries, evs []*delivery, reapply bool) ([]outcome, error) {
	rows := membershipRows{Reapply: reapply}
	return foldStatement(evs, rows.add, func() ([]applied, error) {
		results, err := q.ApplyMembershipEvents(ctx, dbsqlc.ApplyMembershipEventsParams(rows))
		if err != nil {
			return nil, fmt.Errorf("applying membership events: %w", err)
		}
		out := make([]applied, len(results))
		for i, r := range results {
			out[i] = applied{r.EventID, r.Applied}
		}
		return out, nil
	})
}

func timestamptz(t time.Time) pgtype.Timestamptz { return pgtype.Timestamptz{Time: t, Valid: true} }

func optionalTimestamptz(t *time.Time) pgtype.Timestamptz {
	if t == nil {
		return pgtype.Timestamptz{}
	}
	return timestamptz(*t)
}
