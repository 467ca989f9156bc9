package clerkapi_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/clerksync/clerksync/internal/clerkapi"
	"github.com/clerksync/clerksync/internal/clerkapi/clerkapitest"
)

// TestListOrganizations pages by limit and offset, oldest first, and serves each object byte for
// byte; memberships likewise per organization; a listing whose total_count moves is incomplete.
func TestListOrganizations(t *testing.T) {
	t.Parallel()
	srv := clerkapitest.New(t, key)
	c, _ := newClient(t, srv)
	ctx := context.Background()
	const n = 1201
	for i := range n {
		if err := srv.PutOrganization(clerkapitest.NewOrganization(fmt.Sprintf("org_%05d", i), "s", 1700000000000+int64(i), 1700000000000)); err != nil {
			t.Fatal(err)
		}
	}
	var ids []string
	pages := 0
	complete, err := c.ListOrganizations(ctx, func(page []clerkapi.Object) error {
		pages++
		for _, o := range page {
			ids = append(ids, o.ID)
			if !bytes.Equal(o.Raw, clerkapitest.NewOrganization(o.ID, "s", 1700000000000+int64(len(ids)-1), 1700000000000)) {
				t.Fatalf("%s not served byte for byte: %s", o.ID, o.Raw)
			}
		}
		return nil
	})
	if err != nil || !complete || len(ids) != n || pages != 3 || ids[n-1] != fmt.Sprintf("org_%05d", n-1) {
		t.Fatalf("listed %d in %d pages (complete %v, err %v), want %d in 3 in order", len(ids), pages, complete, err, n)
	}

	// An organization deleted between two pages moves total_count: the listing is incomplete.
	complete, err = c.ListOrganizations(ctx, func(page []clerkapi.Object) error {
		if page[0].ID == "org_00000" {
			srv.DeleteOrganization("org_00001")
		}
		return nil
	})
	if err != nil || complete {
		t.Errorf("listing during a delete: complete %v, err %v; want incomplete", complete, err)
	}

	for k := range 3 {
		if err := srv.PutMembership(clerkapitest.NewMembership(fmt.Sprintf("orgmem_%d", k), "org_00002", fmt.Sprintf("user_%d", k), "org:admin", 1700000000000+int64(k), 1700000000000)); err != nil {
			t.Fatal(err)
		}
	}
	var members []string
	complete, err = c.ListMemberships(ctx, "org_00002", func(page []clerkapi.Object) error {
		for _, m := range page {
			members = append(members, m.ID)
		}
		return nil
	})
	if err != nil || !complete || fmt.Sprint(members) != "[orgmem_0 orgmem_1 orgmem_2]" {
		t.Errorf("memberships %v (complete %v, err %v)", members, complete, err)
	}
	if _, err := c.ListMemberships(ctx, "org_gone", func([]clerkapi.Object) error { return nil }); !errors.Is(err, clerkapi.ErrNotFound) {
		t.Errorf("memberships of an unknown organization: %v, want ErrNotFound", err)
	}
}
