package loadgen_test

import (
	"context"
	"testing"

	"github.com/clerksync/clerksync/internal/event/eventtest"
	"github.com/clerksync/clerksync/internal/loadgen"
)

func TestPublishLeavesNothingBehind(t *testing.T) {
	t.Parallel()
	srv := eventtest.NewServer(t)
	_, js := eventtest.Connect(t, srv.URL()) // with the CLERK stream, whose configuration is copied
	w := loadgen.NewWorkload(5, 100)
	for _, tc := range []struct {
		name           string
		clients, batch int
	}{
		{"one by one", 8, 0},
		{"atomic batches", 16, 8},
		{"a batch larger than the clients", 2, 7},
	} {
		r, err := loadgen.Publish(context.Background(), tc.name, loadgen.PublishOptions{NATSURL: srv.URL(), Clients: tc.clients, Batch: tc.batch, Workload: w})
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if r.Count != 100 || r.Failed() || r.Statuses["ok"] != 100 {
			t.Errorf("%s: %d published, outcomes %v, error %q", tc.name, r.Count, r.Statuses, r.Error)
		}
	}
	names := js.StreamNames(context.Background())
	var streams []string
	for name := range names.Name() {
		streams = append(streams, name)
	}
	if len(streams) != 1 || streams[0] != "CLERK" {
		t.Errorf("streams after the runs: %v, want only CLERK", streams)
	}
	if s, err := js.Stream(context.Background(), "CLERK"); err != nil {
		t.Fatal(err)
	} else if info, err := s.Info(context.Background()); err != nil || info.State.Msgs != 0 {
		t.Errorf("CLERK holds %d messages (%v): the baseline must not write to it", info.State.Msgs, err)
	}
}
