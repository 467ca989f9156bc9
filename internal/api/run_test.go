package api

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/clerksync/clerksync/internal/api/apitest"
	"github.com/clerksync/clerksync/internal/clerkapi/clerkapitest"
	"github.com/clerksync/clerksync/internal/event/eventtest"
	"github.com/clerksync/clerksync/internal/postgres/dbsqlc"
	"github.com/clerksync/clerksync/internal/postgres/postgrestest"
	"github.com/clerksync/clerksync/internal/session/sessiontest"
)

// TestRun serves the api through Run on :0, as a deployment would, until its context ends.
func TestRun(t *testing.T) {
	t.Parallel()
	iss := sessiontest.NewIssuer(t)
	dbURL := postgrestest.NewDatabase(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		Addr:               "127.0.0.1:1", // unused: ln wins
		DatabaseURL:        dbURL,
		JWKSURL:            iss.JWKSURL(),
		JWKSCacheTTL:       time.Hour,
		JWTLeeway:          5 * time.Second,
		Issuer:             sessiontest.IssuerURL,
		AuthorizedParties:  []string{sessiontest.AuthorizedParty},
		CORSAllowedOrigins: []string{sessiontest.AuthorizedParty},
	}
	logs := &apitest.LockedBuffer{}
	logger := slog.New(slog.NewJSONHandler(logs, nil))
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, logger, ln) }()

	base := "http://" + ln.Addr().String()
	get := func(path, token string) (*http.Response, []byte) {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, base+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp, body
	}
	poll(t, func() bool {
		select {
		case err := <-done:
			t.Fatalf("Run returned early: %v", err)
		default:
		}
		resp, _ := get("/readyz", "") //nolint:bodyclose // get closes the body before it returns
		return resp.StatusCode == http.StatusOK
	})

	const sub = "user_2run"
	resp, body := get("/auth/me", iss.Token(sub)) //nolint:bodyclose // get closes the body before it returns
	if resp.StatusCode != http.StatusNotFound || !strings.Contains(string(body), "user_not_synced") || resp.Header.Get("Retry-After") != "1" {
		t.Fatalf("before sync: %d %s", resp.StatusCode, body)
	}

	// The worker's part, done here with its queries.
	pool, err := pgxpool.New(t.Context(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	b := &bundle{queries: dbsqlc.New(pool)}
	u := ada()
	u.id = sub
	b.syncUser(t, u)

	resp, body = get("/auth/me", iss.Token(sub)) //nolint:bodyclose // get closes the body before it returns
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("after sync: %d %s", resp.StatusCode, body)
	}
	var me meResponse
	if err := json.Unmarshal(body, &me); err != nil {
		t.Fatal(err)
	}
	if me.ClerkUserID != sub || me.Subscription.Tier != "free" || me.Subscription.Status != "active" || me.Usage.APICalls != 0 || me.Usage.Campaigns != 0 {
		t.Errorf("me = %+v", me)
	}
	if resp.Header.Get("X-Request-Id") == "" {
		t.Error("no X-Request-Id")
	}

	resp, body = get("/metrics", "") //nolint:bodyclose // get closes the body before it returns
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `clerksync_api_requests_total{method="GET",route="/auth/me",status="200"} 1`) {
		t.Errorf("/metrics: %d\n%s", resp.StatusCode, body)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return within 15s of its context ending")
	}
	if _, err := (&net.Dialer{Timeout: time.Second}).DialContext(t.Context(), "tcp", ln.Addr().String()); err == nil {
		t.Error("still listening after Run returned")
	}
}

func TestRunRefusesToStart(t *testing.T) {
	t.Parallel()
	logger := slog.New(slog.DiscardHandler)
	base := Config{
		Addr:         "127.0.0.1:0",
		DatabaseURL:  "postgres://postgres@127.0.0.1:1/none?sslmode=disable", // never reached
		JWKSCacheTTL: time.Hour,
		JWTLeeway:    5 * time.Second,
	}
	tests := []struct {
		name   string
		change func(*Config)
		want   string
	}{
		{"no key source", func(*Config) {}, "config: one of CLERK_JWKS_URL, CLERK_JWT_KEY, CLERK_PUBLISHABLE_KEY and CLERK_SECRET_KEY is required"},
		{"blank key source", func(c *Config) { c.JWTKey = "  \n" }, "config: one of CLERK_JWKS_URL, CLERK_JWT_KEY, CLERK_PUBLISHABLE_KEY and CLERK_SECRET_KEY is required"},
		{"bad PEM", func(c *Config) { c.JWTKey = "not a key" }, "config: session: public key is not PEM or base64"},
		{"relative JWKS URL", func(c *Config) { c.JWKSURL = "jwks.json" }, "config: session: the JWKS URL must be an absolute http(s) URL"},
		{"bad origin", func(c *Config) { c.JWKSURL = "https://clerk.test/jwks"; c.CORSAllowedOrigins = []string{"example.com"} }, `config: CORS_ALLOWED_ORIGINS: "example.com" is not an origin (scheme://host[:port])`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := base
			tt.change(&cfg)
			err := Run(t.Context(), cfg, logger, nil)
			if err == nil || err.Error() != tt.want {
				t.Fatalf("Run = %v, want %q", err, tt.want)
			}
			if errors.Is(err, context.Canceled) {
				t.Fatal("Run blocked")
			}
		})
	}
}

// TestRunJIT serves the api through Run with CLERK_SECRET_KEY set: /readyz includes NATS, a user
// only the Backend API knows is answered 200 on the first request, the key never reaches the log,
// and without NATS the api is not ready.
func TestRunJIT(t *testing.T) {
	t.Parallel()
	iss := sessiontest.NewIssuer(t)
	dbURL := postgrestest.NewDatabase(t)
	ns := eventtest.NewServer(t)
	eventtest.Connect(t, ns.URL())
	startWorker(t, ns.URL(), dbURL)
	clerk := clerkapitest.New(t, testSecretKey)
	const sub = "user_2runjit"
	now := time.Now().UnixMilli()
	if err := clerk.Put(clerkapitest.NewUser(sub, now, now, "Ada")); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		DatabaseURL: dbURL, JWKSURL: iss.JWKSURL(), JWKSCacheTTL: time.Hour, JWTLeeway: 5 * time.Second,
		Issuer: sessiontest.IssuerURL, AuthorizedParties: []string{sessiontest.AuthorizedParty},
		ClerkSecretKey: testSecretKey, ClerkAPIURL: clerk.URL, ClerkAPIRate: 10, JITWait: 3 * time.Second,
		NATSURL: ns.URL(),
	}
	logs := &apitest.LockedBuffer{}
	logger := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, logger, ln) }()

	base := "http://" + ln.Addr().String()
	get := func(path, token string) (int, string) {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, base+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	poll(t, func() bool { status, _ := get("/readyz", ""); return status == http.StatusOK })
	if _, body := get("/readyz", ""); !strings.Contains(body, `"nats":"ok"`) {
		t.Errorf("/readyz = %s, want a nats check", body)
	}
	if status, body := get("/auth/me", iss.Token(sub)); status != http.StatusOK || !strings.Contains(body, `"first_name":"Ada"`) {
		t.Errorf("first request: %d %s", status, body)
	}
	if _, body := get("/metrics", ""); !strings.Contains(body, `clerksync_api_jit_requests_total{outcome="synced"} 1`) {
		t.Errorf("/metrics lacks the synced request:\n%s", body)
	}

	ns.Shutdown()
	poll(t, func() bool { status, _ := get("/readyz", ""); return status == http.StatusServiceUnavailable })

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return within 15s of its context ending")
	}
	if strings.Contains(logs.String(), testSecretKey) {
		t.Error("the log holds CLERK_SECRET_KEY")
	}
	if !strings.Contains(logs.String(), "just-in-time sync on") {
		t.Error("the log does not say just-in-time sync is on")
	}
}

// TestRunStartsBeforePostgres: the api starts while Postgres is unreachable (an orchestrator may
// start it first): it answers /healthz, fails /readyz naming postgres, and answers a valid token
// 503 database_unavailable, instead of exiting.
func TestRunStartsBeforePostgres(t *testing.T) {
	t.Parallel()
	iss := sessiontest.NewIssuer(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + ln.Addr().String()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Config{
			DatabaseURL:  "postgres://postgres@127.0.0.1:1/clerksync?sslmode=disable&connect_timeout=1",
			JWTKey:       iss.PublicKeyPEM(),
			JWKSCacheTTL: time.Hour,
			JWTLeeway:    5 * time.Second,
		}, slog.New(slog.DiscardHandler), ln)
	}()
	get := func(path string, header http.Header) (int, string) {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, base+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header = header
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if status, _ := get("/healthz", nil); status == http.StatusOK {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("the api exited instead of waiting for Postgres: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("/healthz never answered")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if status, body := get("/readyz", nil); status != http.StatusServiceUnavailable || !strings.Contains(body, "postgres") {
		t.Errorf("/readyz = %d %s, want 503 naming postgres", status, body)
	}
	status, body := get("/auth/me", http.Header{"Authorization": {"Bearer " + iss.Token("user_2early")}})
	if status != http.StatusServiceUnavailable || !strings.Contains(body, "database_unavailable") {
		t.Errorf("/auth/me = %d %s, want 503 database_unavailable", status, body)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run after the context ended: %v", err)
	}
}
