package worker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/clerksync/clerksync/internal/clerk"
	"github.com/clerksync/clerksync/internal/event"
	"github.com/clerksync/clerksync/internal/postgres"
	"github.com/clerksync/clerksync/internal/postgres/dbsqlc"
)

// message is one stream message as the apply code sees it, whichever path read it: the durable
// consumer, a replay, or a dead letter being retried.
type message struct {
	Seq     uint64
	Subject string
	EventID string // the svix-id
	Body    []byte
}

// outcome is what became of one message; it is also the "outcome" label of the events metric.
type outcome string

const (
	outcomeApplied      outcome = "applied"       // its version is now the user's row
	outcomeDuplicate    outcome = "duplicate"     // its svix-id was already in processed_events
	outcomeStale        outcome = "stale"         // recorded, but a newer version (or a tombstone) wins
	outcomeIgnored      outcome = "ignored"       // an event type the worker does not apply
	outcomeDeadLettered outcome = "dead_lettered" // parked in dead_letters
	outcomeRetried      outcome = "retried"       // failed with Postgres reachable, NAKed with a delay
)

// decoded is a message after parsing. Event is nil for a type the worker does not apply (a user.*
// event other than created, updated and deleted): such a message is acknowledged and counted.
type decoded struct {
	message
	Type  string
	Event *clerk.UserEvent
}

// decode parses m. An error means m can never apply: it is poison, to be parked in dead_letters.
func decode(m message) (decoded, error) {
	// The common case first: one parse. Only a failure needs the envelope, to tell an event type
	// the worker does not apply (ignored) from a broken one (poison).
	ev, err := clerk.ParseUserEvent(m.Body)
	if err == nil {
		d := decoded{message: m, Type: ev.Type, Event: &ev}
		if m.EventID == "" {
			return d, fmt.Errorf("message has no %s header: it cannot be recorded in processed_events", event.HeaderSvixID)
		}
		return d, nil
	}
	env, envErr := clerk.ParseEnvelope(m.Body)
	if envErr != nil {
		return decoded{message: m}, fmt.Errorf("parsing event: %w", envErr)
	}
	d := decoded{message: m, Type: env.Type}
	switch env.Type {
	case clerk.UserCreated, clerk.UserUpdated, clerk.UserDeleted:
		return d, fmt.Errorf("parsing %s: %w", env.Type, err)
	}
	return d, nil
}

// metricType is the "type" label of a message: one of the types the worker applies, else "other",
// so an unknown event type cannot grow the metric without bound.
func metricType(typ string) string {
	switch typ {
	case clerk.UserCreated, clerk.UserUpdated, clerk.UserDeleted:
		return typ
	}
	return "other"
}

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

// eventRows are a batch's events as ApplyEvents takes them, one slice per column. A delete has
// deleted_at set (its timestamp) and every Clerk-derived column NULL.
type eventRows dbsqlc.ApplyEventsParams

func (r *eventRows) add(d decoded) {
	ev := d.Event
	r.EventIds = append(r.EventIds, d.EventID)
	r.EventTypes = append(r.EventTypes, d.Type)
	r.StreamSeqs = append(r.StreamSeqs, int64(d.Seq))
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
	// The user object exactly as Clerk sent it: Postgres parses it once, into jsonb.
	r.ClerkData = append(r.ClerkData, u.Data)
	created := pgtype.Timestamptz{}
	if u.CreatedAt != nil {
		created = pgtype.Timestamptz{Time: *u.CreatedAt, Valid: true}
	}
	r.ClerkCreatedAts = append(r.ClerkCreatedAts, created)
	r.ClerkUpdatedAts = append(r.ClerkUpdatedAts, pgtype.Timestamptz{Time: u.UpdatedAt, Valid: true})
	r.DeletedAts = append(r.DeletedAts, pgtype.Timestamptz{})
}

// applyEvents applies evs (all decoded user events) with q and returns each one's outcome. One
// statement (ApplyEvents) does it all: it records the svix-ids in processed_events, folds the new
// events per user (any delete makes a tombstone at the earliest delete's timestamp; otherwise the
// greatest version (data.updated_at, svix-id as bytes) wins), writes each user at most once, and
// its subscription and usage row. With reapply the ledger does not filter: every event is folded
// again and an equal version is rewritten.
func applyEvents(ctx context.Context, q *dbsqlc.Queries, evs []decoded, reapply bool) ([]outcome, error) {
	outcomes := make([]outcome, len(evs))

	// A svix-id may come twice in one batch (a Svix retry outside the stream's duplicate window):
	// the first copy stands for both. The events go in svix-id order, the order every worker
	// writes the ledger in.
	first := make(map[string]int, len(evs))
	for i, e := range evs {
		if _, seen := first[e.EventID]; seen {
			outcomes[i] = outcomeDuplicate
			continue
		}
		first[e.EventID] = i
	}
	order := make([]int, 0, len(first))
	for _, i := range first {
		order = append(order, i)
	}
	slices.SortFunc(order, func(a, b int) int { return strings.Compare(evs[a].EventID, evs[b].EventID) })
	rows := eventRows{Reapply: reapply}
	for _, i := range order {
		rows.add(evs[i])
		outcomes[i] = outcomeDuplicate // unless ApplyEvents returns it
	}
	results, err := q.ApplyEvents(ctx, dbsqlc.ApplyEventsParams(rows))
	if err != nil {
		return nil, fmt.Errorf("applying events: %w", err)
	}
	for _, r := range results {
		i, ok := first[r.EventID]
		if !ok {
			return nil, fmt.Errorf("applying events: unexpected svix-id %q in the result", r.EventID)
		}
		outcomes[i] = outcomeStale
		if r.Applied {
			outcomes[i] = outcomeApplied
		}
	}
	return outcomes, nil
}

// applyTx applies evs in one transaction and returns each one's outcome. also, when not nil, runs
// in the same transaction (a retried dead letter is marked in the transaction that applies it).
// A deadlock or serialization failure between workers is retried; any other error is returned,
// wrapping postgres.ErrUnavailable when Postgres could not be reached.
func applyTx(ctx context.Context, pool *pgxpool.Pool, evs []decoded, reapply bool, also func(*dbsqlc.Queries) error) ([]outcome, error) {
	var outcomes []outcome
	var err error
	for attempt := 1; ; attempt++ {
		if also == nil {
			// ApplyEvents is one statement: alone, it is its own transaction, which saves the
			// round trips of BEGIN and COMMIT.
			outcomes, err = applyEvents(ctx, dbsqlc.New(pool), evs, reapply)
			err = postgres.InterpretError(err)
		} else {
			err = postgres.InTx(ctx, pool, func(q *dbsqlc.Queries) error {
				var err error
				if outcomes, err = applyEvents(ctx, q, evs, reapply); err != nil {
					return err
				}
				return also(q)
			})
		}
		if err == nil || !isConflict(err) || attempt == 5 {
			return outcomes, err
		}
	}
}

// errDryRun rolls back a dry run's transaction.
var errDryRun = errors.New("dry run")

// previewTx computes what applyTx would do without writing anything: the same statements run in a
// transaction that is rolled back.
func previewTx(ctx context.Context, pool *pgxpool.Pool, evs []decoded, reapply bool) ([]outcome, error) {
	outcomes, err := applyTx(ctx, pool, evs, reapply, func(*dbsqlc.Queries) error { return errDryRun })
	if errors.Is(err, errDryRun) {
		return outcomes, nil
	}
	return nil, err
}

// isConflict reports a deadlock or serialization failure: the transaction may simply be run again.
func isConflict(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == "40P01" || pgErr.Code == "40001")
}

// parkMessage writes m to dead_letters with the reason it cannot apply. parked is false when the
// message is already parked and waiting for an operator.
func parkMessage(ctx context.Context, pool *pgxpool.Pool, m message, reason error) (parked bool, err error) {
	if m.Body == nil {
		m.Body = []byte{} // payload is NOT NULL: an empty message is parked as empty
	}
	_, err = dbsqlc.New(pool).InsertDeadLetter(ctx, dbsqlc.InsertDeadLetterParams{
		EventID:   pgtype.Text{String: m.EventID, Valid: m.EventID != ""},
		StreamSeq: int64(m.Seq),
		Subject:   m.Subject,
		Error:     reason.Error(),
		Payload:   m.Body,
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("parking stream message %d in dead_letters: %w", m.Seq, postgres.InterpretError(err))
	}
	return true, nil
}
