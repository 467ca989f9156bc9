package api

import (
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/clerksync/clerksync/internal/session"
	"github.com/clerksync/clerksync/internal/session/sessiontest"
)

func TestParsePublishableKey(t *testing.T) {
	t.Parallel()
	tests := []struct {
		key, host, err string
	}{
		// Clerk's documented development key shape, and a production one for a custom domain.
		{"pk_test_Y2xlYW4tbWFzdGlmZi04Ni5jbGVyay5hY2NvdW50cy5kZXYk", "clean-mastiff-86.clerk.accounts.dev", ""},
		{"pk_live_Y2xlcmsuY2xlcmtzeW5jLmV4YW1wbGUk", "clerk.clerksync.example", ""},
		{"pk_test_Y2xlcmsuY2xlcmtzeW5jLmV4YW1wbGUk", "clerk.clerksync.example", ""},
		{"pk_live_Y2xlcmsuY2xlcmtzeW5jLmV4YW1wbGUk\n", "clerk.clerksync.example", ""}, // as pasted, with its newline
		{"sk_test_Y2xlcmsuY2xlcmtzeW5jLmV4YW1wbGUk", "", "not a publishable key"},
		{"Y2xlcmsuY2xlcmtzeW5jLmV4YW1wbGUk", "", "not a publishable key"},
		{"pk_test_!!!", "", "not base64"},
		{"pk_test_" + b64("clerk.example.com"), "", "does not name a host"}, // no $
		{"pk_test_" + b64("$"), "", "does not name a host"},
		{"pk_test_" + b64("evil.example/path$"), "", "does not name a host"},
		{"pk_test_" + b64("user@evil.example$"), "", "does not name a host"},
	}
	for _, tt := range tests {
		host, err := ParsePublishableKey(tt.key)
		switch {
		case tt.err == "" && (err != nil || host != tt.host):
			t.Errorf("ParsePublishableKey(%q) = %q, %v; want %q", tt.key, host, err, tt.host)
		case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
			t.Errorf("ParsePublishableKey(%q) error %v, want one saying %q", tt.key, err, tt.err)
		case err != nil && strings.Contains(err.Error(), tt.key):
			t.Errorf("the error echoes the key: %v", err)
		}
	}
}

// TestKeySourcePrecedence: explicit CLERK_JWT_KEY, then CLERK_JWKS_URL, then the publishable key,
// then the secret key alone; the publishable key's issuer only when CLERK_ISSUER is unset.
func TestKeySourcePrecedence(t *testing.T) {
	t.Parallel()
	const pk = "pk_test_Y2xlYW4tbWFzdGlmZi04Ni5jbGVyay5hY2NvdW50cy5kZXYk"
	const host = "https://clean-mastiff-86.clerk.accounts.dev"
	pem := sessiontest.NewIssuer(t).PublicKeyPEM()
	type want struct{ Name, JWKSURL, Issuer string }
	tests := []struct {
		name string
		cfg  Config
		want want
	}{
		{"all four: the PEM key", Config{JWTKey: pem, JWKSURL: "https://x/jwks", PublishableKey: pk, ClerkSecretKey: "sk_test_x"}, want{"CLERK_JWT_KEY", "", ""}},
		{"JWKS URL over the dashboard keys", Config{JWKSURL: "https://x/jwks", PublishableKey: pk, ClerkSecretKey: "sk_test_x"}, want{"CLERK_JWKS_URL", "https://x/jwks", ""}},
		{"publishable key over the secret key", Config{PublishableKey: pk, ClerkSecretKey: "sk_test_x"}, want{"CLERK_PUBLISHABLE_KEY", host + "/.well-known/jwks.json", host}},
		{"publishable key, CLERK_ISSUER wins", Config{PublishableKey: pk, Issuer: "https://clerk.mine.example"}, want{"CLERK_PUBLISHABLE_KEY", host + "/.well-known/jwks.json", "https://clerk.mine.example"}},
		{"secret key alone", Config{ClerkSecretKey: "sk_test_x", ClerkAPIURL: "https://api.clerk.com"}, want{"CLERK_SECRET_KEY", "https://api.clerk.com/v1/jwks", ""}},
		{"secret key alone, API URL with a slash", Config{ClerkSecretKey: "sk_test_x", ClerkAPIURL: "http://127.0.0.1:9/"}, want{"CLERK_SECRET_KEY", "http://127.0.0.1:9/v1/jwks", ""}},
	}
	m := newMetrics(prometheus.NewRegistry())
	for _, tt := range tests {
		src, err := tt.cfg.keySource()
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		opts := tt.cfg.sessionOptions(src, slog.New(slog.DiscardHandler), m)
		if diff := cmp.Diff(tt.want, want{src.name, opts.JWKSURL, opts.Issuer}); diff != "" {
			t.Errorf("%s (-want +got)\n%s", tt.name, diff)
		}
	}
	if _, err := (Config{}).keySource(); err != errNoKeySource { //nolint:errorlint // the sentinel itself
		t.Errorf("no key source: %v", err)
	}
	if _, err := (Config{PublishableKey: "pk_live_nope"}).keySource(); err == nil || !strings.Contains(err.Error(), "CLERK_PUBLISHABLE_KEY") {
		t.Errorf("a malformed publishable key: %v", err)
	}
}

// TestSecretKeyAloneFetchesTheJWKS: with only CLERK_SECRET_KEY, the keys come from the Backend
// API's GET /v1/jwks, with the key as a Bearer token, and a token Clerk signed verifies.
func TestSecretKeyAloneFetchesTheJWKS(t *testing.T) {
	t.Parallel()
	iss := sessiontest.NewIssuer(t)
	const key = "sk_test_abcdefghijklmnop"
	var fetches, refused atomic.Int64
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/jwks" || r.Header.Get("Authorization") != "Bearer "+key {
			refused.Add(1)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		fetches.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"keys": []any{sessiontest.JWK(iss.Key())}})
	}))
	t.Cleanup(backend.Close)

	cfg := Config{ClerkSecretKey: key, ClerkAPIURL: backend.URL, Issuer: sessiontest.IssuerURL,
		AuthorizedParties: []string{sessiontest.AuthorizedParty}, JWKSCacheTTL: time.Hour}
	src, err := cfg.keySource()
	if err != nil {
		t.Fatal(err)
	}
	v, err := session.New(cfg.sessionOptions(src, slog.New(slog.DiscardHandler), newMetrics(prometheus.NewRegistry())))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	poll(t, func() bool { return v.Ready() == nil })
	claims, err := v.Verify(t.Context(), iss.Token("user_2secretonly"))
	if err != nil || claims.UserID() != "user_2secretonly" {
		t.Fatalf("Verify: %v, %v", claims, err)
	}
	if fetches.Load() == 0 || refused.Load() != 0 {
		t.Errorf("JWKS fetches %d, refused %d: want the Backend API asked with the key, never without", fetches.Load(), refused.Load())
	}
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
