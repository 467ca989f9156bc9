package devstack

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/clerksync/clerksync/internal/clerkapi"
)

// TestBackendAPI: the dev Backend API lists the users send created (the profile it sent), the
// backend-only ones, and not the users send deleted, to a client with the state's key; a user
// sent after the stack started is there at the next request.
func TestBackendAPI(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	var st State
	if err := st.ensureSecrets(); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	st.ensureBackend(now)
	st.Created = map[string]int64{"user_sent": now.Add(-time.Hour).UnixMilli(), "user_gone": now.UnixMilli()}
	st.Deleted = []string{"user_gone"}
	if err := st.save(dir); err != nil {
		t.Fatal(err)
	}
	b := newBackendAPI(dir, st, slog.New(slog.DiscardHandler))
	defer b.fake.Close()
	hs := httptest.NewServer(b)
	t.Cleanup(hs.Close)
	srv := hs.URL

	list := func(key string) ([]string, error) {
		c, err := clerkapi.New(clerkapi.Config{URL: srv, SecretKey: clerkapi.SecretKey(key), Rate: 100})
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		err = c.ListUsers(context.Background(), func(p []clerkapi.User) error {
			for _, u := range p {
				ids = append(ids, u.ID)
			}
			return nil
		})
		return ids, err
	}
	ids, err := list(st.ClerkSecretKey)
	if err != nil {
		t.Fatal(err)
	}
	want := append(slices.Clone(st.BackendOnly), "user_sent") // oldest first
	if !slices.Equal(ids, want) {
		t.Errorf("listed %v, want %v", ids, want)
	}
	// The bytes are those of the user.created send posted for the user.
	c, _ := clerkapi.New(clerkapi.Config{URL: srv, SecretKey: clerkapi.SecretKey(st.ClerkSecretKey), Rate: 100})
	u, err := c.GetUser(context.Background(), "user_sent")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(u.Raw), string(userObject("user_sent", time.UnixMilli(st.Created["user_sent"]))); got != want {
		t.Errorf("user_sent served as\n%s\nwant\n%s", got, want)
	}
	if _, err := list("sk_test_wrong"); err == nil {
		t.Error("a wrong key was accepted")
	}

	st.Created["user_later"] = now.Add(time.Hour).UnixMilli()
	if err := st.save(dir); err != nil {
		t.Fatal(err)
	}
	if ids, err := list(st.ClerkSecretKey); err != nil || !slices.Contains(ids, "user_later") {
		t.Errorf("after a send: %v %v", ids, err)
	}
}
