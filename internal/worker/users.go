package worker

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/clerksync/clerksync/internal/postgres/dbsqlc"
)

// UserID is the users.user_id of a Clerk user: UUIDv5 of "clerk:" + its id, stable across replays
// and rebuilds.
func UserID(clerkUserID string) uuid.UUID {
	return uuid.NewSHA1(uuid.NameSpaceURL, []byte("clerk:"+clerkUserID))
}

// SubscriptionID is the subscription_id of a Clerk user's subscription, derived like UserID so a
// rebuild keeps it.
func SubscriptionID(clerkUserID string) uuid.UUID {
	return uuid.NewSHA1(uuid.NameSpaceURL, []byte("clerk:"+clerkUserID+":subscription"))
}

// userRows are a batch's user events as ApplyEvents takes them, one slice per column. A delete
// has deleted_at set (its timestamp) and every Clerk-derived column NULL.
type userRows dbsqlc.ApplyEventsParams

func (r *userRows) add(d *delivery) {
	ev := d.user
	r.EventIds = append(r.EventIds, d.EventID)
	r.EventTypes = append(r.EventTypes, d.Type)
	r.StreamSeqs = append(r.StreamSeqs, int64(d.Seq)) //nolint:gosec // G115: a stream sequence counts messages from 1, far below 2^63
	r.UserIds = append(r.UserIds, UserID(ev.ClerkUserID))
	r.SubscriptionIds = append(r.SubscriptionIds, SubscriptionID(ev.ClerkUserID))
	r.ClerkUserIds = append(r.ClerkUserIds, ev.ClerkUserID)
	if ev.User == nil {
		r.Emails = append(r.Emails, nil)
		r.Usernames = append(r.Usernames, nil)
		r.FirstNames = append(r.FirstNames, nil)
		r.LastNames = append(r.LastNames, nil)
		r.ImageUrls = append(r.ImageUrls, nil)
		r.ClerkData = append(r.ClerkData, nil)
		r.ClerkCreatedAts = append(r.ClerkCreatedAts, pgtype.Timestamptz{})
		r.ClerkUpdatedAts = append(r.ClerkUpdatedAts, pgtype.Timestamptz{})
		r.DeletedAts = append(r.DeletedAts, pgtype.Timestamptz{Time: ev.Timestamp, Valid: true})
		return
	}
	u := ev.User
	r.Emails = append(r.Emails, u.Email)
	r.Usernames = append(r.Usernames, u.Username)
	r.FirstNames = append(r.FirstNames, u.FirstName)
	r.LastNames = append(r.LastNames, u.LastName)
	r.ImageUrls = append(r.ImageUrls, u.ImageURL)
	// The user object as Clerk sent it: Postgres parses it once, into jsonb.
	r.ClerkData = append(r.ClerkData, u.Data)
	created := pgtype.Timestamptz{}
	if u.CreatedAt != nil {
		created = pgtype.Timestamptz{Time: *u.CreatedAt, Valid: true}
	}
	r.ClerkCreatedAts = append(r.ClerkCreatedAts, created)
	r.ClerkUpdatedAts = append(r.ClerkUpdatedAts, pgtype.Timestamptz{Time: u.UpdatedAt, Valid: true})
	r.DeletedAts = append(r.DeletedAts, pgtype.Timestamptz{})
}

// foldUsers applies evs (all user events) with q and returns each one's outcome. One statement
// (ApplyEvents) does it all: it records the svix-ids in processed_events, folds the new events per
// user (any delete makes a tombstone at the earliest delete's timestamp; otherwise the greatest
// version (data.updated_at, svix-id as bytes) wins), writes each user at most once, and its
// subscription and usage row. With reapply the ledger does not filter: every event is folded
// again and an equal version is rewritten.
func foldUsers(ctx context.Context, q *dbsqlc.Queries, evs []*delivery, reapply bool) ([]outcome, error) {
	rows := userRows{Reapply: reapply}
	return foldStatement(evs, rows.add, func() ([]applied, error) {
		results, err := q.ApplyEvents(ctx, dbsqlc.ApplyEventsParams(rows))
		if err != nil {
			return nil, fmt.Errorf("applying user events: %w", err)
		}
		out := make([]applied, len(results))
		for i, r := range results {
			out[i] = applied{r.EventID, r.Applied}
		}
		return out, nil
	})
}

// applied is a fold statement's verdict on one event it folded: applied when the event won its
// object's fold and the row was written, else stale.
type applied struct {
	eventID string
	applied bool
}

// foldStatement is what every kind's fold shares: evs go to the statement (add, then run) once per
// svix-id, in svix-id order, and each gets its outcome. A svix-id may come twice in one batch (a
// Svix retry outside the stream's duplicate window): the first copy stands for both. The events
// go in svix-id order, the order every worker writes the ledger in. An event run does not return
// was already in the ledger: a duplicate.
func foldStatement(evs []*delivery, add func(*delivery), run func() ([]applied, error)) ([]outcome, error) {
	outcomes := make([]outcome, len(evs))
	first := make(map[string]int, len(evs))
	order := make([]int, 0, len(evs))
	for i, e := range evs {
		if _, seen := first[e.EventID]; seen {
			outcomes[i] = outcomeDuplicate
			continue
		}
		first[e.EventID] = i
		order = append(order, i)
	}
	slices.SortFunc(order, func(a, b int) int { return strings.Compare(evs[a].EventID, evs[b].EventID) })
	for _, i := range order {
		add(evs[i])
		outcomes[i] = outcomeDuplicate // unless the statement returns it
	}
	results, err := run()
	if err != nil {
		return nil, err
	}
	for _, r := range results {
		i, ok := first[r.eventID]
		if !ok {
			return nil, fmt.Errorf("applying events: unexpected svix-id %q in the result", r.eventID)
		}
		outcomes[i] = outcomeStale
		if r.applied {
			outcomes[i] = outcomeApplied
		}
	}
	return outcomes, nil
}
