package session_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/go-cmp/cmp"

	"github.com/clerksync/clerksync/internal/session"
	"github.com/clerksync/clerksync/internal/session/sessiontest"
)

// newVerifier returns a Verifier on iss's JWKS with the production checks (issuer, authorized
// party, 5 s leeway), closed when the test ends, once it has fetched the keys.
func newVerifier(t *testing.T, iss *sessiontest.Issuer, change ...func(*session.Options)) *session.Verifier {
	t.Helper()
	opts := session.Options{
		JWKSURL:           iss.JWKSURL(),
		Leeway:            5 * time.Second,
		Issuer:            sessiontest.IssuerURL,
		AuthorizedParties: []string{sessiontest.AuthorizedParty},
	}
	for _, c := range change {
		c(&opts)
	}
	v, err := session.New(opts)
	if err != nil {
		t.Fatalf("session.New: %v", err)
	}
	t.Cleanup(v.Close)
	if opts.PublicKey == "" {
		waitReady(t, v)
	}
	return v
}

// pinClock fixes the verifier's clock, so time-sensitive rows do not depend on the run's speed.
func pinClock(now time.Time) func(*session.Options) {
	return func(o *session.Options) { o.Now = func() time.Time { return now } }
}

func waitReady(t *testing.T, v *session.Verifier) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for v.Ready() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("verifier not ready: %v", v.Ready())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestVerifyAcceptsClerkToken(t *testing.T) {
	t.Parallel()
	iss := sessiontest.NewIssuer(t)
	v := newVerifier(t, iss)
	claims, err := v.Verify(t.Context(), iss.Token("user_2abc"))
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if diff := cmp.Diff("user_2abc", claims.UserID()); diff != "" {
		t.Errorf("UserID (-want +got):\n%s", diff)
	}
	if claims.SessionID != "sess_user_2abc" || claims.AuthorizedParty != sessiontest.AuthorizedParty {
		t.Errorf("claims = %+v", claims)
	}
}

// TestVerifyRefuses covers every reason at the package level; internal/api's attack table
// covers the same through HTTP.
func TestVerifyRefuses(t *testing.T) {
	t.Parallel()
	now := time.Now()
	iss := sessiontest.NewIssuer(t)
	v := newVerifier(t, iss, pinClock(now))
	foreign := sessiontest.NewKey(t)
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(iss.Key().Public())
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	claims := func(change func(jwt.MapClaims)) jwt.MapClaims {
		c := sessiontest.ClaimsAt("user_1", now)
		change(c)
		return c
	}
	valid := iss.Mint(sessiontest.ClaimsAt("user_1", now))
	parts := strings.Split(valid, ".")

	type refusal struct {
		name  string
		token string
		want  session.Reason
	}
	tests := []refusal{
		{"empty", "", session.ReasonMalformed},
		{"two segments", parts[0] + "." + parts[1], session.ReasonMalformed},
		{"megabyte of dots", strings.Repeat(".", 1<<20), session.ReasonTooLarge},
		{"over 8 KiB", iss.Mint(claims(func(c jwt.MapClaims) { c["pad"] = strings.Repeat("x", 8<<10) })), session.ReasonTooLarge},
		{"alg none", iss.Mint(sessiontest.ClaimsAt("user_1", now), sessiontest.WithMethod(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType)), session.ReasonAlgorithm},
		{"alg None", sessiontest.Encode(t, map[string]any{"alg": "None", "kid": iss.Key().ID}, sessiontest.ClaimsAt("user_1", now), nil), session.ReasonAlgorithm},
		{"HS256 with the PEM public key", iss.Mint(sessiontest.ClaimsAt("user_1", now), sessiontest.WithMethod(jwt.SigningMethodHS256, pubPEM)), session.ReasonAlgorithm},
		{"HS256 with the DER public key", iss.Mint(sessiontest.ClaimsAt("user_1", now), sessiontest.WithMethod(jwt.SigningMethodHS256, pubDER)), session.ReasonAlgorithm},
		{"RS384", iss.Mint(sessiontest.ClaimsAt("user_1", now), sessiontest.WithMethod(jwt.SigningMethodRS384, iss.Key().Private)), session.ReasonAlgorithm},
		{"PS256", iss.Mint(sessiontest.ClaimsAt("user_1", now), sessiontest.WithMethod(jwt.SigningMethodPS256, iss.Key().Private)), session.ReasonAlgorithm},
		{"ES256", iss.Mint(sessiontest.ClaimsAt("user_1", now), sessiontest.WithMethod(jwt.SigningMethodES256, ecKey)), session.ReasonAlgorithm},
		{"no alg", sessiontest.Encode(t, map[string]any{"kid": iss.Key().ID}, sessiontest.ClaimsAt("user_1", now), []byte("x")), session.ReasonAlgorithm},
		{"stripped signature", parts[0] + "." + parts[1] + ".", session.ReasonSignature},
		{"foreign key, our kid", iss.Mint(sessiontest.ClaimsAt("user_1", now), sessiontest.WithMethod(jwt.SigningMethodRS256, foreign.Private)), session.ReasonSignature},
		{"typ at+jwt", iss.Mint(sessiontest.ClaimsAt("user_1", now), sessiontest.WithHeader("typ", "at+jwt")), session.ReasonHeader},
		{"typ number", iss.Mint(sessiontest.ClaimsAt("user_1", now), sessiontest.WithHeader("typ", 1)), session.ReasonHeader},
		{"crit", iss.Mint(sessiontest.ClaimsAt("user_1", now), sessiontest.WithHeader("crit", []string{"exp"})), session.ReasonHeader},
		{"jku", iss.Mint(sessiontest.ClaimsAt("user_1", now), sessiontest.WithHeader("jku", "https://evil.test/jwks")), session.ReasonHeader},
		{"x5u", iss.Mint(sessiontest.ClaimsAt("user_1", now), sessiontest.WithHeader("x5u", "https://evil.test/cert")), session.ReasonHeader},
		{"jwk", iss.Mint(sessiontest.ClaimsAt("user_1", now), sessiontest.WithKey(foreign), sessiontest.WithHeader("jwk", sessiontest.JWK(foreign))), session.ReasonHeader},
		{"x5c", iss.Mint(sessiontest.ClaimsAt("user_1", now), sessiontest.WithHeader("x5c", []string{"MII"})), session.ReasonHeader},
		{"no kid", iss.Mint(sessiontest.ClaimsAt("user_1", now), sessiontest.WithHeader("kid", nil)), session.ReasonUnknownKey},
		{"kid number", iss.Mint(sessiontest.ClaimsAt("user_1", now), sessiontest.WithHeader("kid", 7)), session.ReasonUnknownKey},
		{"huge kid", iss.Mint(sessiontest.ClaimsAt("user_1", now), sessiontest.WithHeader("kid", strings.Repeat("k", 4000))), session.ReasonUnknownKey},
		{"exp missing", iss.Mint(claims(func(c jwt.MapClaims) { delete(c, "exp") })), session.ReasonMissingClaim},
		{"sub missing", iss.Mint(claims(func(c jwt.MapClaims) { delete(c, "sub") })), session.ReasonMissingClaim},
		{"sub empty", iss.Mint(claims(func(c jwt.MapClaims) { c["sub"] = "" })), session.ReasonMissingClaim},
		{"exp a string", iss.Mint(claims(func(c jwt.MapClaims) { c["exp"] = "tomorrow" })), session.ReasonMalformed},
		{"expired beyond leeway", iss.Mint(claims(func(c jwt.MapClaims) { c["exp"] = now.Add(-time.Minute).Unix() })), session.ReasonExpired},
		{"nbf in the future", iss.Mint(claims(func(c jwt.MapClaims) { c["nbf"] = now.Add(time.Minute).Unix() })), session.ReasonNotYetValid},
		{"iat in the future", iss.Mint(claims(func(c jwt.MapClaims) { c["iat"] = now.Add(time.Minute).Unix() })), session.ReasonIssuedInFuture},
		{"another issuer", iss.Mint(claims(func(c jwt.MapClaims) { c["iss"] = "https://evil.clerk.accounts.dev" })), session.ReasonIssuer},
		{"no issuer", iss.Mint(claims(func(c jwt.MapClaims) { delete(c, "iss") })), session.ReasonIssuer},
		{"azp missing", iss.Mint(claims(func(c jwt.MapClaims) { delete(c, "azp") })), session.ReasonAuthorizedParty},
		{"azp not listed", iss.Mint(claims(func(c jwt.MapClaims) { c["azp"] = "https://evil.test" })), session.ReasonAuthorizedParty},
		{"sts pending", iss.Mint(claims(func(c jwt.MapClaims) { c["sts"] = "pending" })), session.ReasonPendingSession},
	}
	// A claim spelled otherwise than RFC 7519 and Clerk spell it (claims_test.go).
	for _, c := range claimCases(t, now) {
		if c.want != "" {
			tests = append(tests, refusal{"claims: " + c.name, iss.MintRaw(c.payload), c.want})
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := v.Verify(t.Context(), tt.token)
			if diff := cmp.Diff(tt.want, session.ReasonOf(err)); diff != "" {
				t.Errorf("reason (-want +got):\n%s\nerr: %v", diff, err)
			}
			if err != nil && len(tt.token) > 20 && strings.Contains(err.Error(), tt.token[len(tt.token)-20:]) {
				t.Errorf("error message quotes the token: %v", err)
			}
		})
	}
}

func TestVerifyLeeway(t *testing.T) {
	t.Parallel()
	now := time.Now()
	iss := sessiontest.NewIssuer(t)
	v := newVerifier(t, iss, pinClock(now))
	for name, change := range map[string]func(jwt.MapClaims){
		"expired within leeway": func(c jwt.MapClaims) { c["exp"] = now.Add(-2 * time.Second).Unix() },
		"nbf within leeway":     func(c jwt.MapClaims) { c["nbf"] = now.Add(2 * time.Second).Unix() },
		"iat within leeway":     func(c jwt.MapClaims) { c["iat"] = now.Add(2 * time.Second).Unix() },
		"sts active":            func(c jwt.MapClaims) { c["sts"] = "active" },
		"typ absent":            func(c jwt.MapClaims) {},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			c := sessiontest.ClaimsAt("user_1", now)
			change(c)
			var opts []sessiontest.MintOption
			if name == "typ absent" {
				opts = append(opts, sessiontest.WithHeader("typ", nil))
			}
			if _, err := v.Verify(t.Context(), iss.Mint(c, opts...)); err != nil {
				t.Errorf("Verify: %v", err)
			}
		})
	}
}

func TestVerifyWithoutOptionalChecks(t *testing.T) {
	t.Parallel()
	iss := sessiontest.NewIssuer(t)
	// No issuer and no authorized parties configured: neither claim is required.
	v := newVerifier(t, iss, func(o *session.Options) { o.Issuer, o.AuthorizedParties = "", nil })
	c := sessiontest.Claims("user_1")
	delete(c, "iss")
	delete(c, "azp")
	if _, err := v.Verify(t.Context(), iss.Mint(c)); err != nil {
		t.Errorf("Verify: %v", err)
	}
}

func TestUnknownKIDsFetchAtMostOnce(t *testing.T) {
	t.Parallel()
	iss := sessiontest.NewIssuer(t)
	v := newVerifier(t, iss)
	// The tokens are minted first so the attack is only the verification. They are real RS256
	// tokens; a 1024-bit key nobody publishes keeps minting a thousand of them cheap.
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	tokens := make([]string, 1000)
	for i := range tokens {
		tokens[i] = iss.Mint(sessiontest.Claims("user_1"),
			sessiontest.WithMethod(jwt.SigningMethodRS256, small), sessiontest.WithHeader("kid", "ins_"+rand.Text()))
	}
	var wg sync.WaitGroup
	errs := make([]error, len(tokens))
	for i, tok := range tokens {
		wg.Go(func() { _, errs[i] = v.Verify(t.Context(), tok) })
	}
	wg.Wait()
	for i, err := range errs {
		if session.ReasonOf(err) != session.ReasonUnknownKey {
			t.Fatalf("token %d: err = %v, want unknown_key", i, err)
		}
	}
	if got := iss.Fetches(); got > 2 {
		t.Errorf("JWKS fetched %d times for 1,000 unknown kids, want at most 2 (start + one refresh)", got)
	}
	// A known kid still works, without another fetch.
	before := iss.Fetches()
	if _, err := v.Verify(t.Context(), iss.Token("user_1")); err != nil {
		t.Fatalf("Verify known kid: %v", err)
	}
	if got := iss.Fetches(); got != before {
		t.Errorf("known kid fetched the JWKS: %d → %d", before, got)
	}
}

func TestRotatedKeyAcceptedAfterOneRefresh(t *testing.T) {
	t.Parallel()
	iss := sessiontest.NewIssuer(t)
	v := newVerifier(t, iss)
	if got := iss.Fetches(); got != 1 {
		t.Fatalf("fetches after start = %d, want 1", got)
	}
	iss.Rotate()
	if _, err := v.Verify(t.Context(), iss.Token("user_1")); err != nil {
		t.Fatalf("Verify with the rotated key: %v", err)
	}
	if got := iss.Fetches(); got != 2 {
		t.Errorf("fetches = %d, want 2 (start + one refresh)", got)
	}
	// The old key is still published, and both now verify without fetching.
	old := iss.Mint(sessiontest.Claims("user_1"), sessiontest.WithKey(iss.Key()))
	if _, err := v.Verify(t.Context(), old); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if got := iss.Fetches(); got != 2 {
		t.Errorf("fetches = %d, want still 2", got)
	}
}

func TestRemovedKeyRefusedAfterRefresh(t *testing.T) {
	t.Parallel()
	iss := sessiontest.NewIssuer(t)
	v := newVerifier(t, iss, func(o *session.Options) { o.CacheTTL = 20 * time.Millisecond })
	oldKey := iss.Key()
	old := iss.Token("user_1")
	if _, err := v.Verify(t.Context(), old); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	iss.Rotate()
	iss.Revoke(oldKey)
	// A periodic refresh drops the revoked key.
	poll(t, func() bool {
		_, err := v.Verify(t.Context(), old)
		return session.ReasonOf(err) == session.ReasonUnknownKey
	})
	if _, err := v.Verify(t.Context(), iss.Token("user_1")); err != nil {
		t.Errorf("Verify with the new key: %v", err)
	}
}

func TestHangingJWKSDoesNotSlowKnownKeys(t *testing.T) {
	t.Parallel()
	iss := sessiontest.NewIssuer(t)
	// A fetch timeout far longer than the test, so the hang lasts for the whole check.
	v := newVerifier(t, iss, func(o *session.Options) { o.FetchTimeout = time.Hour })
	iss.Hang()
	unknown := make(chan error, 1)
	go func() {
		_, err := v.Verify(context.Background(), iss.Mint(sessiontest.Claims("user_1"), sessiontest.WithHeader("kid", "ins_new")))
		unknown <- err
	}()
	deadline := time.Now().Add(10 * time.Second)
	for iss.Hanging() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the unknown kid did not start a JWKS fetch")
		}
		time.Sleep(time.Millisecond)
	}
	// While that fetch hangs, known kids verify — and the fetch is still hanging afterwards, so
	// they did not wait for it.
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	for range 50 {
		if _, err := v.Verify(ctx, iss.Token("user_1")); err != nil {
			t.Fatalf("known kid during a hanging fetch: %v", err)
		}
	}
	if iss.Hanging() == 0 {
		t.Fatal("the hanging fetch ended before the known-kid checks: the test proved nothing")
	}
	// Another unknown kid neither waits on a limiter nor starts a fetch: it joins the one in
	// flight, and gives up with its own context.
	short, cancelShort := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancelShort()
	if _, err := v.Verify(short, iss.Mint(sessiontest.Claims("user_1"), sessiontest.WithHeader("kid", "ins_other"))); session.ReasonOf(err) != session.ReasonUnknownKey {
		t.Errorf("second unknown kid: err = %v, want unknown_key", err)
	}
	iss.Release()
	if err := <-unknown; session.ReasonOf(err) != session.ReasonUnknownKey {
		t.Errorf("unknown kid after the hang: err = %v, want unknown_key", err)
	}
	if got := iss.Fetches(); got != 2 {
		t.Errorf("fetches = %d, want 2", got)
	}
}

func TestPEMModeMakesNoRequest(t *testing.T) {
	t.Parallel()
	iss := sessiontest.NewIssuer(t)
	// Both set: the PEM key wins and the JWKS is never fetched, as in Clerk's SDKs.
	v := newVerifier(t, iss, func(o *session.Options) { o.PublicKey = iss.PublicKeyPEM() })
	if err := v.Ready(); err != nil {
		t.Fatalf("Ready: %v", err)
	}
	if _, err := v.Verify(t.Context(), iss.Token("user_1")); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	// Any kid, or none: there is one key.
	if _, err := v.Verify(t.Context(), iss.Mint(sessiontest.Claims("user_1"), sessiontest.WithHeader("kid", nil))); err != nil {
		t.Fatalf("Verify without kid: %v", err)
	}
	foreign := sessiontest.NewKey(t)
	if _, err := v.Verify(t.Context(), iss.Mint(sessiontest.Claims("user_1"), sessiontest.WithKey(foreign))); session.ReasonOf(err) != session.ReasonSignature {
		t.Errorf("foreign key: err = %v, want signature", err)
	}
	if got := iss.Fetches(); got != 0 {
		t.Errorf("PEM mode fetched the JWKS %d times", got)
	}
}

func TestReadyWaitsForTheFirstFetch(t *testing.T) {
	t.Parallel()
	iss := sessiontest.NewIssuer(t)
	iss.Hang()
	v, err := session.New(session.Options{JWKSURL: iss.JWKSURL()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	if v.Ready() == nil {
		t.Fatal("ready before any key was fetched")
	}
	iss.Release()
	waitReady(t, v)
}

func TestFailedFetchKeepsKeys(t *testing.T) {
	t.Parallel()
	iss := sessiontest.NewIssuer(t)
	var mu sync.Mutex
	var failures int
	v := newVerifier(t, iss, func(o *session.Options) {
		o.CacheTTL = 20 * time.Millisecond
		o.OnRefresh = func(err error) {
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failures++
			}
		}
	})
	iss.Fail(true) // the JWKS answers 500 from now on
	poll(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return failures > 0
	})
	if _, err := v.Verify(t.Context(), iss.Token("user_1")); err != nil {
		t.Errorf("Verify after a failed refresh: %v", err)
	}
	if err := v.Ready(); err != nil {
		t.Errorf("Ready after a failed refresh: %v", err)
	}
}

// poll waits until cond holds, failing the test after 10 s.
func poll(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestNewRefusesBadOptions(t *testing.T) {
	t.Parallel()
	for name, opts := range map[string]session.Options{
		"no key source":   {},
		"relative URL":    {JWKSURL: "/.well-known/jwks.json"},
		"ftp URL":         {JWKSURL: "ftp://clerk.test/jwks"},
		"not a key":       {PublicKey: "hello"},
		"negative leeway": {JWKSURL: "https://clerk.test/jwks", Leeway: -time.Second},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			v, err := session.New(opts)
			if err == nil {
				v.Close()
				t.Fatal("New succeeded")
			}
		})
	}
}

func TestParsePublicKey(t *testing.T) {
	t.Parallel()
	key := sessiontest.NewKey(t).Public()
	full := sessiontest.PublicKeyPEM(t, key)
	body := strings.Join(strings.Split(strings.TrimSpace(full), "\n")[1:len(strings.Split(strings.TrimSpace(full), "\n"))-1], "\n")
	pkcs1 := string(pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(key)}))
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecDER, err := x509.MarshalPKIXPublicKey(&ec.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	for name, tt := range map[string]struct {
		in string
		ok bool
	}{
		"PEM":                    {full, true},
		"PEM with CRLF":          {strings.ReplaceAll(full, "\n", "\r\n"), true},
		"without header lines":   {body, true},
		"one line":               {strings.ReplaceAll(full, "\n", ""), true},
		"escaped newlines":       {strings.ReplaceAll(full, "\n", `\n`), true},
		"body on one line":       {strings.ReplaceAll(body, "\n", ""), true},
		"PKCS #1":                {pkcs1, true},
		"surrounding whitespace": {"\n  " + full + "  \n", true},
		"1024-bit key":           {sessiontest.PublicKeyPEM(t, &small.PublicKey), false},
		"EC key":                 {base64.StdEncoding.EncodeToString(ecDER), false},
		"garbage":                {"not a key", false},
		"private key":            {string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(small)})), false},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			got, err := session.ParsePublicKey(tt.in)
			if !tt.ok {
				if err == nil {
					t.Fatal("parsed")
				}
				return
			}
			if err != nil {
				t.Fatalf("ParsePublicKey: %v", err)
			}
			if !got.Equal(key) {
				t.Error("parsed a different key")
			}
		})
	}
}

func TestErrorNeverHoldsTheToken(t *testing.T) {
	t.Parallel()
	var se *session.Error
	err := error(&session.Error{Reason: session.ReasonExpired})
	if !errors.As(err, &se) || session.ReasonOf(fmt.Errorf("wrapped: %w", err)) != session.ReasonExpired {
		t.Fatal("ReasonOf does not see through wrapping")
	}
	if session.ReasonOf(errors.New("other")) != "" {
		t.Fatal("ReasonOf of a foreign error")
	}
}

// FuzzVerify feeds arbitrary strings, and mutations of a valid token, to Verify: it must never
// panic, and must accept only the tokens the test signed.
func FuzzVerify(f *testing.F) {
	iss := sessiontest.NewIssuer(f)
	v, err := session.New(session.Options{PublicKey: iss.PublicKeyPEM(), Issuer: sessiontest.IssuerURL})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(v.Close)
	c := sessiontest.Claims("user_fuzz")
	c["exp"] = time.Now().Add(24 * time.Hour).Unix()
	signed := map[string]bool{}
	for _, tok := range []string{
		iss.Mint(c),
		iss.Mint(c, sessiontest.WithHeader("kid", nil)),
		iss.Mint(c, sessiontest.WithHeader("typ", nil)),
	} {
		signed[tok] = true
		f.Add(tok)
	}
	f.Add("")
	f.Add("..")
	f.Add("e30.e30.")
	f.Add(iss.Mint(c, sessiontest.WithMethod(jwt.SigningMethodHS256, []byte(iss.PublicKeyPEM()))))
	f.Fuzz(func(t *testing.T, token string) {
		claims, err := v.Verify(context.Background(), token)
		if err == nil && !signed[token] {
			t.Fatalf("accepted a token the test did not sign: %q (sub %q)", token, claims.Subject)
		}
		if err != nil && session.ReasonOf(err) == "" {
			t.Fatalf("error without a reason: %v", err)
		}
	})
}

// BenchmarkVerify is one Clerk token's verification with a fetched JWKS: parsing, the RS256
// signature and the claims (uncached), or the claims alone (a token seen before).
func BenchmarkVerify(b *testing.B) {
	iss := sessiontest.NewIssuer(b)
	for _, bm := range []struct {
		name      string
		cacheSize int
	}{{"uncached", -1}, {"cached", 0}} {
		b.Run(bm.name, func(b *testing.B) {
			v, err := session.New(session.Options{JWKSURL: iss.JWKSURL(), Issuer: sessiontest.IssuerURL, CacheSize: bm.cacheSize})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(v.Close)
			deadline := time.Now().Add(10 * time.Second)
			for v.Ready() != nil && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
			token := iss.Token("user_1")
			for b.Loop() {
				if _, err := v.Verify(context.Background(), token); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
