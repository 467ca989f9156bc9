// Package e2e drives the three services together, as Clerk and a frontend would: a signed webhook
// into ingest, through JetStream and the worker into Postgres, and out of the api for a session
// token. Each service runs through its own Run on a :0 listener.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"regexp"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/clerksync/clerksync/internal/api"
	"github.com/clerksync/clerksync/internal/clerkgen"
	"github.com/clerksync/clerksync/internal/event/eventtest"
	"github.com/clerksync/clerksync/internal/ingest"
	"github.com/clerksync/clerksync/internal/postgres/dbsqlc"
	"github.com/clerksync/clerksync/internal/postgres/postgrestest"
	"github.com/clerksync/clerksync/internal/session/sessiontest"
	"github.com/clerksync/clerksync/internal/worker"
)

var update = flag.Bool("update", false, "rewrite the golden files")

const clerkUserID = "user_29w83sxmDNGwOuEthce5gg56FcC" // the id in Clerk's example payloads

type stack struct {
	ingestURL, apiURL string
	natsURL           string
	secret            string
	issuer            *sessiontest.Issuer
	queries           *dbsqlc.Queries
	pool              *pgxpool.Pool
}

// start runs ingest, worker and api against a fresh database and an embedded NATS server;
// configure changes the api's configuration (given the NATS URL).
func start(t *testing.T, configure ...func(natsURL string, c *api.Config)) stack {
	t.Helper()
	natsURL := eventtest.NewServer(t).URL()
	dbURL := postgrestest.NewDatabase(t)
	iss := sessiontest.NewIssuer(t)
	s := stack{secret: clerkgen.NewSecret(), issuer: iss, natsURL: natsURL}
	pool, err := pgxpool.New(context.Background(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	s.queries, s.pool = dbsqlc.New(pool), pool
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	serve := func(run func(net.Listener) error) string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- run(ln) }()
		// Registered after cancel, so it runs first: the service is stopped and waited for.
		t.Cleanup(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("service stopped with %v", err)
			}
		})
		base := "http://" + ln.Addr().String()
		waitReady(t, base, done)
		return base
	}
	// ingest first: it creates the stream the worker consumes.
	s.ingestURL = serve(func(ln net.Listener) error {
		return ingest.Run(ctx, ingest.Config{
			NATSURL: natsURL, WebhookSecrets: ingest.Secrets{s.secret},
			MaxBodyBytes: 256 << 10, PublishTimeout: 5 * time.Second,
		}, logger, ln)
	})
	serve(func(ln net.Listener) error {
		return worker.Run(ctx, worker.Config{
			NATSURL: natsURL, DatabaseURL: dbURL, Consumer: "clerk-users", BatchSize: 256, Parallelism: 2,
			MaxAttempts: 20, AckWait: 30 * time.Second, FetchWait: 100 * time.Millisecond,
			RetryDelay: time.Second, RetryMaxDelay: time.Minute,
		}, logger, ln)
	})
	apiCfg := api.Config{
		DatabaseURL: dbURL, JWKSURL: iss.JWKSURL(), JWKSCacheTTL: time.Hour, JWTLeeway: 5 * time.Second,
		Issuer: sessiontest.IssuerURL, AuthorizedParties: []string{sessiontest.AuthorizedParty},
	}
	for _, c := range configure {
		c(natsURL, &apiCfg)
	}
	s.apiURL = serve(func(ln net.Listener) error { return api.Run(ctx, apiCfg, logger, ln) })
	return s
}

// waitReady polls base/readyz until it answers 200, failing at once when the service stops
// (done yields its error) rather than waiting out the deadline.
func waitReady(t *testing.T, base string, done chan error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case err := <-done:
			done <- err // for the cleanup that waits on it
			t.Fatalf("%s stopped before it was ready: %v", base, err)
		default:
		}
		resp, err := http.Get(base + "/readyz") //nolint:noctx // a test probe
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s/readyz not ready within 30s (last: %v)", base, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s stack) send(t *testing.T, id, fixture string) {
	t.Helper()
	body, err := os.ReadFile("testdata/" + fixture)
	if err != nil {
		t.Fatal(err)
	}
	s.sendBody(t, id, body)
}

func (s stack) sendBody(t *testing.T, id string, body []byte) {
	t.Helper()
	resp, err := clerkgen.Post(context.Background(), nil, s.ingestURL+"/webhooks/clerk", s.secret, id, body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("webhook %s: %d %s %v", id, resp.StatusCode, resp.Body, err)
	}
}

type response struct {
	status     int
	retryAfter string
	body       []byte
}

func (s stack) me(t *testing.T, sub string) response {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, s.apiURL+"/auth/me", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+s.issuer.Token(sub))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{resp.StatusCode, resp.Header.Get("Retry-After"), b}
}

// meUntil polls /auth/me until cond holds: the worker applies asynchronously.
func (s stack) meUntil(t *testing.T, sub string, cond func(response) bool) response {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		r := s.me(t, sub)
		if cond(r) {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("/auth/me for %s never reached the expected state; last: %d %s", sub, r.status, r.body)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func errorCode(t *testing.T, body []byte) string {
	t.Helper()
	var e struct {
		Error struct{ Code string } `json:"error"`
	}
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("error body %s: %v", body, err)
	}
	return e.Error.Code
}

var startedAt = regexp.MustCompile(`"started_at":"[^"]+"`)

func TestWebhookToAuthMe(t *testing.T) {
	t.Parallel()
	s := start(t)

	// Not synced yet: the frontend is told to come back in a second.
	r := s.me(t, clerkUserID)
	if r.status != http.StatusNotFound || errorCode(t, r.body) != "user_not_synced" || r.retryAfter != "1" {
		t.Fatalf("before the webhook: %d Retry-After=%q %s, want 404 user_not_synced Retry-After=1", r.status, r.retryAfter, r.body)
	}

	s.send(t, "msg_e2e_created", "user.created.json")
	r = s.meUntil(t, clerkUserID, func(r response) bool { return r.status == http.StatusOK })
	// started_at is when clerksync created the subscription: the one wall-clock value.
	got := startedAt.ReplaceAll(r.body, []byte(`"started_at":"STARTED_AT"`))
	golden := "testdata/me.golden.json"
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("/auth/me (-want +got)\n%s", diff)
	}

	// Another user, never sent: still not synced, while the first one is.
	if r := s.me(t, "user_never_sent"); r.status != http.StatusNotFound || errorCode(t, r.body) != "user_not_synced" {
		t.Errorf("unknown user: %d %s, want 404 user_not_synced", r.status, r.body)
	}

	s.send(t, "msg_e2e_deleted", "user.deleted.json")
	s.meUntil(t, clerkUserID, func(r response) bool {
		return r.status == http.StatusNotFound && errorCode(t, r.body) == "user_deleted"
	})

	// A late replay of the create (a Svix retry with a new id) does not resurrect the user.
	s.send(t, "msg_e2e_created_again", "user.created.json")
	deadline := time.Now().Add(15 * time.Second)
	for {
		done, err := s.queries.IsProcessed(context.Background(), "msg_e2e_created_again")
		if err != nil {
			t.Fatal(err)
		}
		if done {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the late create was never processed")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if r := s.me(t, clerkUserID); r.status != http.StatusNotFound || errorCode(t, r.body) != "user_deleted" {
		t.Errorf("after a late create: %d %s, want 404 user_deleted", r.status, r.body)
	}
}

// TestWebhookToOrganizations: Clerk's published organization and membership webhooks, signed and
// posted to ingest in the worst order (the membership before its user and its organization), end
// in /auth/me's organizations; the organization's delete takes it away and scrubs the copy of
// the user from the membership.
func TestWebhookToOrganizations(t *testing.T) {
	t.Parallel()
	s := start(t)
	const orgID = "org_29w9IfBrPmcpi0IeBVaKtA7R94W"
	s.send(t, "msg_e2e_membership", "organizationMembership.created.json")
	s.send(t, "msg_e2e_user", "user.created.json")
	// Until the organization arrives the membership is not live.
	r := s.meUntil(t, clerkUserID, func(r response) bool { return r.status == http.StatusOK })
	if !bytes.Contains(r.body, []byte(`"organizations":[]`)) {
		t.Errorf("before the organization: %s, want no organizations", r.body)
	}
	s.send(t, "msg_e2e_org", "organization.created.json")
	s.meUntil(t, clerkUserID, func(r response) bool {
		return bytes.Contains(r.body, []byte(`"organizations":[{"organization_id":"`)) &&
			bytes.Contains(r.body, []byte(`"clerk_org_id":"`+orgID+`","slug":"acme-inc","name":"Acme Inc"`)) &&
			bytes.Contains(r.body, []byte(`"role":"admin"}]`))
	})
	s.send(t, "msg_e2e_org_deleted", "organization.deleted.json")
	s.meUntil(t, clerkUserID, func(r response) bool { return bytes.Contains(r.body, []byte(`"organizations":[]`)) })
	var copies int
	if err := s.pool.QueryRow(context.Background(),
		`SELECT count(*) FROM organization_memberships WHERE clerk_data ? 'public_user_data'`).Scan(&copies); err != nil {
		t.Fatal(err)
	}
	if copies != 0 {
		t.Errorf("%d memberships still hold a copy of the user after the organization's delete", copies)
	}
}
