package api

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/clerksync/clerksync/internal/api/apitest"
	"github.com/clerksync/clerksync/internal/postgres/dbsqlc"
	"github.com/clerksync/clerksync/internal/postgres/postgrestest"
	"github.com/clerksync/clerksync/internal/service"
	"github.com/clerksync/clerksync/internal/session"
	"github.com/clerksync/clerksync/internal/session/sessiontest"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// bundle is one api under test: its issuer, handler, database and log.
type bundle struct {
	issuer   *sessiontest.Issuer
	handler  http.Handler
	queries  *dbsqlc.Queries // for seeding rows, through the same sqlc queries the worker uses
	pool     *pgxpool.Pool
	registry *prometheus.Registry
	logs     *apitest.LockedBuffer
}

type setupConfig struct {
	session     func(*session.Options)
	corsOrigins []string
	databaseURL string
	jit         *jitSetup // just-in-time sync on, when set
}

// setup builds an api on a fresh database and a fake Clerk instance, with the checks production
// runs with: issuer, authorized party, 5 s leeway.
func setup(t testing.TB, change ...func(*setupConfig)) *bundle {
	t.Helper()
	var cfg setupConfig
	for _, c := range change {
		c(&cfg)
	}
	iss := sessiontest.NewIssuer(t)
	if cfg.databaseURL == "" {
		cfg.databaseURL = postgrestest.NewDatabase(t)
	}
	poolCfg, err := pgxpool.ParseConfig(cfg.databaseURL)
	if err != nil {
		t.Fatal(err)
	}
	poolCfg.ConnConfig.Tracer = queryCounter{}
	poolCfg.ConnConfig.ConnectTimeout = 2 * time.Second
	pool, err := pgxpool.NewWithConfig(context.Background(), poolCfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)

	logs := &apitest.LockedBuffer{}
	logger := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	reg := prometheus.NewRegistry()
	m := newMetrics(reg)
	opts := session.Options{
		JWKSURL:           iss.JWKSURL(),
		Leeway:            5 * time.Second,
		Issuer:            sessiontest.IssuerURL,
		AuthorizedParties: []string{sessiontest.AuthorizedParty},
		OnRefresh:         m.observeJWKSFetch,
	}
	if cfg.session != nil {
		cfg.session(&opts)
	}
	v, err := session.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	poll(t, func() bool { return v.Ready() == nil })
	origins, err := parseOrigins(cfg.corsOrigins)
	if err != nil {
		t.Fatal(err)
	}
	var j *jit
	if cfg.jit != nil {
		j = cfg.jit.start(t, logger, reg, dbsqlc.New(pool))
	}
	return &bundle{
		issuer: iss,
		handler: newHandler(deps{
			logger: logger, pool: pool, verifier: v, registry: reg, metrics: m, corsOrigins: origins, jit: j,
		}),
		queries:  dbsqlc.New(pool),
		pool:     pool,
		registry: reg,
		logs:     logs,
	}
}

// request is one request to the api.
type request struct {
	method        string // GET when empty
	path          string // /auth/me when empty
	bearer        string // sent as Authorization: Bearer <bearer>
	authorization string // a raw Authorization header, instead of bearer
	cookie        string // sent as the __session cookie
	header        map[string]string
}

// do serves r and returns the answer and how many database queries it ran.
func (b *bundle) do(t testing.TB, r request) (*httptest.ResponseRecorder, int64) {
	t.Helper()
	var queries atomic.Int64
	ctx := context.WithValue(context.Background(), queryCountKey{}, &queries)
	req := httptest.NewRequestWithContext(ctx, cmpOr(r.method, http.MethodGet), cmpOr(r.path, "/auth/me"), nil)
	switch {
	case r.authorization != "":
		req.Header.Set("Authorization", r.authorization)
	case r.bearer != "":
		req.Header.Set("Authorization", "Bearer "+r.bearer)
	}
	if r.cookie != "" {
		req.Header.Set("Cookie", sessionCookie+"="+r.cookie)
	}
	for k, v := range r.header {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	b.handler.ServeHTTP(rec, req)
	return rec, queries.Load()
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// wantError checks an error answer: status, the contract's JSON body and code.
func wantError(t testing.TB, rec *httptest.ResponseRecorder, status int, code string) {
	t.Helper()
	if rec.Code != status {
		t.Errorf("status = %d, want %d (body %s)", rec.Code, status, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q", ct)
	}
	var body service.ErrorBody
	dec := json.NewDecoder(bytes.NewReader(rec.Body.Bytes()))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil {
		t.Fatalf("body %q is not the error shape: %v", rec.Body, err)
	}
	if body.Error.Code != code || body.Error.Message == "" {
		t.Errorf("error = %+v, want code %q and a message", body.Error, code)
	}
}

// queryCounter counts the queries a request runs: the count travels in the request's context.
type queryCounter struct{}

type queryCountKey struct{}

func (queryCounter) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	if n, ok := ctx.Value(queryCountKey{}).(*atomic.Int64); ok {
		n.Add(1)
	}
	return ctx
}

func (queryCounter) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// user is the Clerk side of a synced user.
type user struct {
	id        string
	fields    map[string]any // email, username, first_name, last_name, image_url
	createdAt time.Time
	updatedAt time.Time
}

// syncUser writes a user as the worker does on user.created: the users row, then its
// subscription and usage row.
func (b *bundle) syncUser(t testing.TB, u user) {
	t.Helper()
	field := func(name string) []*string {
		if v, ok := u.fields[name].(string); ok {
			return []*string{&v}
		}
		return []*string{nil}
	}
	b.applyEvent(t, dbsqlc.ApplyEventsParams{
		EventIds:        []string{"msg_" + u.id},
		EventTypes:      []string{"user.created"},
		ClerkUserIds:    []string{u.id},
		Emails:          field("email"),
		Usernames:       field("username"),
		FirstNames:      field("first_name"),
		LastNames:       field("last_name"),
		ImageUrls:       field("image_url"),
		ClerkData:       [][]byte{fmt.Appendf(nil, `{"id":%q}`, u.id)},
		ClerkCreatedAts: []pgtype.Timestamptz{{Time: u.createdAt, Valid: true}},
		ClerkUpdatedAts: []pgtype.Timestamptz{{Time: u.updatedAt, Valid: true}},
		DeletedAts:      []pgtype.Timestamptz{{}},
	})
}

// deleteUser writes a tombstone as the worker does on user.deleted.
func (b *bundle) deleteUser(t testing.TB, clerkID string, at time.Time) {
	t.Helper()
	none := []*string{nil}
	b.applyEvent(t, dbsqlc.ApplyEventsParams{
		EventIds:        []string{"msg_deleted_" + clerkID},
		EventTypes:      []string{"user.deleted"},
		ClerkUserIds:    []string{clerkID},
		Emails:          none,
		Usernames:       none,
		FirstNames:      none,
		LastNames:       none,
		ImageUrls:       none,
		ClerkData:       [][]byte{nil},
		ClerkCreatedAts: []pgtype.Timestamptz{{}},
		ClerkUpdatedAts: []pgtype.Timestamptz{{}},
		DeletedAts:      []pgtype.Timestamptz{{Time: at, Valid: true}},
	})
}

// applyEvent applies one event with the worker's statement (apitest.ApplyEvent).
func (b *bundle) applyEvent(t testing.TB, ev dbsqlc.ApplyEventsParams) {
	t.Helper()
	apitest.ApplyEvent(t, context.Background(), b.queries, ev)
}

func ada() user {
	return user{
		id: "user_2adaLovelace",
		fields: map[string]any{
			"email":      "ada@example.com",
			"username":   "ada",
			"first_name": "Ada",
			"last_name":  "Lovelace",
			"image_url":  "https://img.clerk.com/ada.png",
		},
		createdAt: time.Date(2024, 1, 2, 3, 4, 5, 678_000_000, time.UTC),
		updatedAt: time.Date(2024, 6, 7, 8, 9, 10, 0, time.FixedZone("CEST", 2*3600)),
	}
}

func TestAuthMe(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		user   user
		golden string
	}{
		{"synced user", ada(), "me.golden.json"},
		{"null fields", user{
			id:        "user_2noNames",
			fields:    map[string]any{"email": "anon@example.com"},
			createdAt: time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC),
			updatedAt: time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC),
		}, "me_nulls.golden.json"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			before := time.Now().Add(-time.Second)
			b.syncUser(t, tt.user)
			rec, queries := b.do(t, request{bearer: b.issuer.Token(tt.user.id)})
			if rec.Code != http.StatusOK {
				t.Fatalf("status = %d, body %s", rec.Code, rec.Body)
			}
			if queries != 1 {
				t.Errorf("queries = %d, want 1 (one join)", queries)
			}
			if got := rec.Header().Get("Cache-Control"); got != "no-store" {
				t.Errorf("Cache-Control = %q", got)
			}
			// started_at is the wall clock of the sync: check it, then pin it for the golden file.
			var body struct {
				Subscription struct {
					StartedAt string `json:"started_at"`
				} `json:"subscription"`
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
				t.Fatal(err)
			}
			started, err := time.Parse(time.RFC3339Nano, body.Subscription.StartedAt)
			if err != nil || started.Before(before) || started.After(time.Now().Add(time.Second)) || started.Location() != time.UTC {
				t.Errorf("started_at = %q (%v): want a UTC RFC 3339 time of the sync", body.Subscription.StartedAt, err)
			}
			got := bytes.Replace(rec.Body.Bytes(), []byte(body.Subscription.StartedAt), []byte("STARTED_AT"), 1)
			golden(t, tt.golden, got)
		})
	}
}

// golden compares got with testdata/name, rewriting it with -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading golden file (run go test -update to create it): %v", err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("%s (-want +got):\n%s", path, diff)
	}
}

func TestAuthMeNotFound(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.syncUser(t, ada())
	b.deleteUser(t, "user_2gone", time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC))
	// Deleted after being synced.
	other := ada()
	other.id = "user_2deletedLater"
	b.syncUser(t, other)
	b.deleteUser(t, other.id, time.Now())

	for _, tt := range []struct {
		sub, code, retryAfter string
	}{
		{"user_2unknown", "user_not_synced", "1"},
		{"user_2gone", "user_deleted", ""},
		{"user_2deletedLater", "user_deleted", ""},
	} {
		t.Run(tt.sub, func(t *testing.T) {
			t.Parallel()
			rec, _ := b.do(t, request{bearer: b.issuer.Token(tt.sub)})
			wantError(t, rec, http.StatusNotFound, tt.code)
			if got := rec.Header().Get("Retry-After"); got != tt.retryAfter {
				t.Errorf("Retry-After = %q, want %q", got, tt.retryAfter)
			}
		})
	}
}

func TestTokenSources(t *testing.T) {
	t.Parallel()
	b := setup(t)
	a, c := ada(), ada()
	c.id = "user_2cookie"
	b.syncUser(t, a)
	b.syncUser(t, c)
	headerToken, cookieToken := b.issuer.Token(a.id), b.issuer.Token(c.id)
	expired := sessiontest.Claims(a.id)
	expired["exp"] = time.Now().Add(-time.Hour).Unix()

	tests := []struct {
		name   string
		req    request
		status int
		want   string // clerk_user_id, or the error code
	}{
		{"header", request{bearer: headerToken}, 200, a.id},
		{"cookie", request{cookie: cookieToken}, 200, c.id},
		{"both: the header wins", request{bearer: headerToken, cookie: cookieToken}, 200, a.id},
		{"both, header invalid: still the header", request{bearer: b.issuer.Mint(expired), cookie: cookieToken}, 401, "invalid_token"},
		{"lower-case scheme", request{authorization: "bearer " + headerToken}, 200, a.id},
		{"another scheme falls back to the cookie", request{authorization: "Basic dXNlcjpwdw==", cookie: cookieToken}, 200, c.id},
		{"another scheme, no cookie", request{authorization: "Basic dXNlcjpwdw=="}, 401, "missing_token"},
		{"nothing", request{}, 401, "missing_token"},
		{"empty bearer", request{authorization: "Bearer "}, 401, "invalid_token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rec, _ := b.do(t, tt.req)
			if tt.status != http.StatusOK {
				wantError(t, rec, tt.status, tt.want)
				return
			}
			var got struct {
				ClerkUserID string `json:"clerk_user_id"`
			}
			if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &got) != nil {
				t.Fatalf("status %d, body %s", rec.Code, rec.Body)
			}
			if diff := cmp.Diff(tt.want, got.ClerkUserID); diff != "" {
				t.Errorf("clerk_user_id (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRoutes(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tests := []struct {
		name   string
		req    request
		status int
		code   string
		allow  string
	}{
		{"unknown route", request{path: "/nope"}, 404, "not_found", ""},
		{"unknown route under /auth", request{path: "/auth/you"}, 404, "not_found", ""},
		{"root", request{path: "/"}, 404, "not_found", ""},
		{"wrong method", request{method: http.MethodPost}, 405, "method_not_allowed", "OPTIONS, GET"},
		{"wrong method on /healthz", request{method: http.MethodDelete, path: "/healthz"}, 405, "method_not_allowed", "OPTIONS, GET"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rec, queries := b.do(t, tt.req)
			wantError(t, rec, tt.status, tt.code)
			if got := rec.Header().Get("Allow"); got != tt.allow {
				t.Errorf("Allow = %q, want %q", got, tt.allow)
			}
			if queries != 0 {
				t.Errorf("queries = %d", queries)
			}
		})
	}
}

func TestOpsEndpoints(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, path := range []string{"/healthz", "/readyz"} {
		rec, _ := b.do(t, request{path: path})
		if rec.Code != http.StatusOK {
			t.Errorf("%s: status %d, body %s", path, rec.Code, rec.Body)
		}
	}
	rec, _ := b.do(t, request{path: "/readyz"})
	if !strings.Contains(rec.Body.String(), `"postgres":"ok"`) || !strings.Contains(rec.Body.String(), `"session_keys":"ok"`) {
		t.Errorf("/readyz body %s", rec.Body)
	}

	b.do(t, request{bearer: b.issuer.Token("user_2x")})            // 404 user_not_synced
	b.do(t, request{bearer: strings.Repeat("a", 9000)})            // too large
	b.do(t, request{})                                             // missing
	b.do(t, request{path: "/nope/" + strings.Repeat("x", 100)})    // unmatched
	b.do(t, request{method: "BREW", path: "/auth/me", bearer: ""}) // odd method
	rec, _ = b.do(t, request{path: "/metrics"})
	for _, want := range []string{
		`clerksync_api_requests_total{method="GET",route="/auth/me",status="404"} 1`,
		`clerksync_api_requests_total{method="GET",route="/auth/me",status="401"} 2`,
		`clerksync_api_requests_total{method="GET",route="unmatched",status="404"} 1`,
		`clerksync_api_requests_total{method="other",route="/auth/me",status="405"} 1`,
		`clerksync_api_request_duration_seconds_count{route="/auth/me"} 4`,
		`clerksync_api_auth_failures_total{reason="too_large"} 1`,
		`clerksync_api_auth_failures_total{reason="missing_token"} 1`,
		`clerksync_api_auth_failures_total{reason="signature"} 0`,
		`clerksync_api_jwks_fetches_total{result="ok"} 1`,
	} {
		if !strings.Contains(rec.Body.String(), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

func TestDatabaseDown(t *testing.T) {
	t.Parallel()
	// Nothing listens on port 1: every query fails to connect.
	b := setup(t, func(c *setupConfig) {
		c.databaseURL = "postgres://postgres@127.0.0.1:1/clerksync?sslmode=disable"
	})
	rec, _ := b.do(t, request{bearer: b.issuer.Token("user_2x")})
	wantError(t, rec, http.StatusServiceUnavailable, "database_unavailable")
	if rec.Header().Get("Retry-After") == "" {
		t.Error("no Retry-After")
	}
	rec, _ = b.do(t, request{path: "/readyz"})
	if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), `"postgres":"unavailable"`) {
		t.Errorf("/readyz: status %d, body %s", rec.Code, rec.Body)
	}
}

func TestCORS(t *testing.T) {
	t.Parallel()
	const origin = "https://app.example.com"
	b := setup(t, func(c *setupConfig) { c.corsOrigins = []string{origin, "http://localhost:3000/"} })
	preflight := func(origin string) map[string]string {
		return map[string]string{
			"Origin":                         origin,
			"Access-Control-Request-Method":  "GET",
			"Access-Control-Request-Headers": "authorization",
		}
	}
	t.Run("preflight from an allowed origin", func(t *testing.T) {
		t.Parallel()
		rec, queries := b.do(t, request{method: http.MethodOptions, header: preflight(origin)})
		if rec.Code != http.StatusNoContent {
			t.Fatalf("status %d", rec.Code)
		}
		for k, want := range map[string]string{
			"Access-Control-Allow-Origin":      origin,
			"Access-Control-Allow-Credentials": "true",
			"Access-Control-Allow-Methods":     "GET,HEAD",
			"Access-Control-Allow-Headers":     "Authorization,Content-Type,X-Request-Id",
			"Access-Control-Max-Age":           "600",
		} {
			if got := rec.Header().Get(k); got != want {
				t.Errorf("%s = %q, want %q", k, got, want)
			}
		}
		if queries != 0 {
			t.Errorf("a preflight ran %d queries", queries)
		}
	})
	t.Run("origin with a trailing slash in the config", func(t *testing.T) {
		t.Parallel()
		rec, _ := b.do(t, request{method: http.MethodOptions, header: preflight("http://localhost:3000")})
		if got := rec.Header().Get("Access-Control-Allow-Origin"); got != "http://localhost:3000" {
			t.Errorf("Access-Control-Allow-Origin = %q", got)
		}
	})
	t.Run("preflight from another origin", func(t *testing.T) {
		t.Parallel()
		for _, o := range []string{"https://evil.example.com", "https://app.example.com.evil.test", "null"} {
			rec, _ := b.do(t, request{method: http.MethodOptions, header: preflight(o)})
			if got := rec.Header().Get("Access-Control-Allow-Origin"); got != "" {
				t.Errorf("%s: Access-Control-Allow-Origin = %q", o, got)
			}
		}
	})
	t.Run("actual request exposes headers", func(t *testing.T) {
		t.Parallel()
		rec, _ := b.do(t, request{bearer: b.issuer.Token("user_2x"), header: map[string]string{"Origin": origin}})
		wantError(t, rec, http.StatusNotFound, "user_not_synced")
		if got := rec.Header().Get("Access-Control-Allow-Origin"); got != origin {
			t.Errorf("Access-Control-Allow-Origin = %q", got)
		}
		if got := rec.Header().Get("Access-Control-Expose-Headers"); got != "X-Request-Id,Retry-After,WWW-Authenticate" {
			t.Errorf("Access-Control-Expose-Headers = %q", got)
		}
	})
	t.Run("any origin", func(t *testing.T) {
		t.Parallel()
		b := setup(t, func(c *setupConfig) { c.corsOrigins = []string{"*"} })
		rec, _ := b.do(t, request{method: http.MethodOptions, header: preflight("https://anywhere.test")})
		if got := rec.Header().Get("Access-Control-Allow-Origin"); got != "*" {
			t.Errorf("Access-Control-Allow-Origin = %q", got)
		}
		if got := rec.Header().Get("Access-Control-Allow-Credentials"); got != "" {
			t.Errorf("credentials allowed with *: %q", got)
		}
	})
	t.Run("no origins configured", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		rec, _ := b.do(t, request{method: http.MethodOptions, header: preflight(origin)})
		if got := rec.Header().Get("Access-Control-Allow-Origin"); got != "" {
			t.Errorf("Access-Control-Allow-Origin = %q", got)
		}
	})
}

func TestRequestIDAndLogs(t *testing.T) {
	t.Parallel()
	b := setup(t)
	token := b.issuer.Token("user_2x")
	rec, _ := b.do(t, request{bearer: token, header: map[string]string{"X-Request-Id": "req-123"}, path: "/auth/me?__clerk_db_jwt=" + token})
	if got := rec.Header().Get("X-Request-Id"); got != "req-123" {
		t.Errorf("X-Request-Id = %q, want the caller's", got)
	}
	rec, _ = b.do(t, request{cookie: token, header: map[string]string{"X-Request-Id": "bad id\nlevel=ERROR"}})
	if got := rec.Header().Get("X-Request-Id"); got == "" || strings.ContainsAny(got, " \n") {
		t.Errorf("X-Request-Id = %q, want a fresh one", got)
	}
	// A refused token is logged by reason only.
	bad := b.issuer.Mint(sessiontest.Claims("user_2x"), sessiontest.WithHeader("typ", "at+jwt"))
	b.do(t, request{bearer: bad})

	logs := b.logs.String()
	for _, secret := range []string{token, bad, strings.Split(token, ".")[2], strings.Split(bad, ".")[2]} {
		if strings.Contains(logs, secret) {
			t.Fatalf("a token reached the log:\n%s", logs)
		}
	}
	for _, want := range []string{`"request_id":"req-123"`, `"auth_failure":"header"`, `"clerk_user_id":"user_2x"`, `"route":"/auth/me"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %s:\n%s", want, logs)
		}
	}
}

func TestConfig(t *testing.T) {
	t.Parallel()
	cfg, err := service.ParseEnv[Config](func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		Addr:         ":8081",
		DatabaseURL:  "postgres://postgres@127.0.0.1:5432/clerksync?sslmode=disable",
		JWKSCacheTTL: time.Hour,
		JWTLeeway:    5 * time.Second,
		ClerkAPIURL:  "https://api.clerk.com",
		ClerkAPIRate: 10,
		JITWait:      3 * time.Second,
		NATSURL:      "nats://127.0.0.1:4222",
	}
	if diff := cmp.Diff(want, cfg); diff != "" {
		t.Errorf("defaults (-want +got):\n%s", diff)
	}
	if err := cfg.check(); err != errNoKeySource { //nolint:errorlint // the assertion is that check returns the sentinel itself
		t.Errorf("check without a key source = %v", err)
	}

	env := map[string]string{
		"CLERK_JWKS_URL":           "https://clerk.example.com/.well-known/jwks.json",
		"CLERK_AUTHORIZED_PARTIES": "https://a.example.com, https://b.example.com",
		"CORS_ALLOWED_ORIGINS":     "https://a.example.com",
	}
	cfg, err = service.ParseEnv[Config](func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.check(); err != nil {
		t.Errorf("check: %v", err)
	}
	if diff := cmp.Diff([]string{"https://a.example.com", " https://b.example.com"}, cfg.AuthorizedParties); diff != "" {
		t.Errorf("parties (-want +got):\n%s", diff) // trimmed by session.New
	}

	for name, change := range map[string]func(*Config){
		"short TTL":        func(c *Config) { c.JWKSCacheTTL = time.Second },
		"negative leeway":  func(c *Config) { c.JWTLeeway = -time.Second },
		"huge leeway":      func(c *Config) { c.JWTLeeway = time.Hour },
		"origin with path": func(c *Config) { c.CORSAllowedOrigins = []string{"https://a.example.com/app"} },
		"not an origin":    func(c *Config) { c.CORSAllowedOrigins = []string{"a.example.com"} },
		"JIT_WAIT zero":    func(c *Config) { c.ClerkSecretKey, c.JITWait = "sk_test_x", 0 },
		"JIT_WAIT huge":    func(c *Config) { c.ClerkSecretKey, c.JITWait = "sk_test_x", time.Hour },
		"negative rate":    func(c *Config) { c.ClerkSecretKey, c.ClerkAPIRate = "sk_test_x", -1 },
		"no NATS_URL":      func(c *Config) { c.ClerkSecretKey, c.NATSURL = "sk_test_x", " " },
	} {
		c := cfg
		change(&c)
		if err := c.check(); err == nil {
			t.Errorf("%s: check passed", name)
		}
	}
}

func poll(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
