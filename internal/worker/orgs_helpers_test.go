package worker

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
)

// This file plays Clerk's organizations for the tests: organization and membership events shaped
// like Clerk's published examples (testdata/), and the reference fold of organizations and
// memberships, written from the contract (DESIGN.md, Worker → Organizations).

// envelope is a fixture's envelope with e's type and timestamp, and a shallow copy of its data.
func (e histEvent) envelope(tb testing.TB, fixture string) (env, data map[string]any) {
	tb.Helper()
	tmpl := template(tb, fixture)
	env = maps.Clone(tmpl)
	env["type"] = e.Type
	env["timestamp"] = e.At.UnixMilli()
	if e.Seconds {
		env["timestamp"] = e.At.Unix()
	}
	data = maps.Clone(tmpl["data"].(map[string]any))
	env["data"] = data
	return env, data
}

func (e histEvent) organizationBody(tb testing.TB) []byte {
	tb.Helper()
	fixture := "organization.created"
	if e.Type == "organization.deleted" {
		fixture = "organization.deleted"
	}
	env, data := e.envelope(tb, fixture)
	data["id"] = e.ClerkID
	if e.Type != "organization.deleted" {
		data["name"], data["slug"], data["image_url"] = ptrValue(e.Name), ptrValue(e.Slug), ptrValue(e.ImageURL)
		data["created_at"] = nil
		if e.CreatedAt != nil {
			data["created_at"] = e.CreatedAt.UnixMilli()
		}
		data["updated_at"] = e.UpdatedAt.UnixMilli()
	} else {
		delete(data, "slug")
	}
	return mustMarshal(tb, env)
}

func (e histEvent) membershipBody(tb testing.TB) []byte {
	tb.Helper()
	if e.Type == "organizationMembership.deleted" && e.OrgID == "" {
		// clerksync's synthetic delete (reconcile --prune): the id alone.
		env, _ := e.envelope(tb, "organizationMembership.created")
		env["data"] = map[string]any{"object": "organization_membership", "id": e.ClerkID, "deleted": true}
		return mustMarshal(tb, env)
	}
	env, data := e.envelope(tb, "organizationMembership.created")
	data["id"] = e.ClerkID
	data["role"] = ptrValue(e.Role)
	org := maps.Clone(data["organization"].(map[string]any))
	org["id"] = e.OrgID
	data["organization"] = org
	user := maps.Clone(data["public_user_data"].(map[string]any))
	user["user_id"], user["first_name"], user["identifier"] = e.UserID, ptrValue(e.FirstName), e.UserID+"@example.org"
	data["public_user_data"] = user
	data["created_at"] = nil
	if e.CreatedAt != nil {
		data["created_at"] = e.CreatedAt.UnixMilli()
	}
	data["updated_at"] = e.UpdatedAt.UnixMilli()
	return mustMarshal(tb, env)
}

func mustMarshal(tb testing.TB, v any) []byte {
	tb.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// orgState is everything the projection holds about an organization that the events decide.
type orgState struct {
	OrganizationID uuid.UUID
	Name           *string
	Slug           *string
	ImageURL       *string
	ClerkData      any
	ClerkCreatedAt *time.Time
	ClerkUpdatedAt *time.Time
	VersionEventID *string
	DeletedAt      *time.Time
}

// membershipState is everything the projection holds about a membership that the events decide,
// and whether the api's reads count it live.
type membershipState struct {
	MembershipID   uuid.UUID
	ClerkOrgID     string
	ClerkUserID    string
	Role           *string
	ClerkData      any
	ClerkCreatedAt *time.Time
	ClerkUpdatedAt *time.Time
	VersionEventID *string
	DeletedAt      *time.Time
	Live           bool
}

// winner folds the events of one object by the contract's version rule: the earliest delete (a
// tie to the smaller svix-id) when there is one, else the greatest (updated_at, svix-id as bytes).
func winner(evs map[string]histEvent, isDelete func(histEvent) bool) (e histEvent, tombstone bool) {
	var del, latest *histEvent
	for _, e := range evs {
		if isDelete(e) {
			if del == nil || e.At.Before(del.At) || (e.At.Equal(del.At) && e.ID < del.ID) {
				del = &e
			}
			continue
		}
		if latest == nil || e.UpdatedAt.After(latest.UpdatedAt) || (e.UpdatedAt.Equal(latest.UpdatedAt) && e.ID > latest.ID) {
			latest = &e
		}
	}
	if del != nil {
		return *del, true
	}
	return *latest, false
}

// foldOrgs is the reference fold of organizations and memberships: per object, over its distinct
// svix-ids, the winner's columns (a tombstone keeps its ids and deleted_at only; a membership
// tombstone its Clerk ids too). A membership whose user or organization is a tombstone has no
// public_user_data in clerk_data; it is live when it, its organization and its user are all live
// (seen, and not tombstones). users is the reference fold of the same history's users.
func foldOrgs(t *testing.T, events []histEvent, users map[string]userState) (map[string]orgState, map[string]membershipState) {
	t.Helper()
	group := func(prefix string) map[string]map[string]histEvent {
		by := map[string]map[string]histEvent{}
		for _, e := range events {
			if !folded(e.Type) || len(e.Type) <= len(prefix) || e.Type[:len(prefix)] != prefix {
				continue
			}
			if by[e.ClerkID] == nil {
				by[e.ClerkID] = map[string]histEvent{}
			}
			by[e.ClerkID][e.ID] = e
		}
		return by
	}
	data := func(e histEvent) map[string]any {
		var env struct{ Data map[string]any }
		if err := json.Unmarshal(e.body(t), &env); err != nil {
			t.Fatal(err)
		}
		return env.Data
	}
	orgs := map[string]orgState{}
	for id, evs := range group("organization.") {
		e, dead := winner(evs, func(e histEvent) bool { return e.Type == "organization.deleted" })
		s := orgState{OrganizationID: uuid.NewSHA1(uuid.NameSpaceURL, []byte("clerk:"+id))}
		if dead {
			s.DeletedAt = ptr(e.At)
		} else {
			s.Name, s.Slug, s.ImageURL = e.Name, e.Slug, e.ImageURL
			s.ClerkData = any(data(e))
			s.ClerkCreatedAt, s.ClerkUpdatedAt, s.VersionEventID = e.CreatedAt, ptr(e.UpdatedAt), ptr(e.ID)
		}
		orgs[id] = s
	}
	memberships := map[string]membershipState{}
	for id, evs := range group("organizationMembership.") {
		e, dead := winner(evs, func(e histEvent) bool { return e.Type == "organizationMembership.deleted" })
		s := membershipState{MembershipID: uuid.NewSHA1(uuid.NameSpaceURL, []byte("clerk:"+id))}
		// A membership's organization and user are those any of its events names (a synthetic
		// delete names none).
		for _, x := range evs {
			if x.OrgID != "" {
				s.ClerkOrgID, s.ClerkUserID = x.OrgID, x.UserID
				e.OrgID, e.UserID = x.OrgID, x.UserID
			}
		}
		org, orgSeen := orgs[e.OrgID]
		user, userSeen := users[e.UserID]
		orgDead, userDead := orgSeen && org.DeletedAt != nil, userSeen && user.DeletedAt != nil
		if dead {
			s.DeletedAt = ptr(e.At)
		} else {
			d := data(e)
			if orgDead || userDead {
				delete(d, "public_user_data")
			}
			s.Role, s.ClerkData = e.Role, any(d)
			s.ClerkCreatedAt, s.ClerkUpdatedAt, s.VersionEventID = e.CreatedAt, ptr(e.UpdatedAt), ptr(e.ID)
		}
		s.Live = !dead && orgSeen && !orgDead && userSeen && !userDead
		memberships[id] = s
	}
	return orgs, memberships
}

// readOrgs reads every organization and membership, keyed by Clerk id; a membership's Live is
// the join the api's reads make.
func readOrgs(t *testing.T, pool *pgxpool.Pool) (map[string]orgState, map[string]membershipState) {
	t.Helper()
	ctx := context.Background()
	orgs := map[string]orgState{}
	rows, err := pool.Query(ctx, `
		SELECT clerk_org_id, organization_id, name, slug, image_url, clerk_data, clerk_created_at,
		       clerk_updated_at, version_event_id, deleted_at
		FROM organizations`)
	if err != nil {
		t.Fatalf("reading organizations: %v", err)
	}
	for rows.Next() {
		var id string
		var s orgState
		var data []byte
		if err := rows.Scan(&id, &s.OrganizationID, &s.Name, &s.Slug, &s.ImageURL, &data, &s.ClerkCreatedAt,
			&s.ClerkUpdatedAt, &s.VersionEventID, &s.DeletedAt); err != nil {
			t.Fatalf("reading organizations: %v", err)
		}
		s.ClerkData = decodeData(t, data)
		utc(&s.ClerkCreatedAt, &s.ClerkUpdatedAt, &s.DeletedAt)
		orgs[id] = s
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("reading organizations: %v", err)
	}
	memberships := map[string]membershipState{}
	rows, err = pool.Query(ctx, `
		SELECT m.clerk_membership_id, m.membership_id, m.clerk_org_id, m.clerk_user_id, m.role,
		       m.clerk_data, m.clerk_created_at, m.clerk_updated_at, m.version_event_id, m.deleted_at,
		       m.deleted_at IS NULL AND o.deleted_at IS NULL AND o.clerk_org_id IS NOT NULL
		           AND u.deleted_at IS NULL AND u.clerk_user_id IS NOT NULL
		FROM organization_memberships m
		LEFT JOIN organizations o ON o.clerk_org_id = m.clerk_org_id
		LEFT JOIN users u ON u.clerk_user_id = m.clerk_user_id`)
	if err != nil {
		t.Fatalf("reading memberships: %v", err)
	}
	for rows.Next() {
		var id string
		var s membershipState
		var data []byte
		if err := rows.Scan(&id, &s.MembershipID, &s.ClerkOrgID, &s.ClerkUserID, &s.Role, &data,
			&s.ClerkCreatedAt, &s.ClerkUpdatedAt, &s.VersionEventID, &s.DeletedAt, &s.Live); err != nil {
			t.Fatalf("reading memberships: %v", err)
		}
		s.ClerkData = decodeData(t, data)
		utc(&s.ClerkCreatedAt, &s.ClerkUpdatedAt, &s.DeletedAt)
		memberships[id] = s
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("reading memberships: %v", err)
	}
	return orgs, memberships
}

func decodeData(t *testing.T, data []byte) any {
	t.Helper()
	if data == nil {
		return nil
	}
	var v map[string]any
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatal(err)
	}
	return any(v)
}

func utc(ts ...**time.Time) {
	for _, tp := range ts {
		if *tp != nil {
			*tp = ptr((**tp).UTC())
		}
	}
}

// org, orgDeleted, membership and membershipDeleted build the events the table tests use.
func org(id, clerkID string, updatedAt int64) histEvent {
	return histEvent{
		ID: id, Type: "organization.updated", ClerkID: clerkID, At: ms(updatedAt),
		CreatedAt: ptr(ms(1716883200000)), UpdatedAt: ms(updatedAt),
		Name: ptr("Org " + id), Slug: ptr("slug-" + clerkID), ImageURL: ptr("https://img.clerk.com/" + id),
	}
}

func orgDeleted(id, clerkID string, at int64) histEvent {
	return histEvent{ID: id, Type: "organization.deleted", ClerkID: clerkID, At: ms(at)}
}

func membership(id, clerkID, orgID, userID, role string, updatedAt int64) histEvent {
	return histEvent{
		ID: id, Type: "organizationMembership.updated", ClerkID: clerkID, OrgID: orgID, UserID: userID,
		At: ms(updatedAt), CreatedAt: ptr(ms(1716883200000)), UpdatedAt: ms(updatedAt),
		Role: ptr(role), FirstName: ptr("Jane"),
	}
}

func membershipDeleted(id, clerkID, orgID, userID string, at int64) histEvent {
	e := membership(id, clerkID, orgID, userID, "org:member", at-1000)
	e.Type, e.At = "organizationMembership.deleted", ms(at)
	return e
}

// genOrgHistory draws an adversarial history of users, organizations and memberships named after
// prefix: users as genHistory draws them, organizations some never seen and some deleted (their
// deletes sometimes timestamped in seconds), memberships between them (and users never seen)
// whose versions tie on updated_at, roles old and new, some deleted, some created after their
// user or organization was deleted.
func genOrgHistory(r *rand.Rand, prefix string) []histEvent {
	userPrefix := "user_" + prefix
	users := 1 + r.IntN(3)
	events := genHistory(r, userPrefix, users)
	n := 0
	id := func() string {
		n++
		const alphabet = "aAbBzZ09_"
		b := []byte(fmt.Sprintf("msg_%s_o%d_", prefix, n))
		for range 3 {
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
	base := 1700000000000 + r.Int64N(1e6)
	at := func() time.Time { return ms(base + int64(r.IntN(4))*1000) }
	orgs := 1 + r.IntN(2)
	for o := range orgs {
		clerkID := fmt.Sprintf("org_%s_%d", prefix, o)
		versions := r.IntN(4) // 0: an organization never seen
		for v := range versions {
			typ := "organization.updated"
			if v == 0 && r.IntN(3) > 0 {
				typ = "organization.created"
			}
			updatedAt := at()
			events = append(events, histEvent{
				ID: id(), Type: typ, ClerkID: clerkID, At: updatedAt, CreatedAt: ptr(ms(base)), UpdatedAt: updatedAt,
				Name: pick("Acme", "Ünïcødé Ltd"), Slug: pick("acme", "Acme", "b-corp"), ImageURL: pick("https://img.clerk.com/o"),
			})
		}
		if versions > 0 && r.IntN(10) < 3 {
			for range 1 + r.IntN(2) {
				e := histEvent{ID: id(), Type: "organization.deleted", ClerkID: clerkID, At: at()}
				if r.IntN(2) == 0 {
					e.At, e.Seconds = e.At.Truncate(time.Second), true
				}
				events = append(events, e)
			}
		}
	}
	for o := range orgs {
		for u := range users + 1 { // the last user is never seen
			if r.IntN(10) < 4 {
				continue
			}
			clerkID := fmt.Sprintf("orgmem_%s_%d_%d", prefix, o, u)
			orgID, userID := fmt.Sprintf("org_%s_%d", prefix, o), fmt.Sprintf("%s_%d", userPrefix, u)
			for v := range 1 + r.IntN(4) {
				typ := "organizationMembership.updated"
				if v == 0 && r.IntN(3) > 0 {
					typ = "organizationMembership.created"
				}
				updatedAt := at()
				events = append(events, histEvent{
					ID: id(), Type: typ, ClerkID: clerkID, OrgID: orgID, UserID: userID,
					At: updatedAt, CreatedAt: ptr(ms(base)), UpdatedAt: updatedAt,
					Role: pick("org:admin", "org:member", "admin", "basic_member"), FirstName: pick("Jane", "Zoë"),
				})
			}
			if r.IntN(10) < 3 {
				for range 1 + r.IntN(2) {
					e := histEvent{
						ID: id(), Type: "organizationMembership.deleted", ClerkID: clerkID, OrgID: orgID, UserID: userID,
						At: at(), CreatedAt: ptr(ms(base)), UpdatedAt: at(), Role: ptr("org:member"),
					}
					if r.IntN(2) == 0 {
						e.At, e.Seconds = e.At.Truncate(time.Second), true
					}
					if r.IntN(4) == 0 { // a synthetic delete: the id alone
						e.OrgID, e.UserID = "", ""
					}
					events = append(events, e)
				}
			}
		}
	}
	return events
}
