package api

import (
	"net/http"
	"testing"
	"time"

	"github.com/clerksync/clerksync/internal/api/apitest"
	"github.com/clerksync/clerksync/internal/session"
	"github.com/clerksync/clerksync/internal/session/sessiontest"
)

// TestAttackTable sends the hostile session tokens of apitest's table — every one a real signed
// token unless the row is about a broken signature — and checks each is refused with 401, the
// contract's code and challenge, and without a single database query; the few valid ones reach
// the database, which has no row for their user (404 user_not_synced) but one for the impostor
// some of them name under another spelling of sub. cmd/api runs the same table against the built
// binary.
func TestAttackTable(t *testing.T) {
	t.Parallel()
	if apitest.SessionCookie != sessionCookie {
		t.Fatalf("apitest sends the cookie %q, the api reads %q", apitest.SessionCookie, sessionCookie)
	}
	// The verifier's clock is pinned, so the leeway rows do not depend on how long the run takes.
	now := time.Now()
	b := setup(t, func(c *setupConfig) {
		c.session = func(o *session.Options) { o.Now, o.Leeway = func() time.Time { return now }, apitest.Leeway }
	})
	// The impostor is synced, so that a row answered as the impostor would get 200, not 404.
	apitest.SyncUser(t, t.Context(), b.queries, apitest.Impostor)
	if rec, _ := b.do(t, request{bearer: b.issuer.Mint(sessiontest.ClaimsAt(apitest.Impostor, now))}); rec.Code != http.StatusOK {
		t.Fatalf("the impostor's own token: status %d, want 200 (body %s)", rec.Code, rec.Body)
	}
	table := apitest.Attacks(t, b.issuer, func() time.Time { return now })

	// Checked once every row has run (parallel subtests finish before cleanups).
	t.Cleanup(func() {
		if n := table.Attacker.Hits(); n != 0 {
			t.Errorf("the attacker's server was fetched %d times", n)
		}
		// One fetch at start, at most one more for the unknown kids.
		if n := b.issuer.Fetches(); n > 2 {
			t.Errorf("our JWKS was fetched %d times", n)
		}
		if leaks := table.Leaks(b.logs.String()); len(leaks) > 0 {
			t.Errorf("the log holds token material of %q", leaks)
		}
	})
	for _, a := range table.Attacks {
		t.Run(a.Name, func(t *testing.T) {
			t.Parallel()
			header := map[string]string{}
			for k, v := range a.Header() {
				header[k] = v[0]
			}
			rec, queries := b.do(t, request{header: header})
			wantError(t, rec, a.Status, a.Code)
			got := rec.Header().Values("WWW-Authenticate")
			if a.Challenge == "" && len(got) != 0 || a.Challenge != "" && (len(got) != 1 || got[0] != a.Challenge) {
				t.Errorf("WWW-Authenticate = %q, want %q", got, a.Challenge)
			}
			switch {
			case a.Refused() && queries != 0:
				t.Errorf("a refused token ran %d database queries", queries)
			case !a.Refused() && queries != 1:
				t.Errorf("queries = %d, want 1", queries)
			}
		})
	}
}
