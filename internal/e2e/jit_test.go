package e2e

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"net/http"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/clerksync/clerksync/internal/api"
	"github.com/clerksync/clerksync/internal/clerkapi/clerkapitest"
	"github.com/clerksync/clerksync/internal/clerkgen"
	"github.com/clerksync/clerksync/internal/event"
	"github.com/clerksync/clerksync/internal/event/eventtest"
)

// TestJustInTimeThenWebhook plays the sign-up race: the frontend calls the api before Clerk's
// user.created webhook arrives. With just-in-time sync the first /auth/me is 200 (the api
// published one user.snapshot, the worker folded it); the webhook that arrives later folds
// exactly once whether it carries an older version than the snapshot (nothing changes) or a
// newer one (it wins), and its Svix retry is a duplicate.
func TestJustInTimeThenWebhook(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name  string
		newer bool // the webhook carries a newer version than the Backend API served
	}{{"webhook older than the snapshot", false}, {"webhook newer than the snapshot", true}} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			const key = "sk_test_e2eJITkey000000000000000000000000"
			clerk := clerkapitest.New(t, key)
			s := start(t, func(natsURL string, c *api.Config) {
				c.ClerkSecretKey, c.ClerkAPIURL, c.ClerkAPIRate, c.JITWait, c.NATSURL = key, clerk.URL, 10, 3*time.Second, natsURL
			})
			r := rand.New(rand.NewPCG(1, 2))
			created := clerkgen.NewUser(r, "", time.Now().Add(-time.Minute))
			updated := created.Updated(r, time.Now())
			served, sent := updated, created // the webhook is older: Clerk retried it late
			if tt.newer {
				served, sent = created, updated // the user changed between the read and the webhook
			}
			if err := clerk.Put(userData(t, clerkgen.CreatedBody(served))); err != nil {
				t.Fatal(err)
			}

			first := s.me(t, served.ID)
			if first.status != http.StatusOK {
				t.Fatalf("first request: %d %s, want 200", first.status, first.body)
			}
			wantMe(t, first.body, served)
			if n := snapshots(t, s.natsURL); n != 1 {
				t.Errorf("%d snapshots in the stream, want 1", n)
			}

			body, err := clerkgen.Payload(clerkgen.UserCreated, sent, time.Time{})
			if err != nil {
				t.Fatal(err)
			}
			s.sendBody(t, "msg_e2e_jit_created", body)
			waitProcessed(t, s, "msg_e2e_jit_created")
			s.sendBody(t, "msg_e2e_jit_created", body) // Svix retries with the same id
			want := updated                            // the newer version, whichever came first
			wantMe(t, s.me(t, served.ID).body, want)
			n, err := s.queries.CountProcessedEvents(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if n != 2 { // the snapshot and the webhook, each once
				t.Errorf("%d processed events, want 2", n)
			}
			if got := clerk.Requests(); got != 1 {
				t.Errorf("%d Backend API requests, want 1", got)
			}
		})
	}
}

// userData is the data of a webhook body: the user object as the Backend API serves it.
func userData(t *testing.T, body []byte) json.RawMessage {
	t.Helper()
	var env struct{ Data json.RawMessage }
	if err := json.Unmarshal(body, &env); err != nil {
		t.Fatal(err)
	}
	return env.Data
}

func wantMe(t *testing.T, body []byte, u clerkgen.User) {
	t.Helper()
	var me struct {
		ClerkUserID string    `json:"clerk_user_id"`
		Email       string    `json:"email"`
		FirstName   *string   `json:"first_name"`
		UpdatedAt   time.Time `json:"updated_at"`
	}
	if err := json.Unmarshal(body, &me); err != nil {
		t.Fatalf("%s: %v", body, err)
	}
	if me.ClerkUserID != u.ID || me.Email != u.Email || !me.UpdatedAt.Equal(u.UpdatedAt) || (me.FirstName == nil) != (u.FirstName == nil) ||
		me.FirstName != nil && *me.FirstName != *u.FirstName {
		t.Errorf("/auth/me = %s, want the user as of %s (email %s)", body, u.UpdatedAt, u.Email)
	}
}

func snapshots(t *testing.T, natsURL string) uint64 {
	t.Helper()
	_, js := eventtest.Connect(t, natsURL)
	st, err := js.Stream(t.Context(), event.Stream)
	if err != nil {
		t.Fatal(err)
	}
	subject := event.SubjectPrefix + "user.snapshot"
	info, err := st.Info(t.Context(), jetstream.WithSubjectFilter(subject))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Subjects[subject]
}

func waitProcessed(t *testing.T, s stack, id string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		done, err := s.queries.IsProcessed(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if done {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s was never processed", id)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
