package worker

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/clerksync/clerksync/internal/event"
)

// This file plays Clerk for the tests: it builds user events shaped like Clerk's (from the
// fixtures in testdata/), publishes them with the stream contract's headers, and holds the
// reference fold the projection must equal. The reference is written from the contract, not from
// the worker's code.

// histEvent is one Clerk user event of a test history.
type histEvent struct {
	ID      string // svix-id
	Type    string // user.created, user.updated, user.deleted (or anything, for ignored types)
	ClerkID string
	At      time.Time // envelope timestamp: a delete's deleted_at
	// The user as of a created or updated event.
	CreatedAt *time.Time
	UpdatedAt time.Time
	Emails    []emailAddr
	PrimaryID *string
	Username  *string
	FirstName *string
	LastName  *string
	ImageURL  *string

	// An organization event (Type organization.*; ClerkID is the organization's id) also has
	// Name and Slug; a membership event (organizationMembership.*; ClerkID is the membership's
	// id) OrgID, UserID and Role, and FirstName for its public_user_data. Seconds writes the
	// envelope timestamp in seconds, as Clerk's OpenAPI examples do (At is then a whole second).
	Name    *string
	Slug    *string
	OrgID   string
	UserID  string
	Role    *string
	Seconds bool
}

type emailAddr struct{ ID, Address string }

var fixtures sync.Map // name → []byte

// fixture returns a fresh decoding of testdata/<name>.json, safe to modify.
func fixture(tb testing.TB, name string) map[string]any {
	tb.Helper()
	b, ok := fixtures.Load(name)
	if !ok {
		raw, err := os.ReadFile("testdata/" + name + ".json")
		if err != nil {
			tb.Fatalf("reading fixture: %v", err)
		}
		b, _ = fixtures.LoadOrStore(name, raw)
	}
	var m map[string]any
	if err := json.Unmarshal(b.([]byte), &m); err != nil {
		tb.Fatalf("decoding fixture %s: %v", name, err)
	}
	return m
}

var templates sync.Map // name → map[string]any, never modified

func template(tb testing.TB, name string) map[string]any {
	tb.Helper()
	if m, ok := templates.Load(name); ok {
		return m.(map[string]any)
	}
	m, _ := templates.LoadOrStore(name, fixture(tb, name))
	return m.(map[string]any)
}

// body is the webhook body Clerk would send for e: its published example with e's values.
func (e histEvent) body(tb testing.TB) []byte {
	tb.Helper()
	switch {
	case strings.HasPrefix(e.Type, "organizationMembership."):
		return e.membershipBody(tb)
	case strings.HasPrefix(e.Type, "organization."):
		return e.organizationBody(tb)
	}
	name := e.Type
	if name != "user.deleted" && name != "user.updated" {
		name = "user.created" // also the shape of an ignored user.* type
	}
	// Shallow copies of a decoded fixture: only top-level keys of the envelope and of data change.
	tmpl := template(tb, name)
	env := maps.Clone(tmpl)
	env["type"] = e.Type
	env["timestamp"] = e.At.UnixMilli()
	data := maps.Clone(tmpl["data"].(map[string]any))
	env["data"] = data
	data["id"] = e.ClerkID
	if e.Type != "user.deleted" {
		data["created_at"] = nil
		if e.CreatedAt != nil {
			data["created_at"] = e.CreatedAt.UnixMilli()
		}
		data["updated_at"] = e.UpdatedAt.UnixMilli()
		addrs := make([]any, len(e.Emails))
		template := data["email_addresses"].([]any)[0].(map[string]any)
		for i, a := range e.Emails {
			addr := maps.Clone(template)
			addr["id"], addr["email_address"] = a.ID, a.Address
			addrs[i] = addr
		}
		data["email_addresses"] = addrs
		data["primary_email_address_id"] = ptrValue(e.PrimaryID)
		data["username"] = ptrValue(e.Username)
		data["first_name"] = ptrValue(e.FirstName)
		data["last_name"] = ptrValue(e.LastName)
		data["image_url"] = ptrValue(e.ImageURL)
	}
	b, err := json.Marshal(env)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func ptrValue(s *string) any {
	if s == nil {
		return nil
	}
	return *s
}

func ptr[T any](v T) *T { return &v }

// ms is a Clerk time: milliseconds since the epoch.
func ms(n int64) time.Time { return time.UnixMilli(n).UTC() }

// created, updated and deleted build the events the table tests use.
func created(id, clerkID string, updatedAt int64) histEvent {
	e := updated(id, clerkID, updatedAt)
	e.Type = "user.created"
	return e
}

func updated(id, clerkID string, updatedAt int64) histEvent {
	return histEvent{
		ID: id, Type: "user.updated", ClerkID: clerkID,
		At: ms(updatedAt), CreatedAt: ptr(ms(1654012591514)), UpdatedAt: ms(updatedAt),
		Emails:    []emailAddr{{"idn_" + clerkID, clerkID + "@example.org"}},
		PrimaryID: ptr("idn_" + clerkID),
		FirstName: ptr("First " + id), LastName: ptr("Last"), ImageURL: ptr("https://img.clerk.com/" + id),
	}
}

func deleted(id, clerkID string, at int64) histEvent {
	return histEvent{ID: id, Type: "user.deleted", ClerkID: clerkID, At: ms(at)}
}

// userState is everything the projection holds about a user that the events decide, with its
// subscription and usage row: the wall-clock columns are left out.
type userState struct {
	UserID         uuid.UUID
	Email          *string
	Username       *string
	FirstName      *string
	LastName       *string
	ImageURL       *string
	ClerkData      any
	ClerkCreatedAt *time.Time
	ClerkUpdatedAt *time.Time
	VersionEventID *string
	DeletedAt      *time.Time
	SubscriptionID *uuid.UUID
	Tier           *string
	Status         *string
	Canceled       bool
	HasUsage       bool
	PeriodStart    *time.Time
	APICalls       int64
	Campaigns      int32
}

// live is the state a user must have when e is its winning version.
func live(t *testing.T, e histEvent) userState {
	t.Helper()
	var env struct{ Data any }
	if err := json.Unmarshal(e.body(t), &env); err != nil {
		t.Fatal(err)
	}
	s := base(e.ClerkID)
	s.ClerkData = env.Data
	s.Username, s.FirstName, s.LastName, s.ImageURL = e.Username, e.FirstName, e.LastName, e.ImageURL
	if e.PrimaryID != nil {
		for _, a := range e.Emails {
			if a.ID == *e.PrimaryID {
				s.Email = ptr(a.Address)
				break
			}
		}
	}
	s.ClerkCreatedAt = e.CreatedAt
	s.ClerkUpdatedAt = ptr(e.UpdatedAt)
	s.VersionEventID = ptr(e.ID)
	s.Status = ptr("active")
	s.PeriodStart = e.CreatedAt
	return s
}

// tombstone is the state of a user deleted at at.
func tombstone(clerkID string, at time.Time) userState {
	s := base(clerkID)
	s.DeletedAt = &at
	s.Status = ptr("canceled")
	s.Canceled = true
	return s
}

func base(clerkID string) userState {
	return userState{
		UserID:         uuid.NewSHA1(uuid.NameSpaceURL, []byte("clerk:"+clerkID)),
		SubscriptionID: ptr(uuid.NewSHA1(uuid.NameSpaceURL, []byte("clerk:"+clerkID+":subscription"))),
		Tier:           ptr("free"),
		HasUsage:       true,
	}
}

// fold is the reference: what the projection must hold after events, in any order and with any
// repetition. Per user, over the distinct svix-ids: any delete makes a tombstone at the earliest
// delete's timestamp; else the event with the greatest (updated_at, svix-id as bytes) wins.
// Types other than created, updated and deleted change nothing.
func fold(t *testing.T, events []histEvent) map[string]userState {
	t.Helper()
	byUser := map[string]map[string]histEvent{}
	for _, e := range events {
		switch e.Type {
		case "user.created", "user.updated", "user.deleted":
		default:
			continue
		}
		if byUser[e.ClerkID] == nil {
			byUser[e.ClerkID] = map[string]histEvent{}
		}
		byUser[e.ClerkID][e.ID] = e
	}
	want := make(map[string]userState, len(byUser))
	for clerkID, evs := range byUser {
		var firstDelete *time.Time
		var latest *histEvent
		for _, e := range evs {
			if e.Type == "user.deleted" {
				if firstDelete == nil || e.At.Before(*firstDelete) {
					firstDelete = ptr(e.At)
				}
				continue
			}
			// Go compares strings byte by byte, like COLLATE "C".
			if latest == nil || e.UpdatedAt.After(latest.UpdatedAt) ||
				(e.UpdatedAt.Equal(latest.UpdatedAt) && e.ID > latest.ID) {
				latest = &e
			}
		}
		if firstDelete != nil {
			want[clerkID] = tombstone(clerkID, *firstDelete)
		} else {
			want[clerkID] = live(t, *latest)
		}
	}
	return want
}

// readState reads every user's projection, keyed by clerk_user_id.
func readState(t *testing.T, pool *pgxpool.Pool) map[string]userState {
	t.Helper()
	rows, err := pool.Query(context.Background(), `
		SELECT u.clerk_user_id, u.user_id::text, u.email, u.username, u.first_name, u.last_name, u.image_url,
		       u.clerk_data, u.clerk_created_at, u.clerk_updated_at, u.version_event_id, u.deleted_at,
		       s.subscription_id::text, s.tier, s.status, s.canceled_at IS NOT NULL,
		       m.user_id IS NOT NULL, m.period_start, coalesce(m.api_calls, 0), coalesce(m.campaigns, 0)
		FROM users u
		LEFT JOIN subscriptions s ON s.user_id = u.user_id
		LEFT JOIN usage_metrics m ON m.user_id = u.user_id`)
	if err != nil {
		t.Fatalf("reading state: %v", err)
	}
	defer rows.Close()
	got := map[string]userState{}
	for rows.Next() {
		var s userState
		var clerkID, userID string
		var subID *string
		var data []byte
		if err := rows.Scan(&clerkID, &userID, &s.Email, &s.Username, &s.FirstName, &s.LastName, &s.ImageURL,
			&data, &s.ClerkCreatedAt, &s.ClerkUpdatedAt, &s.VersionEventID, &s.DeletedAt,
			&subID, &s.Tier, &s.Status, &s.Canceled, &s.HasUsage, &s.PeriodStart, &s.APICalls, &s.Campaigns); err != nil {
			t.Fatalf("reading state: %v", err)
		}
		s.UserID = uuid.MustParse(userID)
		if subID != nil {
			s.SubscriptionID = ptr(uuid.MustParse(*subID))
		}
		if data != nil {
			if err := json.Unmarshal(data, &s.ClerkData); err != nil {
				t.Fatal(err)
			}
		}
		for _, tp := range []**time.Time{&s.ClerkCreatedAt, &s.ClerkUpdatedAt, &s.DeletedAt, &s.PeriodStart} {
			if *tp != nil {
				*tp = ptr((**tp).UTC())
			}
		}
		got[clerkID] = s
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("reading state: %v", err)
	}
	return got
}

// genHistory draws an adversarial history for users named prefix_0…: creates (sometimes
// missing), updates whose updated_at often tie, svix-ids whose byte order differs from a
// locale's, primary emails that are null or dangling, and some users deleted once or twice.
func genHistory(r *rand.Rand, prefix string, users int) []histEvent {
	var events []histEvent
	// svix-ids are unique across histories (they carry the prefix) and tie-break in byte order.
	id := func() string {
		const alphabet = "aAbBzZ09_" // byte order differs from a locale's: 'B' < 'a' in C
		b := []byte("msg_" + prefix + "_")
		for range 6 {
			b = append(b, alphabet[r.IntN(len(alphabet))])
		}
		return string(b)
	}
	pick := func(options ...string) *string {
		if i := r.IntN(len(options) + 1); i < len(options) {
			return ptr(options[i])
		}
		return nil
	}
	for u := range users {
		clerkID := fmt.Sprintf("%s_%d", prefix, u)
		createdAt := ms(1700000000000 + r.Int64N(1e6))
		for v := range 1 + r.IntN(5) {
			typ := "user.updated"
			if v == 0 && r.IntN(5) > 0 {
				typ = "user.created"
			}
			updatedAt := createdAt.Add(time.Duration(r.IntN(4)) * time.Second)
			e := histEvent{
				ID: id(), Type: typ, ClerkID: clerkID, At: updatedAt,
				CreatedAt: ptr(createdAt), UpdatedAt: updatedAt,
				Username: pick("ada", "grace_h", "Ünïcødé"), FirstName: pick("Ada", "Grace"),
				LastName: pick("Lovelace", "Hopper"), ImageURL: pick("https://img.clerk.com/a", "https://img.clerk.com/b"),
			}
			for k := range r.IntN(3) {
				e.Emails = append(e.Emails, emailAddr{fmt.Sprintf("idn_%d", k), fmt.Sprintf("%s.%d@example.org", clerkID, k)})
			}
			e.PrimaryID = pick("idn_0", "idn_1", "idn_dangling")
			events = append(events, e)
		}
		if r.IntN(10) < 3 {
			for range 1 + r.IntN(2) {
				events = append(events, histEvent{ID: id(), Type: "user.deleted", ClerkID: clerkID,
					At: createdAt.Add(time.Duration(r.IntN(5)) * time.Second)})
			}
		}
	}
	// svix-ids are unique per history: redraw a clash (the alphabet is small).
	seen := map[string]bool{}
	for i := range events {
		for seen[events[i].ID] {
			events[i].ID = id()
		}
		seen[events[i].ID] = true
	}
	return events
}

// deliveries repeats each event 1–3 times and shuffles them: what Svix retries and JetStream
// redeliveries make of a history.
func deliveries(r *rand.Rand, events []histEvent) []histEvent {
	var out []histEvent
	for _, e := range events {
		for range 1 + r.IntN(3) {
			out = append(out, e)
		}
	}
	r.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

// split cuts events into batches of 1 to max.
func split(r *rand.Rand, events []histEvent, max int) [][]histEvent {
	var batches [][]histEvent
	for len(events) > 0 {
		n := min(1+r.IntN(max), len(events))
		batches = append(batches, events[:n])
		events = events[n:]
	}
	return batches
}

// publish appends e to the stream with the headers ingest sets. A resend has no Nats-Msg-Id, as
// if it came after the stream's duplicate window: it must be caught by processed_events.
func publish(t *testing.T, js jetstream.JetStream, e histEvent, resend bool) uint64 {
	t.Helper()
	return publishRaw(t, js, event.SubjectPrefix+e.Type, e.ID, e.body(t), resend)
}

func publishRaw(t *testing.T, js jetstream.JetStream, subject, svixID string, body []byte, resend bool) uint64 {
	t.Helper()
	msg := nats.NewMsg(subject)
	msg.Data = body
	if svixID != "" {
		if !resend {
			msg.Header.Set(event.HeaderMsgID, svixID)
		}
		msg.Header.Set(event.HeaderSvixID, svixID)
	}
	msg.Header.Set(event.HeaderSvixTimestamp, strconv.FormatInt(time.Now().Unix(), 10))
	msg.Header.Set(event.HeaderSvixSignature, "v1,dGVzdHMgZG8gbm90IHNpZ24gdGhlIHN0cmVhbQ==")
	msg.Header.Set(event.HeaderEventType, subject[len(event.SubjectPrefix):])
	msg.Header.Set(event.HeaderReceivedAt, time.Now().UTC().Format(time.RFC3339))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ack, err := js.PublishMsg(ctx, msg)
	if err != nil {
		t.Fatalf("publishing %s: %v", subject, err)
	}
	return ack.Sequence
}

// testLogger logs warnings and errors into the test's output.
func testLogger(t *testing.T) *slog.Logger {
	t.Helper()
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// waitFor polls cond until it holds, failing the test after timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// count runs a SELECT count(*) … query.
func count(t *testing.T, pool *pgxpool.Pool, query string, args ...any) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(context.Background(), query, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

// distinctIDs counts the distinct svix-ids of the applied event types in events.
func distinctIDs(events []histEvent) int {
	ids := map[string]bool{}
	for _, e := range events {
		switch e.Type {
		case "user.created", "user.updated", "user.deleted":
			ids[e.ID] = true
		}
	}
	return len(ids)
}

// sortedKeys is for stable failure messages.
func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}

// newDelivery is a message as a source that never redelivers reads it, parsed.
func newDelivery(seq uint64, subject, eventID string, body []byte) *delivery {
	d := &delivery{Seq: seq, Subject: subject, EventID: eventID, Body: body, attempt: 1}
	d.parse()
	return d
}

// applyRedelivering applies ds like applyOnce, but delivers what is to be retried again (with
// no delay) until every delivery has a verdict, as JetStream would redeliver it: a unique
// violation between two transactions inserting one new row at once is such a retry (see
// postgres.Classify).
func applyRedelivering(ctx context.Context, pool *pgxpool.Pool, ds []*delivery) ([]outcome, error) {
	a := &applier{pool: pool, logger: slog.New(slog.DiscardHandler), tally: newTally(newMetrics(prometheus.NewRegistry())),
		maxAttempts: 10, timeout: time.Minute}
	outcomes := make([]outcome, len(ds))
	pending := make([]int, len(ds))
	for i := range ds {
		pending[i] = i
	}
	for len(pending) > 0 {
		batch := make([]*delivery, len(pending))
		for k, i := range pending {
			batch[k] = ds[i]
		}
		results, err := a.apply(ctx, batch)
		if err != nil {
			return nil, err
		}
		var again []int
		for k, r := range results {
			i := pending[k]
			switch r.outcome {
			case outcomeRetried:
				ds[i].attempt++
				again = append(again, i)
			case outcomeDeadLettered, "":
				return nil, fmt.Errorf("delivery %d (seq %d): outcome %q", i, ds[i].Seq, r.outcome)
			default:
				outcomes[i] = r.outcome
			}
		}
		pending = again
	}
	return outcomes, nil
}

// applyOnce applies ds in one transaction through an applier that neither waits out an outage
// nor retries, and returns each one's outcome; any delivery parked or left without a verdict is
// an error.
func applyOnce(ctx context.Context, pool *pgxpool.Pool, ds []*delivery) ([]outcome, error) {
	a := &applier{pool: pool, logger: slog.New(slog.DiscardHandler), tally: newTally(newMetrics(prometheus.NewRegistry())),
		maxAttempts: 1, timeout: time.Minute}
	results, err := a.apply(ctx, ds)
	if err != nil {
		return nil, err
	}
	outcomes := make([]outcome, len(results))
	for i, r := range results {
		if r.outcome == outcomeDeadLettered || r.outcome == "" {
			return nil, fmt.Errorf("delivery %d (seq %d): outcome %q", i, ds[i].Seq, r.outcome)
		}
		outcomes[i] = r.outcome
	}
	return outcomes, nil
}
