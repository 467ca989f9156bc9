package api

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/clerksync/clerksync/internal/api/apitest"
	"github.com/clerksync/clerksync/internal/session/sessiontest"
)

// orgWorld is the organizations the organization tests share: ada is an admin of org_acme (slug
// "acme") and a member of org_zeta (slug "Zeta": before "acme" in bytes), her membership of
// org_gone outlived the organization's delete, her membership of org_left was deleted, and
// org_nameless has no slug or name. org_acme also has bob (member), carol (a deleted user), dave
// (a deleted membership) and eve (a user not synced yet).
func orgWorld(t *testing.T, b *bundle) { t.Helper(); orgWorldB(t, b) }

func orgWorldB(t testing.TB, b *bundle) {
	t.Helper()
	ctx := context.Background()
	b.syncUser(t, ada())
	bob := user{id: "user_2bob", fields: map[string]any{"first_name": "Bob", "image_url": "https://img.clerk.com/bob.png"},
		createdAt: time.Date(2024, 2, 1, 0, 0, 0, 0, time.UTC), updatedAt: time.Date(2024, 2, 1, 0, 0, 0, 0, time.UTC)}
	b.syncUser(t, bob)
	b.syncUser(t, user{id: "user_2carol", createdAt: bob.createdAt, updatedAt: bob.updatedAt})
	b.deleteUser(t, "user_2carol", time.Date(2024, 7, 1, 0, 0, 0, 0, time.UTC))
	b.syncUser(t, user{id: "user_2dave", createdAt: bob.createdAt, updatedAt: bob.updatedAt})
	updated := time.Date(2024, 5, 28, 9, 0, 0, 0, time.UTC)
	for _, o := range []apitest.Organization{
		{ID: "org_acme", Name: ptrTo("Acme Corp"), Slug: ptrTo("acme"), ImageURL: ptrTo("https://img.clerk.com/acme.png"), UpdatedAt: updated},
		{ID: "org_zeta", Name: ptrTo("Zeta"), Slug: ptrTo("Zeta"), UpdatedAt: updated},
		{ID: "org_gone", Name: ptrTo("Gone"), Slug: ptrTo("gone"), UpdatedAt: updated},
		{ID: "org_left", Name: ptrTo("Left"), Slug: ptrTo("left"), UpdatedAt: updated},
		{ID: "org_nameless", UpdatedAt: updated},
		{ID: "org_other", Name: ptrTo("Other"), Slug: ptrTo("other"), UpdatedAt: updated},
	} {
		apitest.SyncOrganization(t, ctx, b.queries, "msg_"+o.ID, o)
	}
	apitest.DeleteOrganization(t, ctx, b.queries, "org_gone", time.Date(2024, 8, 1, 0, 0, 0, 0, time.UTC))
	gone := time.Date(2024, 8, 2, 0, 0, 0, 0, time.UTC)
	for _, m := range []struct {
		id, org, user, role string
		deleted             *time.Time
	}{
		{"orgmem_ada_acme", "org_acme", "user_2adaLovelace", "org:admin", nil},
		{"orgmem_ada_zeta", "org_zeta", "user_2adaLovelace", "basic_member", nil},
		{"orgmem_ada_gone", "org_gone", "user_2adaLovelace", "org:admin", nil},
		{"orgmem_ada_left", "org_left", "user_2adaLovelace", "org:member", &gone},
		{"orgmem_ada_nameless", "org_nameless", "user_2adaLovelace", "org:member", nil},
		{"orgmem_bob_acme", "org_acme", "user_2bob", "org:member", nil},
		{"orgmem_bob_other", "org_other", "user_2bob", "org:admin", nil},
		{"orgmem_carol_acme", "org_acme", "user_2carol", "org:member", nil},
		{"orgmem_dave_acme", "org_acme", "user_2dave", "org:member", &gone},
		{"orgmem_eve_acme", "org_acme", "user_2eve", "org:member", nil},
	} {
		apitest.SyncMembership(t, ctx, b.queries, m.id, m.org, m.user, m.role, m.deleted)
	}
}

func ptrTo[T any](v T) *T { return &v }

// orgToken mints a token for sub whose active organization is org, in Clerk's v2 shape (the o
// claim) or v1's (org_id), or a v2 token that names it only in org_id, which Clerk's SDKs ignore.
func orgToken(b *bundle, sub, org, shape string) string {
	claims := sessiontest.Claims(sub)
	switch shape {
	case "v2":
		claims["o"] = map[string]any{"id": org, "rol": "admin", "slg": "acme"}
	case "v1":
		delete(claims, "v")
		claims["org_id"] = org
	case "v2 with org_id":
		claims["org_id"] = org
	}
	return b.issuer.Mint(claims)
}

// TestAuthMeOrganizations: /auth/me lists the caller's live memberships of live organizations by
// slug as bytes, and names the token's active organization (o.id in v2 tokens, org_id in v1) when
// the caller is a live member of it; still one query.
func TestAuthMeOrganizations(t *testing.T) {
	t.Parallel()
	b := setup(t)
	orgWorld(t, b)
	tests := []struct {
		name, org, shape string
		active           any // the active_organization wanted
	}{
		{"no active organization", "", "none", nil},
		{"v2 token (o.id)", "org_acme", "v2", "org_acme"},
		{"v1 token (org_id)", "org_zeta", "v1", "org_zeta"},
		{"v2 token naming it in org_id only", "org_acme", "v2 with org_id", nil},
		{"an organization that was deleted", "org_gone", "v2", nil},
		{"a membership that was deleted", "org_left", "v2", nil},
		{"an organization the caller is not a member of", "org_other", "v2", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rec, queries := b.do(t, request{bearer: orgToken(b, "user_2adaLovelace", tt.org, tt.shape)})
			if rec.Code != http.StatusOK {
				t.Fatalf("status = %d, body %s", rec.Code, rec.Body)
			}
			if queries != 1 {
				t.Errorf("queries = %d, want 1 (one join)", queries)
			}
			var body map[string]any
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
				t.Fatal(err)
			}
			if body["active_organization"] != tt.active {
				t.Errorf("active_organization = %v, want %v", body["active_organization"], tt.active)
			}
			if tt.shape == "v2" && tt.org == "org_acme" {
				var sub struct {
					Subscription struct {
						StartedAt string `json:"started_at"`
					} `json:"subscription"`
				}
				_ = json.Unmarshal(rec.Body.Bytes(), &sub)
				golden(t, "me_organizations.golden.json",
					bytes.Replace(rec.Body.Bytes(), []byte(sub.Subscription.StartedAt), []byte("STARTED_AT"), 1))
			}
		})
	}
	t.Run("a member of none has []", func(t *testing.T) {
		t.Parallel()
		rec, _ := b.do(t, request{bearer: b.issuer.Token("user_2dave")})
		var body struct {
			Organizations json.RawMessage `json:"organizations"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || string(body.Organizations) != "[]" {
			t.Errorf("organizations = %s (%v), want []", body.Organizations, err)
		}
	})
}

// TestOrganization: GET /organizations/{id} answers a live member with the organization and its
// live members by clerk_user_id as bytes, in pages, in one query.
func TestOrganization(t *testing.T) {
	t.Parallel()
	b := setup(t)
	orgWorld(t, b)
	for _, caller := range []string{"user_2adaLovelace", "user_2bob"} {
		rec, queries := b.do(t, request{path: "/organizations/org_acme", bearer: b.issuer.Token(caller)})
		if rec.Code != http.StatusOK {
			t.Fatalf("%s: status = %d, body %s", caller, rec.Code, rec.Body)
		}
		if queries != 1 {
			t.Errorf("queries = %d, want 1", queries)
		}
		if got := rec.Header().Get("Cache-Control"); got != "no-store" {
			t.Errorf("Cache-Control = %q", got)
		}
		golden(t, "organization.golden.json", rec.Body.Bytes())
	}

	// Pages of one: ada, then bob, then none after.
	var seen []string
	path := "/organizations/org_acme?limit=1"
	for range 3 {
		rec, _ := b.do(t, request{path: path, bearer: b.issuer.Token("user_2bob")})
		if rec.Code != http.StatusOK {
			t.Fatalf("%s: status = %d, body %s", path, rec.Code, rec.Body)
		}
		var page struct {
			Members []struct {
				ClerkUserID string `json:"clerk_user_id"`
			} `json:"members"`
			NextCursor *string `json:"next_cursor"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &page); err != nil {
			t.Fatal(err)
		}
		for _, m := range page.Members {
			seen = append(seen, m.ClerkUserID)
		}
		if len(seen) == 1 {
			golden(t, "organization_page.golden.json", rec.Body.Bytes())
		}
		if page.NextCursor == nil {
			break
		}
		path = "/organizations/org_acme?limit=1&cursor=" + *page.NextCursor
	}
	if want := []string{"user_2adaLovelace", "user_2bob"}; !equalStrings(seen, want) {
		t.Errorf("members paged %q, want %q", seen, want)
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestOrganizationNotFound: an unknown organization, a deleted one and one the caller is not a
// live member of all get the same 404 organization_not_found, byte for byte; bad paging is 400;
// no token, no query.
func TestOrganizationNotFound(t *testing.T) {
	t.Parallel()
	b := setup(t)
	orgWorld(t, b)
	var first []byte
	for _, tt := range []struct{ name, caller, org string }{
		{"unknown organization", "user_2adaLovelace", "org_unknown"},
		{"deleted organization", "user_2adaLovelace", "org_gone"},
		{"not a member", "user_2adaLovelace", "org_other"},
		{"a deleted membership", "user_2adaLovelace", "org_left"},
		{"a deleted user", "user_2carol", "org_acme"},
		{"a user not synced", "user_2eve", "org_acme"},
		{"an id text cannot hold", "user_2adaLovelace", "org_%00"},
	} {
		rec, _ := b.do(t, request{path: "/organizations/" + tt.org, bearer: b.issuer.Token(tt.caller)})
		wantError(t, rec, http.StatusNotFound, "organization_not_found")
		if first == nil {
			first = rec.Body.Bytes()
		} else if !bytes.Equal(first, rec.Body.Bytes()) {
			t.Errorf("%s: body %s differs from %s", tt.name, rec.Body, first)
		}
	}
	for _, q := range []string{"limit=0", "limit=501", "limit=x", "limit=-1"} {
		rec, _ := b.do(t, request{path: "/organizations/org_acme?" + q, bearer: b.issuer.Token("user_2bob")})
		wantError(t, rec, http.StatusBadRequest, "invalid_limit")
	}
	for _, q := range []string{"cursor=!!", "cursor=AA"} { // AA: a NUL
		rec, _ := b.do(t, request{path: "/organizations/org_acme?" + q, bearer: b.issuer.Token("user_2bob")})
		wantError(t, rec, http.StatusBadRequest, "invalid_cursor")
	}
	rec, queries := b.do(t, request{path: "/organizations/org_acme"})
	wantError(t, rec, http.StatusUnauthorized, "missing_token")
	if queries != 0 {
		t.Errorf("queries = %d without a token, want 0", queries)
	}
}
