package clerkgen_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	svix "github.com/svix/svix-webhooks/go"

	"github.com/clerksync/clerksync/internal/clerk"
	"github.com/clerksync/clerksync/internal/clerkgen"
)

// fixture is Clerk's published example of typ, kept byte for byte in package clerk's testdata.
func fixture(t *testing.T, typ string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "clerk", "testdata", typ+".json"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// shape maps every key path of a JSON document to its kind; arrays contribute their elements
// under "[]". null is its own kind: a nullable field is null in one payload and a string in
// another.
func shape(t *testing.T, b []byte) map[string]string {
	t.Helper()
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch v := v.(type) {
		case map[string]any:
			out[path] = "object"
			for k, child := range v {
				walk(path+"."+k, child)
			}
		case []any:
			out[path] = "array"
			for _, child := range v {
				walk(path+"[]", child)
			}
		case string:
			out[path] = "string"
		case float64:
			out[path] = "number"
		case bool:
			out[path] = "bool"
		case nil:
			out[path] = "null"
		}
	}
	walk("", v)
	return out
}

func TestPayloadsHaveClerksShape(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(1, 2))
	u := clerkgen.NewUser(r, "", time.UnixMilli(1654012591514))
	updated := u.Updated(r, u.CreatedAt.Add(time.Minute))
	bodies := map[string][]byte{
		clerkgen.UserCreated: clerkgen.CreatedBody(u),
		clerkgen.UserUpdated: clerkgen.UpdatedBody(updated),
		clerkgen.UserDeleted: clerkgen.DeletedBody(u.ID, updated.UpdatedAt.Add(time.Minute)),
	}
	// Clerk's examples differ a little between types (instance_id, event_attributes, reserved,
	// verification.attempts): every key any of them has is allowed.
	known := map[string]bool{}
	for typ := range bodies {
		for path := range shape(t, fixture(t, typ)) {
			known[path] = true
		}
	}
	for typ, body := range bodies {
		got := shape(t, body)
		for path, kind := range shape(t, fixture(t, typ)) {
			g, ok := got[path]
			switch {
			case !ok:
				t.Errorf("%s: generated payload lacks %s", typ, path)
			case g != kind && g != "null" && kind != "null":
				t.Errorf("%s: %s is a %s, Clerk sends a %s", typ, path, g, kind)
			}
		}
		for path := range got {
			if !known[path] {
				t.Errorf("%s: generated payload has %s, which Clerk's examples do not", typ, path)
			}
		}
	}
}

func TestPayloadsParseAsClerkEvents(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(3, 4))
	created := time.Date(2025, 6, 1, 12, 0, 0, 123456789, time.UTC)
	u := clerkgen.NewUser(r, "user_given", created)
	if u.ID != "user_given" || !u.CreatedAt.Equal(created.Truncate(time.Millisecond)) {
		t.Fatalf("NewUser ignored its arguments: %+v", u)
	}
	next := u.Updated(r, created)
	for _, tc := range []struct {
		typ  string
		body []byte
		want clerk.UserEvent
	}{
		{clerkgen.UserCreated, clerkgen.CreatedBody(u), userEvent(clerk.UserCreated, u)},
		{clerkgen.UserUpdated, clerkgen.UpdatedBody(next), userEvent(clerk.UserUpdated, next)},
		{clerkgen.UserDeleted, clerkgen.DeletedBody(u.ID, created.Add(time.Hour)), clerk.UserEvent{
			Type: clerk.UserDeleted, ClerkUserID: u.ID, Timestamp: created.Add(time.Hour).Truncate(time.Millisecond),
		}},
	} {
		env, err := clerk.ParseEnvelope(tc.body)
		if err != nil || env.Type != tc.typ || env.DataID != u.ID {
			t.Errorf("%s: ParseEnvelope = %+v, %v", tc.typ, env, err)
		}
		got, err := clerk.ParseUserEvent(tc.body)
		if err != nil {
			t.Fatalf("%s: ParseUserEvent: %v", tc.typ, err)
		}
		if got.User != nil {
			got.User.Data = nil
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("%s: parsed event (-want +got):\n%s", tc.typ, diff)
		}
	}
}

// userEvent is what clerk.ParseUserEvent must make of u's created or updated payload.
func userEvent(typ string, u clerkgen.User) clerk.UserEvent {
	created := u.CreatedAt.UTC()
	return clerk.UserEvent{
		Type:        typ,
		ClerkUserID: u.ID,
		Timestamp:   u.UpdatedAt.UTC(),
		User: &clerk.User{
			ID: u.ID, Email: &u.Email, Username: u.Username, FirstName: u.FirstName, LastName: u.LastName,
			ImageURL: &u.ImageURL, CreatedAt: &created, UpdatedAt: u.UpdatedAt.UTC(),
		},
	}
}

func TestUpdatedAlwaysMovesTheVersionForward(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(5, 6))
	u := clerkgen.NewUser(r, "", time.UnixMilli(1_700_000_000_000))
	for range 100 {
		next := u.Updated(r, u.UpdatedAt.Add(-time.Hour)) // a clock going backwards
		if !next.UpdatedAt.After(u.UpdatedAt) {
			t.Fatalf("Updated went from %v to %v", u.UpdatedAt, next.UpdatedAt)
		}
		if next == u {
			t.Fatal("Updated changed nothing")
		}
		u = next
	}
}

func TestPayloadRefusesOtherTypes(t *testing.T) {
	t.Parallel()
	if _, err := clerkgen.Payload("session.created", clerkgen.User{ID: "user_1"}, time.Now()); err == nil {
		t.Fatal("Payload built a session.created")
	}
}

func TestHistoryIsSeededAndConverges(t *testing.T) {
	t.Parallel()
	o := clerkgen.DefaultHistoryOptions(42, 500)
	h := clerkgen.NewHistory(o)
	again := clerkgen.NewHistory(o)
	if len(h.Events) != len(again.Events) {
		t.Fatalf("same seed, %d then %d events", len(h.Events), len(again.Events))
	}
	for i := range h.Events {
		if h.Events[i].ID != again.Events[i].ID || !bytes.Equal(h.Events[i].Body(), again.Events[i].Body()) {
			t.Fatalf("same seed, event %d differs", i)
		}
	}
	if other := clerkgen.NewHistory(clerkgen.DefaultHistoryOptions(43, 500)); other.Events[0].ID == h.Events[0].ID {
		t.Fatal("another seed gave the same history")
	}

	s := h.Stats()
	t.Logf("seed %d: %+v", o.Seed, s)
	if len(h.Users) != 500 {
		t.Fatalf("%d users, want 500", len(h.Users))
	}
	// Loose bounds on the ratios: 500 users make the binomial noise small.
	if s.Deleted < 60 || s.Deleted > 140 {
		t.Errorf("%d of 500 users deleted, want about 20%%", s.Deleted)
	}
	if s.Resends == 0 || s.OutOfOrder == 0 {
		t.Errorf("history has %d resends and %d out-of-order deliveries, want some of each", s.Resends, s.OutOfOrder)
	}

	// Folding the events in delivery order with the contract's rules (latest updated_at wins,
	// a delete is final, a repeated svix-id is skipped) gives the history's final states.
	type state struct {
		user      clerk.User
		deletedAt time.Time
	}
	seen := map[string][]byte{}
	folded := map[string]*state{}
	for i, e := range h.Events {
		body := e.Body()
		if prev, ok := seen[e.ID]; ok {
			if !e.Resend || !bytes.Equal(prev, body) {
				t.Fatalf("event %d: svix-id %s repeated with resend=%v and a different body", i, e.ID, e.Resend)
			}
			continue
		}
		if e.Resend {
			t.Fatalf("event %d: resend of %s delivered before the original", i, e.ID)
		}
		seen[e.ID] = body
		ev, err := clerk.ParseUserEvent(body)
		if err != nil {
			t.Fatal(err)
		}
		if ev.Type != e.Type || ev.ClerkUserID != e.UserID {
			t.Fatalf("event %d: body says %s for %s, event says %s for %s", i, ev.Type, ev.ClerkUserID, e.Type, e.UserID)
		}
		st := folded[e.UserID]
		if st == nil {
			st = &state{}
			folded[e.UserID] = st
		}
		if ev.User == nil {
			if st.deletedAt.IsZero() || ev.Timestamp.Before(st.deletedAt) {
				st.deletedAt = ev.Timestamp
			}
		} else if ev.User.UpdatedAt.After(st.user.UpdatedAt) {
			st.user = *ev.User
		}
	}
	for _, want := range h.Users {
		st := folded[want.User.ID]
		if st == nil {
			t.Fatalf("user %s has no events", want.User.ID)
		}
		if want.Deleted != !st.deletedAt.IsZero() || !want.DeletedAt.Equal(st.deletedAt) {
			t.Errorf("user %s: deleted %v at %v, folded %v", want.User.ID, want.Deleted, want.DeletedAt, st.deletedAt)
		}
		if got := st.user; !got.UpdatedAt.Equal(want.User.UpdatedAt) || *got.Email != want.User.Email {
			t.Errorf("user %s: folded version %v (%s), want %v (%s)", want.User.ID, got.UpdatedAt, *got.Email, want.User.UpdatedAt, want.User.Email)
		}
	}
}

func TestHistoryWithoutDisorder(t *testing.T) {
	t.Parallel()
	o := clerkgen.DefaultHistoryOptions(7, 50)
	o.ResendRatio, o.ReorderRatio, o.DeleteRatio = 0, 0, 0
	s := clerkgen.NewHistory(o).Stats()
	if s.Resends != 0 || s.OutOfOrder != 0 || s.Deleted != 0 {
		t.Fatalf("history with the ratios at zero: %+v", s)
	}
}

func TestSignVerifiesWithSvix(t *testing.T) {
	t.Parallel()
	secret := clerkgen.NewSecret()
	if !strings.HasPrefix(secret, "whsec_") || len(secret) != len("whsec_")+32 {
		t.Fatalf("NewSecret = %q, want whsec_ and 32 base64 characters", secret)
	}
	if clerkgen.NewSecret() == secret {
		t.Fatal("NewSecret repeated itself")
	}
	body := []byte(`{"type":"user.created","data":{"id":"user_1"}}`)
	h, err := clerkgen.Sign(secret, "msg_1", time.Now(), body)
	if err != nil {
		t.Fatal(err)
	}
	wh, err := svix.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	if err := wh.Verify(body, h); err != nil {
		t.Fatalf("svix does not verify our signature: %v", err)
	}
	if err := wh.Verify(append(body, ' '), h); err == nil {
		t.Fatal("svix verified a changed body")
	}
	if _, err := clerkgen.Sign("not base64!", "msg_1", time.Now(), body); err == nil {
		t.Fatal("Sign accepted a malformed secret")
	}
}

func TestPostDeliversASignedWebhook(t *testing.T) {
	t.Parallel()
	secret := clerkgen.NewSecret()
	wh, err := svix.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if r.Method != http.MethodPost || wh.Verify(body, r.Header) != nil {
			http.Error(w, "bad", http.StatusUnauthorized)
			return
		}
		_, _ = fmt.Fprintf(w, `{"id":%q,"duplicate":false}`, r.Header.Get("svix-id"))
	}))
	t.Cleanup(srv.Close)

	body := clerkgen.CreatedBody(clerkgen.NewUser(rand.New(rand.NewPCG(8, 9)), "", time.Now()))
	resp, err := clerkgen.Post(context.Background(), nil, srv.URL, secret, "msg_post", body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || string(resp.Body) != `{"id":"msg_post","duplicate":false}` {
		t.Fatalf("Post = %d %s", resp.StatusCode, resp.Body)
	}
	resp, err = clerkgen.Post(context.Background(), nil, srv.URL, clerkgen.NewSecret(), "msg_post", body)
	if err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("Post with another secret = %d, %v; want a 401 response", resp.StatusCode, err)
	}
	if _, err := clerkgen.Post(context.Background(), nil, "http://127.0.0.1:1/", secret, "msg_post", body); err == nil {
		t.Fatal("Post to a closed port returned no error")
	}
}

func TestIDsLookLikeClerks(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(10, 11))
	for _, id := range []string{clerkgen.NewUserID(r), clerkgen.NewMessageID(r)} {
		prefix, rest, _ := strings.Cut(id, "_")
		if !slices.Contains([]string{"user", "msg"}, prefix) || len(rest) != 27 || strings.Trim(rest, "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz") != "" {
			t.Errorf("id %q is not a prefix and 27 base62 characters", id)
		}
	}
}
