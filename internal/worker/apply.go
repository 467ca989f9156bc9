package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/clerksync/clerksync/internal/clerk"
	"github.com/clerksync/clerksync/internal/event"
	"github.com/clerksync/clerksync/internal/postgres"
	"github.com/clerksync/clerksync/internal/postgres/dbsqlc"
)

// delivery is one stream message on its way to a verdict, whichever source read it: the durable
// consumer, a replay, a dead letter being retried, or a MaxDeliver advisory. parse fills in what
// it carries; the source fills in how to settle it.
type delivery struct {
	Seq     uint64
	Subject string
	EventID string // the svix-id
	Body    []byte

	// Type is the event type ("" when the body has none); user, org and membership hold the
	// parsed event (one of them at most: none for a type the worker does not fold, which is
	// ignored, and for poison); poison says why it can never apply.
	Type       string
	user       *clerk.UserEvent
	org        *clerk.OrganizationEvent
	membership *clerk.MembershipEvent
	poison     error

	// attempt is how many times the message was delivered, this time included (1 for a source
	// that never delivers twice).
	attempt uint64
	// deadLetter is the dead_letters row a retry re-applies, marked retried in the transaction
	// that applies it.
	deadLetter int64
	// msg is the durable consumer's message, acked, NAKed or terminated on its result.
	msg jetstream.Msg
}

// parse reads what the fold needs from d's body, with the parser of the kind its subject names.
// A message that can never apply gets a poison error; one of a type the worker does not fold gets
// neither an event nor an error.
func (d *delivery) parse() {
	var err error
	switch {
	case strings.HasPrefix(d.Subject, event.SubjectPrefix+"organizationMembership."):
		var ev clerk.MembershipEvent
		if ev, err = clerk.ParseMembershipEvent(d.Body); err == nil {
			d.Type, d.membership = ev.Type, &ev
		}
	case strings.HasPrefix(d.Subject, event.SubjectPrefix+"organization."):
		var ev clerk.OrganizationEvent
		if ev, err = clerk.ParseOrganizationEvent(d.Body); err == nil {
			d.Type, d.org = ev.Type, &ev
		}
	default:
		var ev clerk.UserEvent
		if ev, err = clerk.ParseUserEvent(d.Body); err == nil {
			d.Type, d.user = ev.Type, &ev
		}
	}
	if err == nil {
		if d.EventID == "" {
			d.user, d.org, d.membership = nil, nil, nil
			d.poison = fmt.Errorf("message has no %s header: it cannot be recorded in processed_events", event.HeaderSvixID)
		}
		return
	}
	// Only a failure needs the envelope, to tell an event type the worker does not fold (ignored)
	// from a broken one (poison).
	env, envErr := clerk.ParseEnvelope(d.Body)
	if envErr != nil {
		d.poison = fmt.Errorf("parsing event: %w", envErr)
		return
	}
	d.Type = env.Type
	if folded(env.Type) {
		d.poison = fmt.Errorf("parsing %s: %w", env.Type, err)
	}
}

// parsed reports whether d carries an event the worker folds.
func (d *delivery) parsed() bool { return d.user != nil || d.org != nil || d.membership != nil }

// timestamp is the envelope timestamp of d's event (zero when it has none).
func (d *delivery) timestamp() time.Time {
	switch {
	case d.user != nil:
		return d.user.Timestamp
	case d.org != nil:
		return d.org.Timestamp
	case d.membership != nil:
		return d.membership.Timestamp
	}
	return time.Time{}
}

// key is what partitions deliveries between lanes, so that no two transactions in flight in one
// worker touch one object: the user a user event is about, and the organization of an
// organization or membership event (so an organization's tombstone and the scrub of its
// memberships share a lane with their writes). A user's tombstone also scrubs its memberships,
// which may be in flight in another lane: LockFoldKeys orders those two (see applier.fold).
func (d *delivery) key() string {
	switch {
	case d.user != nil:
		return d.user.ClerkUserID
	case d.org != nil:
		return d.org.ClerkOrgID
	case d.membership != nil:
		if m := d.membership.Membership; m.OrgID != "" {
			return m.OrgID
		}
		return d.membership.Membership.ID // a synthetic delete names no organization
	}
	return d.EventID
}

// folded reports whether the worker folds events of type typ.
func folded(typ string) bool {
	switch typ {
	case clerk.UserCreated, clerk.UserUpdated, clerk.UserSnapshot, clerk.UserDeleted,
		clerk.OrganizationCreated, clerk.OrganizationUpdated, clerk.OrganizationSnapshot, clerk.OrganizationDeleted,
		clerk.MembershipCreated, clerk.MembershipUpdated, clerk.MembershipSnapshot, clerk.MembershipDeleted:
		return true
	}
	return false
}

// outcome is what became of one message; it is also the "outcome" label of the events metric.
type outcome string

const (
	outcomeApplied      outcome = "applied"       // its version is now the user's row
	outcomeDuplicate    outcome = "duplicate"     // its svix-id was already in processed_events
	outcomeStale        outcome = "stale"         // recorded, but a newer version (or a tombstone) wins
	outcomeIgnored      outcome = "ignored"       // an event type the worker does not apply
	outcomeDeadLettered outcome = "dead_lettered" // parked in dead_letters (or, in a dry run, would be)
	outcomeRetried      outcome = "retried"       // failed with Postgres reachable: to be delivered again later
)

// result is the verdict on one delivery. An empty outcome means none was reached: the worker
// stopped while Postgres was out of reach, and the message stays unsettled.
type result struct {
	outcome outcome
	// retryIn is how long an outcomeRetried message waits before its next delivery.
	retryIn time.Duration
}

// errStopping means the worker was asked to stop while Postgres was out of reach: the deliveries
// without a verdict stay unsettled, and JetStream delivers them again after AckWait.
var errStopping = errors.New("stopping")

// applier is the one path from deliveries to verdicts, whatever their source: it parks poison,
// applies the rest in one transaction, splits a failing transaction until the failing events
// stand alone, retries or parks those, waits out a Postgres outage, and counts every verdict.
// Sources only read messages and settle the results.
type applier struct {
	pool   *pgxpool.Pool
	logger *slog.Logger
	tally  *tally
	// maxAttempts: an event failing with Postgres reachable on its maxAttempts-th delivery is
	// parked; before, it is retried later. 1 parks at once (sources that never redeliver).
	maxAttempts               int
	retryDelay, retryMaxDelay time.Duration
	// timeout bounds one transaction.
	timeout time.Duration
	// reapply folds events already in processed_events again, rewriting equal versions.
	reapply bool
	// dryRun runs every transaction and rolls it back, and parks nothing.
	dryRun bool
	// waitForPostgres, when set, waits until Postgres answers again (errStopping when ctx ends
	// first), holding ds; when nil, an outage ends apply with the error.
	waitForPostgres func(ctx context.Context, ds []*delivery) error
}

// apply takes ds to their verdicts, one result each. It returns an error, with the results
// reached so far, only when Postgres is out of reach and the applier does not wait, or when ctx
// ended while it waited (errStopping).
func (a *applier) apply(ctx context.Context, ds []*delivery) ([]result, error) {
	results := make([]result, len(ds))
	var fold []int // what goes into a transaction
	for i, d := range ds {
		switch {
		case d.poison != nil:
			r, err := a.park(ctx, d, d.poison, "poison")
			if err != nil {
				return results, err
			}
			results[i] = r
		case !d.parsed() && d.deadLetter == 0:
			results[i] = a.verdict(d, result{outcome: outcomeIgnored}, time.Time{})
		default:
			fold = append(fold, i)
		}
	}
	return results, a.commitOrSplit(ctx, ds, fold, results)
}

// commitOrSplit applies the deliveries ds[idx] in one transaction. When it fails with Postgres
// reachable, each half is applied on its own, down to a lone failing delivery, which is retried
// later or parked: one bad event holds back none of the others, and finding it takes a logarithmic
// number of transactions.
func (a *applier) commitOrSplit(ctx context.Context, ds []*delivery, idx []int, results []result) error {
	if len(idx) == 0 {
		return nil
	}
	batch := make([]*delivery, len(idx))
	for k, i := range idx {
		batch[k] = ds[i]
	}
	var outcomes []outcome
	err := a.untilReachable(ctx, batch, func(ctx context.Context) (err error) {
		outcomes, err = a.commit(ctx, batch)
		return err
	})
	switch {
	case err == nil:
		committed := time.Now()
		for k, i := range idx {
			results[i] = a.verdict(ds[i], result{outcome: outcomes[k]}, committed)
		}
		return nil
	case errors.Is(err, errStopping) || postgres.IsUnavailable(err):
		return err
	case len(idx) > 1:
		a.logger.Warn("batch failed: applying it in halves", "events", len(idx), "err", err)
		half := len(idx) / 2
		if err := a.commitOrSplit(ctx, ds, idx[:half], results); err != nil {
			return err
		}
		return a.commitOrSplit(ctx, ds, idx[half:], results)
	}
	d, i := ds[idx[0]], idx[0]
	if postgres.Classify(err) == postgres.FaultPermanent {
		results[i], err = a.park(ctx, d, fmt.Errorf("cannot apply: %w", err), "poison")
		return err
	}
	if d.attempt >= uint64(a.maxAttempts) { //nolint:gosec // G115: at least 1 (Config.check; 1 for replay and retry)
		reason := err
		if a.maxAttempts > 1 {
			reason = fmt.Errorf("failed %d times, last: %w", d.attempt, err)
		}
		results[i], err = a.park(ctx, d, reason, "max_attempts")
		return err
	}
	r := result{outcome: outcomeRetried, retryIn: backoff(a.retryDelay, a.retryMaxDelay, d.attempt)}
	a.logger.Warn("event failed: retrying later", "seq", d.Seq, "event_id", d.EventID, "type", d.Type,
		"attempt", d.attempt, "max_attempts", a.maxAttempts, "retry_in", r.retryIn, "err", err)
	results[i] = a.verdict(d, r, time.Time{})
	return nil
}

// commit applies ds (none of them poison) in one transaction and returns each one's outcome. A
// batch that one statement folds is that statement alone, its own implicit transaction (no BEGIN
// and COMMIT round trips); a batch that needs more (see needsTx), a dry run, or a batch of dead
// letters to mark retried, gets an explicit one. A deadlock or
// serialization failure between workers is retried at once.
func (a *applier) commit(ctx context.Context, ds []*delivery) ([]outcome, error) {
	var retried []int64
	for _, d := range ds {
		if d.deadLetter != 0 {
			retried = append(retried, d.deadLetter)
		}
	}
	for attempt := 1; ; attempt++ {
		var outcomes []outcome
		var err error
		if !a.dryRun && len(retried) == 0 && !needsTx(ds) {
			outcomes, err = a.fold(ctx, dbsqlc.New(a.pool), ds)
		} else {
			err = pgx.BeginFunc(ctx, a.pool, func(tx pgx.Tx) error {
				q := dbsqlc.New(tx)
				var err error
				if outcomes, err = a.fold(ctx, q, ds); err != nil {
					return err
				}
				if len(retried) > 0 {
					if _, err := q.MarkDeadLettersRetried(ctx, retried); err != nil {
						return fmt.Errorf("marking dead letters retried: %w", err)
					}
				}
				if a.dryRun {
					return errRollback
				}
				return nil
			})
			if errors.Is(err, errRollback) {
				err = nil
			}
		}
		if err == nil || postgres.Classify(err) != postgres.FaultConflict || attempt == 5 {
			return outcomes, err
		}
	}
}

// errRollback ends a dry run's transaction.
var errRollback = errors.New("dry run: rolled back")

// fold runs the fold statement of each kind of event in ds with q and returns each delivery's
// outcome; a new kind of object adds its statement here. Deliveries with no event (dead letters
// of an ignored type) are ignored. More than one statement must run in one transaction
// (needsTx), in this order, the lock order every worker shares:
//
//  1. LockFoldKeys, when the batch has membership versions (a shared lock on each user and
//     organization they name) or user or organization deletes (an exclusive lock on each), every
//     lock in one statement in key order;
//  2. the users (ApplyEvents), then the organizations, then the memberships, each statement
//     writing the ledger in svix-id order and its rows in Clerk id order;
//  3. ScrubMemberships for the batch's deleted users and organizations, rows in membership_id
//     order.
//
// A membership write and a tombstone that must scrub it therefore never run at once: whichever
// commits second sees the other (its statements start after the lock is granted), so the
// personal data copied into a membership is gone once its user or organization is a tombstone,
// whatever the order of their events and of the workers' transactions.
func (a *applier) fold(ctx context.Context, q *dbsqlc.Queries, ds []*delivery) ([]outcome, error) {
	outcomes := make([]outcome, len(ds))
	var users, orgs, memberships []*delivery
	var usersAt, orgsAt, membershipsAt []int
	var locks dbsqlc.LockFoldKeysParams
	var scrub dbsqlc.ScrubMembershipsParams
	for i, d := range ds {
		switch {
		case d.user != nil:
			users, usersAt = append(users, d), append(usersAt, i)
			if d.user.User == nil {
				locks.Names, locks.Exclusive = append(locks.Names, "user:"+d.user.ClerkUserID), append(locks.Exclusive, true)
				scrub.ClerkUserIds = append(scrub.ClerkUserIds, d.user.ClerkUserID)
			}
		case d.org != nil:
			orgs, orgsAt = append(orgs, d), append(orgsAt, i)
			if d.org.Organization == nil {
				locks.Names, locks.Exclusive = append(locks.Names, "org:"+d.org.ClerkOrgID), append(locks.Exclusive, true)
				scrub.ClerkOrgIds = append(scrub.ClerkOrgIds, d.org.ClerkOrgID)
			}
		case d.membership != nil:
			memberships, membershipsAt = append(memberships, d), append(membershipsAt, i)
			// A delete writes no copy of the user: it needs no lock (and a synthetic one names
			// neither the user nor the organization).
			if m := d.membership.Membership; d.Type != clerk.MembershipDeleted {
				locks.Names = append(locks.Names, "user:"+m.UserID, "org:"+m.OrgID)
				locks.Exclusive = append(locks.Exclusive, false, false)
			}
		default:
			outcomes[i] = outcomeIgnored
		}
	}
	// Membership writers take their shared locks first, for the whole transaction; deleters take
	// their exclusive ones only just before the scrub, so that deletes in lanes running at once do
	// not wait for each other's whole transaction (they meet only in the short scrub), while a
	// scrub still waits for, and then sees, every membership written meanwhile. Two batches that
	// each hold a shared lock the other wants exclusively deadlock; Postgres breaks the cycle and
	// the transaction runs again (a conflict).
	shared, exclusive := splitLocks(locks)
	if len(shared.Names) > 0 {
		if err := q.LockFoldKeys(ctx, shared); err != nil {
			return nil, fmt.Errorf("locking users and organizations: %w", err)
		}
	}
	for _, kind := range []struct {
		evs  []*delivery
		at   []int
		fold func(context.Context, *dbsqlc.Queries, []*delivery, bool) ([]outcome, error)
	}{
		{users, usersAt, foldUsers},
		{orgs, orgsAt, foldOrganizations},
		{memberships, membershipsAt, foldMemberships},
	} {
		if len(kind.evs) == 0 {
			continue
		}
		folded, err := kind.fold(ctx, q, kind.evs, a.reapply)
		if err != nil {
			return nil, err
		}
		for k, i := range kind.at {
			outcomes[i] = folded[k]
		}
	}
	if len(scrub.ClerkUserIds) > 0 || len(scrub.ClerkOrgIds) > 0 {
		if scrub.ClerkUserIds == nil {
			scrub.ClerkUserIds = []string{}
		}
		if scrub.ClerkOrgIds == nil {
			scrub.ClerkOrgIds = []string{}
		}
		if err := q.LockFoldKeys(ctx, exclusive); err != nil {
			return nil, fmt.Errorf("locking deleted users and organizations: %w", err)
		}
		if _, err := q.ScrubMemberships(ctx, scrub); err != nil {
			return nil, fmt.Errorf("scrubbing memberships: %w", err)
		}
	}
	return outcomes, nil
}

// needsTx reports whether fold runs more than one statement for ds: when it has more than one
// kind of event, a membership event or a delete (see fold). A batch of user or organization
// upserts alone is one statement.
// splitLocks separates the shared locks of a batch's membership writes from the exclusive ones
// of its deletes.
func splitLocks(l dbsqlc.LockFoldKeysParams) (shared, exclusive dbsqlc.LockFoldKeysParams) {
	for i, name := range l.Names {
		if l.Exclusive[i] {
			exclusive.Names, exclusive.Exclusive = append(exclusive.Names, name), append(exclusive.Exclusive, true)
		} else {
			shared.Names, shared.Exclusive = append(shared.Names, name), append(shared.Exclusive, false)
		}
	}
	return shared, exclusive
}

func needsTx(ds []*delivery) bool {
	var users, orgs bool
	for _, d := range ds {
		switch {
		case d.membership != nil:
			return true
		case d.user != nil:
			if d.user.User == nil {
				return true
			}
			users = true
		case d.org != nil:
			if d.org.Organization == nil {
				return true
			}
			orgs = true
		}
	}
	return users && orgs
}

// park writes d to dead_letters with the reason it cannot apply (waiting out a Postgres outage)
// and returns its verdict. A message already parked and not yet retried is not parked twice; a
// dry run parks nothing.
func (a *applier) park(ctx context.Context, d *delivery, reason error, why string) (result, error) {
	parked := false
	if !a.dryRun {
		body := d.Body
		if body == nil {
			body = []byte{} // payload is NOT NULL: an empty message is parked as empty
		}
		err := a.untilReachable(ctx, []*delivery{d}, func(ctx context.Context) error {
			_, err := dbsqlc.New(a.pool).InsertDeadLetter(ctx, dbsqlc.InsertDeadLetterParams{
				EventID:   pgtype.Text{String: d.EventID, Valid: d.EventID != ""},
				StreamSeq: int64(d.Seq), //nolint:gosec // G115: a stream sequence counts messages from 1, far below 2^63
				Subject:   d.Subject,
				Error:     reason.Error(),
				Payload:   body,
			})
			parked = err == nil
			if errors.Is(err, pgx.ErrNoRows) {
				return nil // already parked, waiting for an operator
			}
			return err
		})
		if err != nil {
			if !errors.Is(err, errStopping) {
				err = fmt.Errorf("parking stream message %d in dead_letters: %w", d.Seq, err)
			}
			return result{}, err
		}
	}
	if parked {
		a.tally.parked(why)
	}
	msg := "message parked in dead_letters"
	switch {
	case a.dryRun:
		msg = "message cannot apply (dry run: not parked)"
	case !parked:
		msg = "message cannot apply: already in dead_letters"
	}
	a.logger.Error(msg, "seq", d.Seq, "subject", d.Subject, "event_id", d.EventID, "reason", why, "err", reason)
	return a.verdict(d, result{outcome: outcomeDeadLettered}, time.Time{}), nil
}

// summaryOf returns the outcomes counted so far, with what the source counted itself (messages
// read, the last sequence).
func (a *applier) summaryOf(source Summary) Summary {
	sum := a.tally.summary()
	sum.Read, sum.LastSeq = source.Read, source.LastSeq
	return sum
}

// verdict counts r, the one place outcomes are counted, and returns it.
func (a *applier) verdict(d *delivery, r result, committed time.Time) result {
	a.tally.add(d, r.outcome, committed)
	return r
}

// untilReachable runs fn until it succeeds or fails with Postgres reachable, waiting out an
// outage in between when the applier waits (ds are the deliveries fn works for). fn gets a
// context that outlives ctx, so a transaction under way when the worker stops is finished.
func (a *applier) untilReachable(ctx context.Context, ds []*delivery, fn func(context.Context) error) error {
	for {
		fnCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.timeout)
		err := fn(fnCtx)
		cancel()
		if !postgres.IsUnavailable(err) || a.waitForPostgres == nil {
			return err
		}
		a.logger.Warn("postgres unavailable: holding the batch until it is back", "messages", len(ds), "err", err)
		if err := a.waitForPostgres(ctx, ds); err != nil {
			return err
		}
	}
}

// backoff is the delay before delivery attempt+1: base doubled per attempt, at most limit.
func backoff(base, limit time.Duration, attempt uint64) time.Duration {
	if attempt < 1 {
		attempt = 1
	}
	d := float64(base) * math.Pow(2, float64(attempt-1))
	if d > float64(limit) {
		return limit
	}
	return time.Duration(d)
}
