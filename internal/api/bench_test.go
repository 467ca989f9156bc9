package api

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// BenchmarkAuthMe is GET /auth/me in process: token extraction, RS256 verification, the one
// query on a local Postgres, and the JSON answer.
func BenchmarkAuthMe(b *testing.B) {
	bb := setup(b)
	u := ada()
	bb.syncUser(b, u)
	token := bb.issuer.Token(u.id)
	for b.Loop() {
		req := httptest.NewRequest(http.MethodGet, "/auth/me", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		rec := httptest.NewRecorder()
		bb.handler.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
}

// BenchmarkAuthMeParallel is the same with concurrent requests, as a server sees them.
func BenchmarkAuthMeParallel(b *testing.B) {
	bb := setup(b)
	u := ada()
	bb.syncUser(b, u)
	token := bb.issuer.Token(u.id)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req := httptest.NewRequest(http.MethodGet, "/auth/me", nil)
			req.Header.Set("Authorization", "Bearer "+token)
			rec := httptest.NewRecorder()
			bb.handler.ServeHTTP(rec, req)
			if rec.Code != http.StatusOK {
				b.Errorf("status %d", rec.Code)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
}

// BenchmarkAuthMeJIT is BenchmarkAuthMe with just-in-time sync on: a synced user's request must
// cost what it costs without it (the JIT path runs only when the row is missing).
func BenchmarkAuthMeJIT(b *testing.B) {
	s := setupJIT(b, jitOptions{})
	u := ada()
	s.syncUser(b, u)
	token := s.issuer.Token(u.id)
	for b.Loop() {
		req := httptest.NewRequest(http.MethodGet, "/auth/me", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		rec := httptest.NewRecorder()
		s.handler.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
	if n := s.clerk.Requests(); n != 0 {
		b.Fatalf("%d Backend API reads for a synced user", n)
	}
}

// BenchmarkJITSignUps is the sign-up race at 20 sign-ups a second: each iteration is the first
// /auth/me of a user only the Backend API knows (answering in 50 ms), through just-in-time sync
// and a running worker. It reports the latency percentiles and what the shared wait loop cost.
// Run it with a fixed count, e.g. -benchtime=400x (20 s).
func BenchmarkJITSignUps(b *testing.B) {
	const perSecond = 20
	s := setupJIT(b, jitOptions{worker: true, rate: 100})
	s.clerk.SetLatency(50 * time.Millisecond)
	tokens := make([]string, b.N)
	for i := range tokens {
		id := fmt.Sprintf("user_2bench%06d", i)
		s.putUser(b, id)
		tokens[i] = s.issuer.Token(id)
	}
	latencies := make([]time.Duration, b.N)
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		time.Sleep(time.Until(start.Add(time.Duration(i) * time.Second / perSecond)))
		wg.Go(func() {
			req := httptest.NewRequest(http.MethodGet, "/auth/me", nil)
			req.Header.Set("Authorization", "Bearer "+tokens[i])
			rec := httptest.NewRecorder()
			t0 := time.Now()
			s.handler.ServeHTTP(rec, req)
			latencies[i] = time.Since(t0)
			if rec.Code != http.StatusOK {
				b.Errorf("sign-up %d: %d %s", i, rec.Code, rec.Body)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	slices.Sort(latencies)
	pct := func(p float64) float64 {
		return float64(latencies[min(len(latencies)-1, int(p*float64(len(latencies))))].Microseconds()) / 1000
	}
	polls := testutil.ToFloat64(s.jit.metrics.polls)
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(float64(latencies[len(latencies)-1].Microseconds())/1000, "max-ms")
	b.ReportMetric(polls/float64(b.N), "polls/signup")
	b.ReportMetric(polls/elapsed.Seconds(), "polls/s")
	b.ReportMetric(0, "ns/op") // the schedule, not the code, sets the time per sign-up
}

// BenchmarkAuthMeOrganizations is BenchmarkAuthMe for a caller with memberships (orgWorld: three
// live, two not), its token naming an active organization: still the one query.
func BenchmarkAuthMeOrganizations(b *testing.B) {
	bb := setup(b)
	orgWorldB(b, bb)
	token := orgToken(bb, "user_2adaLovelace", "org_acme", "v2")
	for b.Loop() {
		req := httptest.NewRequest(http.MethodGet, "/auth/me", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		rec := httptest.NewRecorder()
		bb.handler.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
}

// BenchmarkOrganization is GET /organizations/{id} for a member of an organization of four
// members (two live).
func BenchmarkOrganization(b *testing.B) {
	bb := setup(b)
	orgWorldB(b, bb)
	token := bb.issuer.Token("user_2bob")
	for b.Loop() {
		req := httptest.NewRequest(http.MethodGet, "/organizations/org_acme", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		rec := httptest.NewRecorder()
		bb.handler.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
}
