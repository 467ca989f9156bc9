package loadgen_test

import (
	"context"
	"strings"
	"testing"

	"github.com/clerksync/clerksync/internal/clerkgen"
	"github.com/clerksync/clerksync/internal/event/eventtest"
	"github.com/clerksync/clerksync/internal/loadgen"
)

// TestBareHandler: the baseline accepts the workload signed with its secret, refuses it signed
// with another, and leaves no stream behind.
func TestBareHandler(t *testing.T) {
	t.Parallel()
	srv := eventtest.NewServer(t)
	_, js := eventtest.Connect(t, srv.URL())
	secret := clerkgen.NewSecret()
	b, err := loadgen.StartBareHandler(context.Background(), srv.URL(), secret)
	if err != nil {
		t.Fatal(err)
	}
	w := loadgen.NewWorkload(7, 50)
	r, err := loadgen.Ingest(context.Background(), "bare", loadgen.IngestOptions{URL: b.URL, Secret: secret, Clients: 4, Workload: w})
	if err != nil || r.Statuses["200"] != 50 {
		t.Fatalf("signed with its secret: %v, outcomes %v", err, r.Statuses)
	}
	r, err = loadgen.Ingest(context.Background(), "bare", loadgen.IngestOptions{URL: b.URL, Secret: clerkgen.NewSecret(), Clients: 4, Workload: w})
	if err != nil || r.Statuses["401"] != 50 {
		t.Fatalf("signed with another secret: %v, outcomes %v", err, r.Statuses)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	for name := range js.StreamNames(context.Background()).Name() {
		if strings.HasPrefix(name, "LOADGEN") {
			t.Errorf("stream %s left behind", name)
		}
	}
}
