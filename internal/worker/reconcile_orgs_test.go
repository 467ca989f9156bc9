package worker

import (
	"fmt"
	"testing"

	"github.com/clerksync/clerksync/internal/clerkapi/clerkapitest"
)

// TestReconcileOrganizations backfills organizations and memberships from the Backend API
// (offset pages of 500: one organization has 600 members), sweeps again to find everything
// unchanged, then prunes an organization and a membership Clerk no longer has.
func TestReconcileOrganizations(t *testing.T) {
	t.Parallel()
	r := rsetup(t)
	start(t, r.cfg)
	users := r.put(t, "m", 600, 1700000100000)
	members := map[string]int{"org_big": 600, "org_small": 3, "org_empty": 0}
	for i, org := range []string{"org_big", "org_small", "org_empty"} {
		if err := r.api.PutOrganization(clerkapitest.NewOrganization(org, org, 1700000000000+int64(i), 1700000200000)); err != nil {
			t.Fatal(err)
		}
		for k := range members[org] {
			id := fmt.Sprintf("orgmem_%s_%04d", org, k)
			if err := r.api.PutMembership(clerkapitest.NewMembership(id, org, users[k], "org:member", 1700000000000+int64(k), 1700000300000)); err != nil {
				t.Fatal(err)
			}
		}
	}

	sums, err := r.sweepAll(t, ReconcileOptions{Kinds: AllKinds})
	if err != nil {
		t.Fatalf("sweep: %v\n%s", err, r.logs)
	}
	want := map[string][2]int{KindUsers: {600, 600}, KindOrganizations: {3, 3}, KindMemberships: {603, 603}} // seen, published
	for _, s := range sums {
		if w := want[s.Kind]; !s.Complete || s.Seen != w[0] || s.Published != w[1] {
			t.Errorf("%s: %+v, want complete, seen %d, published %d", s.Kind, s, w[0], w[1])
		}
	}
	if len(sums) != 3 {
		t.Fatalf("%d summaries, want 3", len(sums))
	}
	r.settle(t)
	orgs, mems := readOrgs(t, r.pool)
	live := 0
	for _, m := range mems {
		if m.Live {
			live++
		}
	}
	if len(orgs) != 3 || len(mems) != 603 || live != 603 {
		t.Fatalf("%d organizations, %d memberships (%d live), want 3, 603 (603)", len(orgs), len(mems), live)
	}
	if got := orgs["org_small"]; got.Slug == nil || *got.Slug != "org_small" || got.VersionEventID == nil || *got.VersionEventID != "snap_org_small_1700000200000" {
		t.Errorf("org_small: %+v", got)
	}

	sums, err = r.sweepAll(t, ReconcileOptions{Kinds: []string{KindOrganizations, KindMemberships}})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range sums {
		if s.Published != 0 || s.Unchanged != s.Seen {
			t.Errorf("second sweep of %s: %+v, want everything unchanged", s.Kind, s)
		}
	}

	r.api.DeleteOrganization("org_small")
	r.api.DeleteMembership("org_big", "orgmem_org_big_0007")
	sums, err = r.sweepAll(t, ReconcileOptions{Kinds: []string{KindOrganizations, KindMemberships}, Prune: true})
	if err != nil {
		t.Fatalf("prune: %v\n%s", err, r.logs)
	}
	if sums[0].Pruned != 1 || sums[1].Pruned != 4 {
		t.Errorf("pruned %d organizations and %d memberships, want 1 and 4: %+v", sums[0].Pruned, sums[1].Pruned, sums)
	}
	r.settle(t)
	orgs, mems = readOrgs(t, r.pool)
	if got := orgs["org_small"]; got.DeletedAt == nil {
		t.Errorf("org_small: %+v, want a tombstone", got)
	}
	for _, id := range []string{"orgmem_org_big_0007", "orgmem_org_small_0000"} {
		got := mems[id]
		if got.DeletedAt == nil || got.Live || got.ClerkOrgID == "" || got.ClerkUserID == "" {
			t.Errorf("%s: %+v, want a tombstone that keeps its organization and user", id, got)
		}
	}
	if got := mems["orgmem_org_big_0008"]; !got.Live {
		t.Errorf("orgmem_org_big_0008: %+v, want live", got)
	}
	if n := count(t, r.pool, `SELECT count(*) FROM dead_letters`); n != 0 {
		t.Errorf("%d dead letters", n)
	}
}
