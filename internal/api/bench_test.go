package api

import (
	"net/http"
	"net/http/httptest"
	"testing"
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
