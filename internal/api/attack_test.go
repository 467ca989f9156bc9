package api

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/clerksync/clerksync/internal/session"
	"github.com/clerksync/clerksync/internal/session/sessiontest"
)

// TestAttackTable sends hostile session tokens — every one a real signed token unless the row is
// about a broken signature — and checks each is refused with 401, the contract's code and
// challenge, and without a single database query. The database has no row for these users, so a
// token let through would also show as 404 user_not_synced.
func TestAttackTable(t *testing.T) {
	t.Parallel()
	// The verifier's clock is pinned, so the leeway rows do not depend on how long the run takes.
	now := time.Now()
	b := setup(t, func(c *setupConfig) {
		c.session = func(o *session.Options) { o.Now = func() time.Time { return now } }
	})
	iss := b.issuer
	key := iss.Key()

	// The attacker's key and server: a token pointing at it must never make us fetch anything.
	attacker := sessiontest.NewKey(t)
	var attackerHits atomic.Int64
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		attackerHits.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"keys": []any{sessiontest.JWK(attacker)}})
	}))
	t.Cleanup(evil.Close)

	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})

	const sub = "user_2victim"
	base := func() jwt.MapClaims { return sessiontest.ClaimsAt(sub, now) }
	claims := func(change func(jwt.MapClaims)) jwt.MapClaims {
		c := base()
		change(c)
		return c
	}
	valid := iss.Mint(base())
	parts := strings.Split(valid, ".")
	foreign := iss.Mint(base(), sessiontest.WithMethod(jwt.SigningMethodRS256, attacker.Private))

	// A flipped payload bit: sub "user_2victim" becomes "user_2victio".
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	i := strings.Index(string(payload), sub) + len(sub) - 1
	payload[i] ^= 0x02
	flipped := parts[0] + "." + base64.RawURLEncoding.EncodeToString(payload) + "." + parts[2]

	const invalidChallenge = `Bearer error="invalid_token"`
	tests := []struct {
		name   string
		req    request
		code   string // invalid_token unless set
		accept bool   // the token is fine: the request reaches the database (404 user_not_synced)
	}{
		{name: "alg none", req: request{bearer: iss.Mint(base(), sessiontest.WithMethod(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType))}},
		{name: "alg None", req: request{bearer: sessiontest.Encode(t, map[string]any{"alg": "None", "typ": "JWT", "kid": key.ID}, base(), nil)}},
		{name: "alg none with our signature", req: request{bearer: sessiontest.Encode(t, map[string]any{"alg": "none", "kid": key.ID}, base(), []byte("sig"))}},
		{name: "HS256 signed with the PEM public key", req: request{bearer: iss.Mint(base(), sessiontest.WithMethod(jwt.SigningMethodHS256, pubPEM))}},
		{name: "HS256 signed with the DER public key", req: request{bearer: iss.Mint(base(), sessiontest.WithMethod(jwt.SigningMethodHS256, pubDER))}},
		{name: "RS384", req: request{bearer: iss.Mint(base(), sessiontest.WithMethod(jwt.SigningMethodRS384, key.Private))}},
		{name: "PS256", req: request{bearer: iss.Mint(base(), sessiontest.WithMethod(jwt.SigningMethodPS256, key.Private))}},
		{name: "ES256", req: request{bearer: iss.Mint(base(), sessiontest.WithMethod(jwt.SigningMethodES256, ecKey))}},
		{name: "RS256 header over a PS256 signature", req: request{bearer: iss.Mint(base(), sessiontest.WithMethod(jwt.SigningMethodPS256, key.Private), sessiontest.WithHeader("alg", "RS256"))}},
		{name: "stripped signature", req: request{bearer: parts[0] + "." + parts[1] + "."}},
		{name: "no signature segment", req: request{bearer: parts[0] + "." + parts[1]}},
		{name: "foreign signature", req: request{bearer: parts[0] + "." + parts[1] + "." + strings.Split(foreign, ".")[2]}},
		{name: "signed by a foreign key under our kid", req: request{bearer: foreign}},
		{name: "flipped payload bit", req: request{bearer: flipped}},
		{name: "padded signature", req: request{bearer: valid + "="}},
		{name: "missing kid", req: request{bearer: iss.Mint(base(), sessiontest.WithHeader("kid", nil))}},
		{name: "unknown kid", req: request{bearer: iss.Mint(base(), sessiontest.WithHeader("kid", "ins_unknown"))}},
		{name: "kid path traversal", req: request{bearer: iss.Mint(base(), sessiontest.WithHeader("kid", "../../../../etc/passwd"))}},
		{name: "kid SQL", req: request{bearer: iss.Mint(base(), sessiontest.WithHeader("kid", "' OR '1'='1'; DROP TABLE users; --"))}},
		{name: "kid huge", req: request{bearer: iss.Mint(base(), sessiontest.WithHeader("kid", strings.Repeat("A", 6000)))}},
		{name: "kid NUL and newline", req: request{bearer: iss.Mint(base(), sessiontest.WithHeader("kid", key.ID+"\x00\nlevel=ERROR"))}},
		{name: "kid an object", req: request{bearer: iss.Mint(base(), sessiontest.WithHeader("kid", map[string]any{"$ne": ""}))}},
		{name: "kid a list", req: request{bearer: iss.Mint(base(), sessiontest.WithHeader("kid", []string{key.ID}))}},
		{name: "jku to the attacker", req: request{bearer: iss.Mint(base(), sessiontest.WithKey(attacker), sessiontest.WithHeader("jku", evil.URL+"/jwks.json"))}},
		{name: "jku on our own key", req: request{bearer: iss.Mint(base(), sessiontest.WithHeader("jku", evil.URL+"/jwks.json"))}},
		{name: "x5u to the attacker", req: request{bearer: iss.Mint(base(), sessiontest.WithKey(attacker), sessiontest.WithHeader("x5u", evil.URL+"/cert.pem"))}},
		{name: "jwk embedded", req: request{bearer: iss.Mint(base(), sessiontest.WithKey(attacker), sessiontest.WithHeader("jwk", sessiontest.JWK(attacker)))}},
		{name: "jwk embedded without kid", req: request{bearer: iss.Mint(base(), sessiontest.WithKey(attacker), sessiontest.WithHeader("kid", nil), sessiontest.WithHeader("jwk", sessiontest.JWK(attacker)))}},
		{name: "crit", req: request{bearer: iss.Mint(base(), sessiontest.WithHeader("crit", []string{"exp"}))}},
		{name: "crit empty", req: request{bearer: iss.Mint(base(), sessiontest.WithHeader("crit", []string{}))}},
		{name: "typ at+jwt", req: request{bearer: iss.Mint(base(), sessiontest.WithHeader("typ", "at+jwt"))}},
		{name: "typ JWE", req: request{bearer: iss.Mint(base(), sessiontest.WithHeader("typ", "JWE"))}},
		{name: "exp missing", req: request{bearer: iss.Mint(claims(func(c jwt.MapClaims) { delete(c, "exp") }))}},
		{name: "exp not a number", req: request{bearer: iss.Mint(claims(func(c jwt.MapClaims) { c["exp"] = "never" }))}},
		{name: "expired beyond leeway", req: request{bearer: iss.Mint(claims(func(c jwt.MapClaims) { c["exp"] = now.Add(-time.Minute).Unix() }))}},
		{name: "expired within leeway", req: request{bearer: iss.Mint(claims(func(c jwt.MapClaims) { c["exp"] = now.Add(-2 * time.Second).Unix() }))}, accept: true},
		{name: "nbf in the future", req: request{bearer: iss.Mint(claims(func(c jwt.MapClaims) { c["nbf"] = now.Add(time.Minute).Unix() }))}},
		{name: "nbf within leeway", req: request{bearer: iss.Mint(claims(func(c jwt.MapClaims) { c["nbf"] = now.Add(2 * time.Second).Unix() }))}, accept: true},
		{name: "iat in the future", req: request{bearer: iss.Mint(claims(func(c jwt.MapClaims) { c["iat"] = now.Add(time.Minute).Unix() }))}},
		{name: "another issuer", req: request{bearer: iss.Mint(claims(func(c jwt.MapClaims) { c["iss"] = "https://evil.clerk.accounts.dev" }))}},
		{name: "issuer missing", req: request{bearer: iss.Mint(claims(func(c jwt.MapClaims) { delete(c, "iss") }))}},
		{name: "azp missing", req: request{bearer: iss.Mint(claims(func(c jwt.MapClaims) { delete(c, "azp") }))}},
		{name: "azp not listed", req: request{bearer: iss.Mint(claims(func(c jwt.MapClaims) { c["azp"] = "https://evil.example.com" }))}},
		{name: "sub missing", req: request{bearer: iss.Mint(claims(func(c jwt.MapClaims) { delete(c, "sub") }))}},
		{name: "sub empty", req: request{bearer: iss.Mint(claims(func(c jwt.MapClaims) { c["sub"] = "" }))}},
		{name: "sub not a string", req: request{bearer: iss.Mint(claims(func(c jwt.MapClaims) { c["sub"] = 42 }))}},
		{name: "sts pending", req: request{bearer: iss.Mint(claims(func(c jwt.MapClaims) { c["sts"] = "pending" }))}},
		{name: "sts active", req: request{bearer: iss.Mint(claims(func(c jwt.MapClaims) { c["sts"] = "active" }))}, accept: true},
		{name: "over 8 KiB", req: request{bearer: iss.Mint(claims(func(c jwt.MapClaims) { c["pad"] = strings.Repeat("x", 8<<10) }))}},
		{name: "megabyte of dots", req: request{bearer: strings.Repeat(".", 1<<20)}},
		{name: "megabyte of dots in the cookie", req: request{cookie: strings.Repeat(".", 1<<20)}},
		{name: "garbage", req: request{bearer: "not-a-token"}},
		{name: "invalid header, valid cookie: the header wins", req: request{bearer: "garbage", cookie: valid}},
		{name: "bad cookie", req: request{cookie: flipped}},
		{name: "no token", req: request{}, code: "missing_token"},
	}
	// Checked once every row has run (parallel subtests finish before cleanups).
	t.Cleanup(func() {
		if n := attackerHits.Load(); n != 0 {
			t.Errorf("the attacker's server was fetched %d times", n)
		}
		// One fetch at start, at most one more for the unknown kids.
		if n := iss.Fetches(); n > 2 {
			t.Errorf("our JWKS was fetched %d times", n)
		}
		if logs := b.logs.String(); strings.Contains(logs, parts[2]) || strings.Contains(logs, "DROP TABLE") {
			t.Errorf("the log holds token material:\n%s", logs)
		}
	})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rec, queries := b.do(t, tt.req)
			if tt.accept {
				wantError(t, rec, http.StatusNotFound, "user_not_synced")
				if queries != 1 {
					t.Errorf("queries = %d, want 1", queries)
				}
				return
			}
			code, challenge := "invalid_token", invalidChallenge
			if tt.code == "missing_token" {
				code, challenge = tt.code, "Bearer"
			}
			wantError(t, rec, http.StatusUnauthorized, code)
			if got := rec.Header().Values("WWW-Authenticate"); len(got) != 1 || got[0] != challenge {
				t.Errorf("WWW-Authenticate = %q, want %q", got, challenge)
			}
			if queries != 0 {
				t.Errorf("a refused token ran %d database queries", queries)
			}
		})
	}
}
