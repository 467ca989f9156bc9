package devstack

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"

	"github.com/clerksync/clerksync/internal/clerkapi/clerkapitest"
	"github.com/clerksync/clerksync/internal/clerkgen"
)

// The dev Clerk instance's Backend API, on the JWKS listener (one host plays the whole Clerk
// instance): clerkapitest's fake, the one the tests use, holding every user `send` created (the
// same profile it sent) and a few users only the Backend API has, as an instance that had users
// before clerksync was installed does. `go run ./cmd/worker reconcile` against it backfills those.
// It is the dev stack's only use of a test-support package: like the JWKS, it plays Clerk.

// backendOnlyUsers is how many users the dev Backend API has that no webhook announced.
const backendOnlyUsers = 3

type backendAPI struct {
	dir    string
	fake   *clerkapitest.Fake
	logger *slog.Logger

	mu    sync.Mutex
	known map[string]bool // users put in the fake
}

func newBackendAPI(dir string, st State, logger *slog.Logger) *backendAPI {
	b := &backendAPI{dir: dir, fake: clerkapitest.NewFake(st.ClerkSecretKey), logger: logger, known: map[string]bool{}}
	b.sync(st)
	return b
}

// ServeHTTP answers from the fake after taking in the users sent since the last request (send
// runs in another process: it records them in the state file).
func (b *backendAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if st, err := loadState(b.dir); err == nil {
		b.sync(st)
	} else {
		b.logger.Warn("dev backend api: reading the state", "err", err)
	}
	b.fake.ServeHTTP(w, r)
}

func (b *backendAPI) sync(st State) {
	b.mu.Lock()
	defer b.mu.Unlock()
	deleted := map[string]bool{}
	for _, id := range st.Deleted {
		deleted[id] = true
		b.fake.Delete(id)
	}
	put := func(id string, created time.Time) {
		if b.known[id] || deleted[id] {
			return
		}
		if err := b.fake.Put(userObject(id, created)); err != nil {
			b.logger.Warn("dev backend api: a user it cannot hold", "user", id, "err", err)
			return
		}
		b.known[id] = true
	}
	for id, ms := range st.Created {
		put(id, time.UnixMilli(ms))
	}
	for i, id := range st.BackendOnly {
		put(id, st.BackendOnlySince.Add(time.Duration(i)*time.Hour))
	}
}

// userObject is the user object a user.created from send carries for id, as the Backend API
// serves it.
func userObject(id string, created time.Time) json.RawMessage {
	var env struct{ Data json.RawMessage }
	_ = json.Unmarshal(clerkgen.CreatedBody(clerkgen.NewUser(profileRand(id), id, created)), &env)
	return env.Data
}

// ensureBackend gives the state a Backend API secret key and its backend-only users.
func (s *State) ensureBackend(now time.Time) {
	if s.ClerkSecretKey == "" {
		s.ClerkSecretKey = "sk_test_dev_" + randomBase62(40)
	}
	if len(s.BackendOnly) == 0 {
		r := rand.New(rand.NewChaCha8(seed()))
		for range backendOnlyUsers {
			s.BackendOnly = append(s.BackendOnly, clerkgen.NewUserID(r))
		}
		s.BackendOnlySince = now.Add(-30 * 24 * time.Hour).Truncate(time.Millisecond).UTC()
	}
}

func randomBase62(n int) string {
	const alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	r := rand.New(rand.NewChaCha8(seed()))
	b := make([]byte, n)
	for i := range b {
		b[i] = alphabet[r.IntN(len(alphabet))]
	}
	return string(b)
}

// reconcileCommand is how to run worker reconcile against the dev stack.
func reconcileCommand(st State, key string) string {
	return fmt.Sprintf("NATS_URL=%s DATABASE_URL=%q CLERK_API_URL=%s CLERK_SECRET_KEY=%s go run ./cmd/worker reconcile",
		st.NATSURL, or(st.DatabaseURL, "$DATABASE_URL"), st.Issuer, key)
}
