package clerk_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/clerksync/clerksync/internal/clerk"
)

// TestParseOrganizationEventFixtures parses Clerk's published examples: the OpenAPI ones (envelope
// timestamp in seconds) and the dashboard event catalog's (milliseconds).
func TestParseOrganizationEventFixtures(t *testing.T) {
	t.Parallel()
	ignoreData := cmpopts.IgnoreFields(clerk.Organization{}, "Data")
	tests := []struct {
		file string
		want clerk.OrganizationEvent
	}{
		{"organization.created.json", clerk.OrganizationEvent{
			Type: clerk.OrganizationCreated, ClerkOrgID: "org_2g7np7Hrk0SN6kj5EDMLDaKNL0S",
			Timestamp: time.Unix(1716883200, 0).UTC(),
			Organization: &clerk.Organization{
				ID: "org_2g7np7Hrk0SN6kj5EDMLDaKNL0S", Name: ptr("Acme Corp"), Slug: ptr("acme-corp"),
				ImageURL: ptr("https://img.clerk.com/xxxxxx"), CreatedAt: ptr(time.UnixMilli(1716883200000).UTC()),
				UpdatedAt: time.UnixMilli(1716883200000).UTC(),
			},
		}},
		{"organization.updated.json", clerk.OrganizationEvent{
			Type: clerk.OrganizationUpdated, ClerkOrgID: "org_2g7np7Hrk0SN6kj5EDMLDaKNL0S",
			Timestamp: time.Unix(1716883200, 0).UTC(),
			Organization: &clerk.Organization{
				ID: "org_2g7np7Hrk0SN6kj5EDMLDaKNL0S", Name: ptr("Acme Corp Updated"), Slug: ptr("acme-corp-updated"),
				ImageURL: ptr("https://img.clerk.com/yyyyyy"), CreatedAt: ptr(time.UnixMilli(1716883200000).UTC()),
				UpdatedAt: time.UnixMilli(1716883500000).UTC(),
			},
		}},
		{"organization.deleted.json", clerk.OrganizationEvent{
			Type: clerk.OrganizationDeleted, ClerkOrgID: "org_2g7np7Hrk0SN6kj5EDMLDaKNL0S",
			Timestamp: time.Unix(1716883200, 0).UTC(),
		}},
		{"organization.created.event-catalog.json", clerk.OrganizationEvent{
			Type: clerk.OrganizationCreated, ClerkOrgID: "org_29w9IfBrPmcpi0IeBVaKtA7R94W",
			Timestamp: time.UnixMilli(1654013202977).UTC(),
			Organization: &clerk.Organization{
				ID: "org_29w9IfBrPmcpi0IeBVaKtA7R94W", Name: ptr("Acme Inc"), Slug: ptr("acme-inc"),
				ImageURL: ptr("https://img.clerk.com/xxxxxx"), CreatedAt: ptr(time.UnixMilli(1654013202977).UTC()),
				UpdatedAt: time.UnixMilli(1654013202977).UTC(),
			},
		}},
		{"organization.deleted.event-catalog.json", clerk.OrganizationEvent{
			Type: clerk.OrganizationDeleted, ClerkOrgID: "org_29w9IfBrPmcpi0IeBVaKtA7R94W",
			Timestamp: time.UnixMilli(1661861640000).UTC(),
		}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			t.Parallel()
			got, err := clerk.ParseOrganizationEvent(fixture(t, tt.file))
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got, ignoreData); diff != "" {
				t.Errorf("(-want +got)\n%s", diff)
			}
			if got.Organization != nil && !strings.Contains(string(got.Organization.Data), `"object"`) {
				t.Errorf("Data = %s, want the organization object", got.Organization.Data)
			}
		})
	}
}

func TestParseMembershipEventFixtures(t *testing.T) {
	t.Parallel()
	ignoreData := cmpopts.IgnoreFields(clerk.Membership{}, "Data")
	openapi := func(typ, role string, updated int64) clerk.MembershipEvent {
		return clerk.MembershipEvent{
			Type: typ, Timestamp: time.Unix(1716883200, 0).UTC(),
			Membership: &clerk.Membership{
				ID: "orgmem_2g7np7Hrk0SN6kj5EDMLDaKNL0S", OrgID: "org_2g7np7Hrk0SN6kj5EDMLDaKNL0S",
				UserID: "user_2h8op3Isl1QR7tKu5FGNfaLKEoU", Role: ptr(role),
				CreatedAt: ptr(time.UnixMilli(1716883200000).UTC()), UpdatedAt: time.UnixMilli(updated).UTC(),
			},
		}
	}
	tests := []struct {
		file string
		want clerk.MembershipEvent
	}{
		{"organizationMembership.created.json", openapi(clerk.MembershipCreated, "org:member", 1716883200000)},
		{"organizationMembership.updated.json", openapi(clerk.MembershipUpdated, "org:admin", 1716883500000)},
		{"organizationMembership.deleted.json", openapi(clerk.MembershipDeleted, "org:member", 1716883200000)},
		{"organizationMembership.created.event-catalog.json", clerk.MembershipEvent{
			Type: clerk.MembershipCreated, Timestamp: time.UnixMilli(1654013203217).UTC(),
			Membership: &clerk.Membership{
				ID: "orgmem_29w9IptNja3mP8GDXpquBwN2qR9", OrgID: "org_29w9IfBrPmcpi0IeBVaKtA7R94W",
				UserID: "user_29w83sxmDNGwOuEthce5gg56FcC", Role: ptr("admin"),
				CreatedAt: ptr(time.UnixMilli(1654013203217).UTC()), UpdatedAt: time.UnixMilli(1654013203217).UTC(),
			},
		}},
		{"organizationMembership.deleted.event-catalog.json", clerk.MembershipEvent{
			Type: clerk.MembershipDeleted, Timestamp: time.UnixMilli(1654013847054).UTC(),
			Membership: &clerk.Membership{
				ID: "orgmem_29wAbjiJs6aZuPq7AzmkW9dwmyl", OrgID: "org_29w9IfBrPmcpi0IeBVaKtA7R94W",
				UserID: "user_29wACSk1DjeUCwsS6SbbgIgilMy", Role: ptr("basic_member"),
				CreatedAt: ptr(time.UnixMilli(1654013847054).UTC()), UpdatedAt: time.UnixMilli(1654013847054).UTC(),
			},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			t.Parallel()
			got, err := clerk.ParseMembershipEvent(fixture(t, tt.file))
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got, ignoreData); diff != "" {
				t.Errorf("(-want +got)\n%s", diff)
			}
			if !strings.Contains(string(got.Membership.Data), `"public_user_data"`) {
				t.Errorf("Data = %s, want the membership object", got.Membership.Data)
			}
		})
	}
}

// TestParseOrganizationEventRules covers the envelope timestamp's units and what makes an
// organization or membership event malformed.
func TestParseOrganizationEventRules(t *testing.T) {
	t.Parallel()
	const org = `"id":"org_1","name":"N","slug":"s","image_url":null,"created_at":1700000000000,"updated_at":1700000000001`
	const mem = `"id":"orgmem_1","role":"org:admin","organization":{"id":"org_1"},"public_user_data":{"user_id":"user_1"},"created_at":1,"updated_at":2`
	tests := []struct {
		name string
		body string
		at   time.Time // the parsed timestamp, when it parses
		err  error
	}{
		{"org milliseconds", `{"type":"organization.created","timestamp":1700000000123,"data":{` + org + `}}`, time.UnixMilli(1700000000123).UTC(), nil},
		{"org seconds", `{"type":"organization.updated","timestamp":1716883200,"data":{` + org + `}}`, time.Unix(1716883200, 0).UTC(), nil},
		{"org just below 10^11 is seconds", `{"type":"organization.updated","timestamp":99999999999,"data":{` + org + `}}`, time.Unix(99999999999, 0).UTC(), nil},
		{"org 10^11 is milliseconds", `{"type":"organization.updated","timestamp":100000000000,"data":{` + org + `}}`, time.UnixMilli(100000000000).UTC(), nil},
		{"org snapshot", `{"type":"organization.snapshot","timestamp":1700000000123,"data":{` + org + `}}`, time.UnixMilli(1700000000123).UTC(), nil},
		{"org without timestamp", `{"type":"organization.updated","data":{` + org + `}}`, time.Time{}, nil},
		{"org delete without timestamp", `{"type":"organization.deleted","data":{"id":"org_1","deleted":true}}`, time.Time{}, clerk.ErrMalformed},
		{"org delete without id", `{"type":"organization.deleted","timestamp":1,"data":{"deleted":true}}`, time.Time{}, clerk.ErrMalformed},
		{"org without updated_at", `{"type":"organization.updated","timestamp":1,"data":{"id":"org_1"}}`, time.Time{}, clerk.ErrMalformed},
		{"org name not text", `{"type":"organization.updated","timestamp":1,"data":{` + org + `,"name":7}}`, time.Time{}, clerk.ErrMalformed},
		{"org id with NUL", `{"type":"organization.updated","timestamp":1,"data":{` + org + `,"id":"o\u0000"}}`, time.Time{}, clerk.ErrMalformed},
		{"org timestamp out of range", `{"type":"organization.deleted","timestamp":-99999999999999,"data":{"id":"org_1"}}`, time.Time{}, clerk.ErrMalformed},
		{"org timestamp not integer", `{"type":"organization.deleted","timestamp":1.5,"data":{"id":"org_1"}}`, time.Time{}, clerk.ErrMalformed},
		{"not an org event", `{"type":"organizationInvitation.created","timestamp":1,"data":{"id":"orginv_1"}}`, time.Time{}, clerk.ErrMalformed},
		{"membership seconds", `{"type":"organizationMembership.created","timestamp":1716883200,"data":{` + mem + `}}`, time.Unix(1716883200, 0).UTC(), nil},
		{"membership delete needs no updated_at", `{"type":"organizationMembership.deleted","timestamp":1700000000000,"data":{"id":"orgmem_1","organization":{"id":"org_1"},"public_user_data":{"user_id":"user_1"}}}`, time.UnixMilli(1700000000000).UTC(), nil},
		{"synthetic membership delete (only the id)", `{"type":"organizationMembership.deleted","timestamp":1700000000000,"data":{"object":"organization_membership","id":"orgmem_1","deleted":true}}`, time.UnixMilli(1700000000000).UTC(), nil},
		{"membership delete with a broken organization", `{"type":"organizationMembership.deleted","timestamp":1700000000000,"data":{"id":"orgmem_1","organization":"org_1"}}`, time.Time{}, clerk.ErrMalformed},
		{"membership delete without timestamp", `{"type":"organizationMembership.deleted","data":{` + mem + `}}`, time.Time{}, clerk.ErrMalformed},
		{"membership without updated_at", `{"type":"organizationMembership.updated","timestamp":1,"data":{"id":"orgmem_1","organization":{"id":"org_1"},"public_user_data":{"user_id":"user_1"}}}`, time.Time{}, clerk.ErrMalformed},
		{"membership without organization", `{"type":"organizationMembership.updated","timestamp":1,"data":{"id":"orgmem_1","public_user_data":{"user_id":"user_1"},"updated_at":2}}`, time.Time{}, clerk.ErrMalformed},
		{"membership without user", `{"type":"organizationMembership.updated","timestamp":1,"data":{"id":"orgmem_1","organization":{"id":"org_1"},"updated_at":2}}`, time.Time{}, clerk.ErrMalformed},
		{"membership user id empty", `{"type":"organizationMembership.updated","timestamp":1,"data":{"id":"orgmem_1","organization":{"id":"org_1"},"public_user_data":{"user_id":""},"updated_at":2}}`, time.Time{}, clerk.ErrMalformed},
		{"membership role not text", `{"type":"organizationMembership.updated","timestamp":1,"data":{` + mem + `,"role":{}}}`, time.Time{}, clerk.ErrMalformed},
		{"membership Organization is not organization", `{"type":"organizationMembership.updated","timestamp":1,"data":{"id":"orgmem_1","Organization":{"id":"org_1"},"public_user_data":{"user_id":"user_1"},"updated_at":2}}`, time.Time{}, clerk.ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var at time.Time
			var err error
			if strings.Contains(tt.body, `"organizationMembership.`) {
				var ev clerk.MembershipEvent
				ev, err = clerk.ParseMembershipEvent([]byte(tt.body))
				at = ev.Timestamp
			} else {
				var ev clerk.OrganizationEvent
				ev, err = clerk.ParseOrganizationEvent([]byte(tt.body))
				at = ev.Timestamp
			}
			if !errors.Is(err, tt.err) {
				t.Fatalf("error = %v, want %v", err, tt.err)
			}
			if err == nil && !at.Equal(tt.at) {
				t.Errorf("Timestamp = %v, want %v", at, tt.at)
			}
		})
	}
}

// FuzzParseOrganizationEvents: neither parser panics, and what parses has its keys.
func FuzzParseOrganizationEvents(f *testing.F) {
	for _, name := range []string{
		"organization.created.json", "organization.deleted.json", "organization.created.event-catalog.json",
		"organizationMembership.created.json", "organizationMembership.deleted.event-catalog.json",
	} {
		f.Add(fixture(f, name))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		if ev, err := clerk.ParseOrganizationEvent(body); err == nil {
			if ev.ClerkOrgID == "" || (ev.Type != clerk.OrganizationDeleted) != (ev.Organization != nil) {
				t.Fatalf("parsed %+v", ev)
			}
		} else if !errors.Is(err, clerk.ErrMalformed) {
			t.Fatalf("error %v does not wrap ErrMalformed", err)
		}
		if ev, err := clerk.ParseMembershipEvent(body); err == nil {
			m := ev.Membership
			if m == nil || m.ID == "" || (ev.Type != clerk.MembershipDeleted && (m.OrgID == "" || m.UserID == "")) {
				t.Fatalf("parsed %+v", ev)
			}
		} else if !errors.Is(err, clerk.ErrMalformed) {
			t.Fatalf("error %v does not wrap ErrMalformed", err)
		}
	})
}
