package session

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/clerksync/clerksync/internal/session/sessiontest"
)

func claimsUntil(sub string, exp time.Time) *Claims {
	return &Claims{RegisteredClaims: jwt.RegisteredClaims{Subject: sub, ExpiresAt: jwt.NewNumericDate(exp)}}
}

func TestCacheBoundedAndExpiring(t *testing.T) {
	t.Parallel()
	now := time.Now()
	c := newTokenCache(3)
	for i := range 5 {
		c.put(fmt.Sprint("token", i), claimsUntil("user_1", now.Add(time.Minute)), gen(c, now), now)
	}
	if got := c.len(); got != 3 {
		t.Fatalf("len = %d, want 3 (the bound)", got)
	}
	// Full of expired entries: they go first, the fresh one stays.
	later := now.Add(2 * time.Minute)
	c.put("fresh", claimsUntil("user_2", later.Add(time.Minute)), gen(c, now), later)
	if got := c.len(); got != 1 {
		t.Fatalf("len = %d after the sweep, want 1", got)
	}
	if got, _, ok := c.get("fresh", later); !ok || got.Subject != "user_2" {
		t.Fatalf("get(fresh) = %v, %v", got, ok)
	}
	// An entry dies at the token's exp.
	if _, _, ok := c.get("fresh", later.Add(time.Minute)); ok {
		t.Fatal("hit after exp")
	}
	// Nothing without an exp, or already expired, is kept.
	c.put("no exp", &Claims{}, gen(c, now), now)
	c.put("expired", claimsUntil("user_3", now.Add(-time.Second)), gen(c, now), now)
	if got := c.len(); got != 0 {
		t.Fatalf("len = %d, want 0", got)
	}
}

func TestCacheGetReturnsACopy(t *testing.T) {
	t.Parallel()
	now := time.Now()
	c := newTokenCache(10)
	claims := claimsUntil("user_1", now.Add(time.Minute))
	claims.Version, claims.Organization = 2, Organization{ID: "org_1", Role: "admin"}
	c.put("t", claims, gen(c, now), now)
	// Changes to the caller's claims after put, and to those get returned, stay theirs; the dates
	// are pointers in jwt.RegisteredClaims.
	claims.Organization.ID, claims.ExpiresAt.Time = "org_evil", now.Add(time.Hour)
	got, _, _ := c.get("t", now)
	got.Subject, got.Organization.ID, got.ExpiresAt.Time = "user_evil", "org_evil", now.Add(time.Hour)
	again, _, _ := c.get("t", now)
	if again.Subject != "user_1" || again.ActiveOrganization() != "org_1" || !again.ExpiresAt.Equal(now.Add(time.Minute).Truncate(time.Second)) {
		t.Fatalf("the cache kept a change: %q, %q, exp %v", again.Subject, again.ActiveOrganization(), again.ExpiresAt)
	}
}

func TestCacheClearWinsOverAnInFlightVerification(t *testing.T) {
	t.Parallel()
	now := time.Now()
	c := newTokenCache(10)
	_, gen, _ := c.get("t", now) // a verification starts with the old keys...
	c.clear()                    // ...the key set is replaced meanwhile...
	c.put("t", claimsUntil("user_1", now.Add(time.Minute)), gen, now)
	if _, _, ok := c.get("t", now); ok {
		t.Fatal("a token verified with replaced keys was remembered")
	}
}

func TestCachedTokenStillPassesEveryClaimCheck(t *testing.T) {
	t.Parallel()
	iss := sessiontest.NewIssuer(t)
	start := time.Now()
	var offset atomic.Int64 // the verifier's clock, relative to start
	v, err := New(Options{
		PublicKey: iss.PublicKeyPEM(),
		Leeway:    5 * time.Second,
		Now:       func() time.Time { return start.Add(time.Duration(offset.Load())) },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	claims := sessiontest.ClaimsAt("user_1", start)
	delete(claims, "nbf") // so the step back trips iat alone
	token := iss.Mint(claims)
	if _, err := v.Verify(t.Context(), token); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if got := v.cache.len(); got != 1 {
		t.Fatalf("cache len = %d, want 1", got)
	}
	// The clock steps back a minute: the cached token's iat is now in the future.
	offset.Store(int64(-time.Minute))
	if _, err := v.Verify(t.Context(), token); ReasonOf(err) != ReasonIssuedInFuture {
		t.Fatalf("cached token with iat in the future: err = %v", err)
	}
	// And forward past exp: expired, cache or not.
	offset.Store(int64(2 * time.Minute))
	if _, err := v.Verify(t.Context(), token); ReasonOf(err) != ReasonExpired {
		t.Fatalf("cached token after exp: err = %v", err)
	}
}

func TestCacheDisabled(t *testing.T) {
	t.Parallel()
	iss := sessiontest.NewIssuer(t)
	v, err := New(Options{PublicKey: iss.PublicKeyPEM(), CacheSize: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	if _, err := v.Verify(t.Context(), iss.Token("user_1")); err != nil {
		t.Fatal(err)
	}
	if v.cache != nil || v.cache.len() != 0 {
		t.Fatal("cache in use")
	}
}

// gen is the generation a miss would return.
func gen(c *tokenCache, now time.Time) uint64 {
	_, g, _ := c.get("", now)
	return g
}
