package worker

import (
	"context"
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/clerksync/clerksync/internal/event"
)

// orgLive is the state of an organization whose winning version is e.
func orgLive(t *testing.T, e histEvent) orgState {
	t.Helper()
	orgs, _ := foldOrgs(t, []histEvent{e}, nil)
	return orgs[e.ClerkID]
}

func orgTombstone(clerkID string, at time.Time) orgState {
	return orgState{OrganizationID: uuid.NewSHA1(uuid.NameSpaceURL, []byte("clerk:"+clerkID)), DeletedAt: &at}
}

// memLive is the state of a membership whose winning version is e: live or not, and with its
// public_user_data scrubbed or not.
func memLive(t *testing.T, e histEvent, live, scrubbed bool) membershipState {
	t.Helper()
	var env struct{ Data map[string]any }
	if err := json.Unmarshal(e.body(t), &env); err != nil {
		t.Fatal(err)
	}
	if scrubbed {
		delete(env.Data, "public_user_data")
	}
	return membershipState{
		MembershipID: uuid.NewSHA1(uuid.NameSpaceURL, []byte("clerk:"+e.ClerkID)),
		ClerkOrgID:   e.OrgID, ClerkUserID: e.UserID, Role: e.Role, ClerkData: any(env.Data),
		ClerkCreatedAt: e.CreatedAt, ClerkUpdatedAt: ptr(e.UpdatedAt), VersionEventID: ptr(e.ID), Live: live,
	}
}

func withIDs(s membershipState, orgID, userID string) membershipState {
	s.ClerkOrgID, s.ClerkUserID = orgID, userID
	return s
}

func memTombstone(e histEvent) membershipState {
	return membershipState{
		MembershipID: uuid.NewSHA1(uuid.NameSpaceURL, []byte("clerk:"+e.ClerkID)),
		ClerkOrgID:   e.OrgID, ClerkUserID: e.UserID, DeletedAt: ptr(e.At),
	}
}

// TestApplyOrganizationRules has one row per rule of the organizations and memberships
// projection (DESIGN.md, Worker → Organizations), each applied through the durable consumer in
// the batches given.
func TestApplyOrganizationRules(t *testing.T) {
	t.Parallel()
	const (
		u = "user_2h8op3Isl1QR7tKu5FGNfaLKEoU"
		o = "org_2g7np7Hrk0SN6kj5EDMLDaKNL0S"
		m = "orgmem_2g7np7Hrk0SN6kj5EDMLDaKNL0S"
	)
	user := created("msg_user", u, 1716883100000)
	userDel := deleted("msg_user_delete", u, 1716890000000)
	oc := org("msg_org_create", o, 1716883200000)
	oc.Type = "organization.created"
	ou := org("msg_org_update", o, 1716883500000)
	older := org("msg_org_older", o, 1716883300000)
	tieLow, tieHigh := org("msg_org_B", o, 1716883600000), org("msg_org_a", o, 1716883600000)
	od := orgDeleted("msg_org_delete", o, 1716890000000)
	odEarly := orgDeleted("msg_org_delete_early", o, 1716889000000)
	odSeconds := orgDeleted("msg_org_delete_seconds", o, 1716888000000)
	odSeconds.Seconds = true
	orgAfterDel := org("msg_org_after_delete", o, 1716900000000)

	mc := membership("msg_mem_create", m, o, u, "org:member", 1716883200000)
	mc.Type = "organizationMembership.created"
	promoted := membership("msg_mem_promote", m, o, u, "org:admin", 1716883500000)
	demotedOlder := membership("msg_mem_older", m, o, u, "org:member", 1716883400000)
	oldRole := membership("msg_mem_old_role", m, o, u, "basic_member", 1716883200000)
	md := membershipDeleted("msg_mem_delete", m, o, u, 1716890000000)
	memAfterDel := membership("msg_mem_after_delete", m, o, u, "org:admin", 1716900000000)
	gone := membershipDeleted("gone_"+m, m, "", "", 1716895000000) // reconcile --prune's: the id alone

	// A type under clerk.organization.> the worker does not fold (organizationInvitation.* is
	// outside the consumer's filter altogether: see TestConsumerFilterUpdatedInPlace).
	unknown := org("msg_org_unknown", o, 1716883200000)
	unknown.Type = "organization.archived"

	type (
		batches = [][]histEvent
		orgs    = map[string]orgState
		mems    = map[string]membershipState
	)
	tests := []struct {
		name    string
		batches batches
		orgs    orgs
		mems    mems
	}{
		{"organization.created makes the row",
			batches{{oc}}, orgs{o: orgLive(t, oc)}, mems{}},
		{"a newer organization.updated applies, an older changes nothing",
			batches{{oc}, {ou}, {older}}, orgs{o: orgLive(t, ou)}, mems{}},
		{"an organization tie on updated_at goes to the greater svix-id in bytes",
			batches{{tieHigh}, {tieLow}}, orgs{o: orgLive(t, tieHigh)}, mems{}},
		{"organization.deleted leaves a scrubbed tombstone at the earliest delete",
			batches{{oc}, {od}, {odEarly}}, orgs{o: orgTombstone(o, odEarly.At)}, mems{}},
		{"an envelope timestamp in seconds is read as seconds",
			batches{{od}, {odSeconds}}, orgs{o: orgTombstone(o, odSeconds.At)}, mems{}},
		{"nothing resurrects a deleted organization",
			batches{{od}, {oc}, {orgAfterDel}}, orgs{o: orgTombstone(o, od.At)}, mems{}},
		{"a membership before its user and organization is kept, not live",
			batches{{mc}}, orgs{}, mems{m: memLive(t, mc, false, false)}},
		{"a membership becomes live once its user and organization arrive, whatever the order",
			batches{{mc}, {user}, {oc}}, orgs{o: orgLive(t, oc)}, mems{m: memLive(t, mc, true, false)}},
		{"the role is kept as Clerk sends it",
			batches{{user, oc, oldRole}}, orgs{o: orgLive(t, oc)}, mems{m: memLive(t, oldRole, true, false)}},
		{"a newer membership version changes the role, an older one does not",
			batches{{user, oc}, {promoted}, {demotedOlder}, {mc}}, orgs{o: orgLive(t, oc)}, mems{m: memLive(t, promoted, true, false)}},
		{"organizationMembership.deleted leaves a tombstone at the envelope timestamp, role scrubbed",
			batches{{user, oc, mc}, {md}}, orgs{o: orgLive(t, oc)}, mems{m: memTombstone(md)}},
		{"nothing resurrects a deleted membership",
			batches{{md}, {user, oc, mc}, {memAfterDel}}, orgs{o: orgLive(t, oc)}, mems{m: memTombstone(md)}},
		{"a synthetic delete (the id alone) leaves a tombstone that keeps the membership's ids",
			batches{{user, oc, mc}, {gone}}, orgs{o: orgLive(t, oc)}, mems{m: withIDs(memTombstone(gone), o, u)}},
		{"a synthetic delete first: a later version fills in the ids, nothing else",
			batches{{gone}, {mc}, {promoted}}, orgs{}, mems{m: withIDs(memTombstone(gone), o, u)}},
		{"an organization's delete scrubs its memberships' copy of the user",
			batches{{user, oc, promoted}, {od}}, orgs{o: orgTombstone(o, od.At)}, mems{m: memLive(t, promoted, false, true)}},
		{"a user's delete scrubs its memberships' copy of the user",
			batches{{user, oc, promoted}, {userDel}}, orgs{o: orgLive(t, oc)}, mems{m: memLive(t, promoted, false, true)}},
		{"a membership after its user's delete has no copy of the user and is not live",
			batches{{userDel}, {oc}, {promoted}}, orgs{o: orgLive(t, oc)}, mems{m: memLive(t, promoted, false, true)}},
		{"a membership after its organization's delete has no copy of the user and is not live",
			batches{{oc}, {od}, {user}, {promoted}}, orgs{o: orgTombstone(o, od.At)}, mems{m: memLive(t, promoted, false, true)}},
		{"a membership and its user's delete in one batch",
			batches{{user, oc, promoted, userDel}}, orgs{o: orgLive(t, oc)}, mems{m: memLive(t, promoted, false, true)}},
		{"a late version for a deleted user's membership stays scrubbed",
			batches{{user, oc, mc}, {userDel}, {promoted}}, orgs{o: orgLive(t, oc)}, mems{m: memLive(t, promoted, false, true)}},
		{"duplicates inside and across batches are skipped",
			batches{{user, oc, mc, mc, promoted}, {promoted, oc}}, orgs{o: orgLive(t, oc)}, mems{m: memLive(t, promoted, true, false)}},
		{"an organization event type the worker does not fold is acknowledged and ignored",
			batches{{unknown}}, orgs{}, mems{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			deliver(t, b, b.consumer(t), tt.batches...)
			gotOrgs, gotMems := readOrgs(t, b.pool)
			if diff := cmp.Diff(tt.orgs, gotOrgs); diff != "" {
				t.Errorf("organizations (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.mems, gotMems); diff != "" {
				t.Errorf("memberships (-want +got):\n%s", diff)
			}
		})
	}
}

// TestOrganizationFixtures applies Clerk's published examples as Clerk sends them: the OpenAPI
// ones (envelope timestamps in seconds, org:admin and org:member) and the dashboard event
// catalog's (milliseconds, admin and basic_member).
func TestOrganizationFixtures(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c := b.consumer(t)
	for _, name := range []string{
		"organization.created", "organizationMembership.created", "organization.updated",
		"organizationMembership.updated", "organization.created.event-catalog",
		"organizationMembership.created.event-catalog", "organizationMembership.deleted.event-catalog",
		"organization.deleted.event-catalog",
	} {
		body, err := json.Marshal(fixture(t, name))
		if err != nil {
			t.Fatal(err)
		}
		var env struct{ Type string }
		if err := json.Unmarshal(body, &env); err != nil {
			t.Fatal(err)
		}
		publishRaw(t, b.js, "clerk."+env.Type, "msg_fixture_"+name, body, false)
		c.handle(context.Background(), fetch(t, c, 1))
	}
	orgs, mems := readOrgs(t, b.pool)
	if got := orgs["org_2g7np7Hrk0SN6kj5EDMLDaKNL0S"]; got.Name == nil || *got.Name != "Acme Corp Updated" || got.Slug == nil || *got.Slug != "acme-corp-updated" {
		t.Errorf("OpenAPI organization: %+v", got)
	}
	if got := orgs["org_29w9IfBrPmcpi0IeBVaKtA7R94W"]; got.DeletedAt == nil || !got.DeletedAt.Equal(ms(1661861640000)) || got.Name != nil {
		t.Errorf("event catalog organization: %+v, want a tombstone at 1661861640000", got)
	}
	if got := mems["orgmem_2g7np7Hrk0SN6kj5EDMLDaKNL0S"]; got.Role == nil || *got.Role != "org:admin" || got.ClerkUserID != "user_2h8op3Isl1QR7tKu5FGNfaLKEoU" {
		t.Errorf("OpenAPI membership: %+v", got)
	}
	if got := mems["orgmem_29w9IptNja3mP8GDXpquBwN2qR9"]; got.Role == nil || *got.Role != "admin" ||
		got.ClerkData.(map[string]any)["public_user_data"] != nil {
		t.Errorf("event catalog membership of a deleted organization: %+v, want role admin and no public_user_data", got)
	}
	if got := mems["orgmem_29wAbjiJs6aZuPq7AzmkW9dwmyl"]; got.DeletedAt == nil || !got.DeletedAt.Equal(ms(1654013847054)) || got.Role != nil {
		t.Errorf("event catalog membership delete: %+v", got)
	}
}

// TestConsumerFilterUpdatedInPlace: a durable consumer from a release that filtered clerk.user.>
// alone is updated in place at start: it keeps its position (what it acknowledged is not
// delivered again) and takes organization and membership events from then on.
func TestConsumerFilterUpdatedInPlace(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	stream, err := b.js.Stream(ctx, event.Stream)
	if err != nil {
		t.Fatal(err)
	}
	old, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable: b.cfg.Consumer, FilterSubject: event.UserSubjects,
		DeliverPolicy: jetstream.DeliverAllPolicy, AckPolicy: jetstream.AckExplicitPolicy,
	})
	if err != nil {
		t.Fatal(err)
	}
	publish(t, b.js, created("msg_old_user", "user_old", 1700000000000), false)
	msgs, err := old.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for msg := range msgs.Messages() {
		if err := msg.DoubleAck(ctx); err != nil {
			t.Fatal(err)
		}
	}

	c := b.consumer(t) // ensureConsumer, as Run calls it
	info, err := c.cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.FilterSubject != "" || !slices.Equal(info.Config.FilterSubjects, event.WorkerSubjects()) {
		t.Errorf("filter %q %q, want %q", info.Config.FilterSubject, info.Config.FilterSubjects, event.WorkerSubjects())
	}
	if info.AckFloor.Stream == 0 {
		t.Errorf("the consumer lost its position: %+v", info.AckFloor)
	}
	u := created("msg_user", "user_2h8op3Isl1QR7tKu5FGNfaLKEoU", 1700000000000)
	oc := org("msg_org", "org_2g7np7Hrk0SN6kj5EDMLDaKNL0S", 1700000000000)
	mc := membership("msg_mem", "orgmem_1", oc.ClerkID, u.ClerkID, "org:admin", 1700000000000)
	publishRaw(t, b.js, "clerk.session.created", "msg_session", []byte(`{"type":"session.created","data":{"id":"sess_1"}}`), false)
	invitation, err := json.Marshal(fixture(t, "organizationInvitation.created"))
	if err != nil {
		t.Fatal(err)
	}
	publishRaw(t, b.js, "clerk.organizationInvitation.created", "msg_invitation", invitation, false)
	deliver(t, b, c, []histEvent{u, oc, mc})
	if n := count(t, b.pool, `SELECT count(*) FROM processed_events`); n != 3 {
		t.Errorf("%d events in the ledger, want the 3 sent after the update (the acknowledged one is not delivered again)", n)
	}
	_, mems := readOrgs(t, b.pool)
	if !mems["orgmem_1"].Live {
		t.Errorf("membership: %+v, want live", mems["orgmem_1"])
	}
}
