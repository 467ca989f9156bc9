package clerk_test

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/clerksync/clerksync/internal/clerk"
	"github.com/clerksync/clerksync/internal/clerkgen"
)

// BenchmarkParseEnvelope is ingest's check of every webhook body, on Clerk's own example and on
// a generated user.updated of the size the load generator sends.
func BenchmarkParseEnvelope(b *testing.B) {
	for _, bc := range benchBodies(b) {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(bc.body)))
			for b.Loop() {
				if _, err := clerk.ParseEnvelope(bc.body); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkParseUserEvent is the worker's parse of a user event, before it folds a batch.
func BenchmarkParseUserEvent(b *testing.B) {
	for _, bc := range benchBodies(b) {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(bc.body)))
			for b.Loop() {
				if _, err := clerk.ParseUserEvent(bc.body); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func benchBodies(b *testing.B) []struct {
	name string
	body []byte
} {
	b.Helper()
	r := rand.New(rand.NewPCG(1, 2))
	u := clerkgen.NewUser(r, "", time.UnixMilli(1_700_000_000_000))
	return []struct {
		name string
		body []byte
	}{
		{"fixture_user.created", fixture(b, "user.created.json")},
		{"generated_user.updated", clerkgen.UpdatedBody(u.Updated(r, u.CreatedAt.Add(time.Minute)))},
		{"fixture_user.deleted", fixture(b, "user.deleted.json")},
	}
}
