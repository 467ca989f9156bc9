package loadgen

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestPercentileIsNearestRank(t *testing.T) {
	t.Parallel()
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = time.Duration(i+1) * time.Millisecond
	}
	for _, tc := range []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"none", nil, 50, 0},
		{"one value is every percentile", []time.Duration{7}, 99, 7},
		{"p50 of 100", hundred, 50, 50 * time.Millisecond},
		{"p90 of 100", hundred, 90, 90 * time.Millisecond},
		{"p99 of 100 is the 99th, not the max", hundred, 99, 99 * time.Millisecond},
		{"p99.9 of 100 rounds up", hundred, 99.9, 100 * time.Millisecond},
		{"max", hundred, 100, 100 * time.Millisecond},
		{"p0 is the min", hundred, 0, time.Millisecond},
		{"p50 of 4 is the 2nd", []time.Duration{1, 2, 3, 4}, 50, 2},
		{"p51 of 4 is the 3rd", []time.Duration{1, 2, 3, 4}, 51, 3},
	} {
		if got := Percentile(tc.sorted, tc.p); got != tc.want {
			t.Errorf("%s: Percentile(p%g) = %v, want %v", tc.name, tc.p, got, tc.want)
		}
	}
}

func TestLatenciesMergeAndSummarize(t *testing.T) {
	t.Parallel()
	var l Latencies
	l.Merge(Sample{5, 1, 3})
	l.Merge(Sample{4, 2})
	l.Merge(nil)
	want := Summary{Count: 5, P50: 3, P90: 5, P99: 5, Max: 5}
	if diff := cmp.Diff(want, l.Summary()); diff != "" {
		t.Errorf("Summary (-want +got):\n%s", diff)
	}
}

func TestSummaryJSONIsInMilliseconds(t *testing.T) {
	t.Parallel()
	b, err := Summary{Count: 2, P50: 1500 * time.Microsecond, P90: 2 * time.Millisecond, P99: 3 * time.Millisecond, Max: time.Second}.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"count":2,"p50_ms":1.5,"p90_ms":2,"p99_ms":3,"max_ms":1000}`; string(b) != want {
		t.Errorf("JSON = %s, want %s", b, want)
	}
}

func TestWorkloadIsSeededAndRealistic(t *testing.T) {
	t.Parallel()
	w := NewWorkload(42, 1000)
	if len(w.Deliveries) != 1000 {
		t.Fatalf("%d deliveries, want 1000", len(w.Deliveries))
	}
	again := NewWorkload(42, 1000)
	if !slices.EqualFunc(w.Deliveries, again.Deliveries, func(a, b Delivery) bool { return a.ID == b.ID && string(a.Body) == string(b.Body) }) {
		t.Fatal("the same seed gave another workload")
	}
	seen := map[string]bool{}
	types := map[string]int{}
	resends := 0
	for i, d := range w.Deliveries {
		if d.Resend {
			resends++
			if !seen[d.ID] {
				t.Fatalf("delivery %d resends %s before it was sent", i, d.ID)
			}
		}
		seen[d.ID] = true
		types[d.Type]++
	}
	if resends < 50 || resends > 150 {
		t.Errorf("%d of 1000 deliveries are resends, want about 10%%", resends)
	}
	if w.Unique() != 1000-resends {
		t.Errorf("Unique = %d, want %d", w.Unique(), 1000-resends)
	}
	for _, typ := range []string{"user.created", "user.updated", "user.deleted"} {
		if types[typ] == 0 {
			t.Errorf("no %s in the workload: %v", typ, types)
		}
	}
}

func TestFoldBatchKeepsOneVersionPerUser(t *testing.T) {
	t.Parallel()
	events, err := userEvents([]Workload{NewWorkload(7, 2000)})
	if err != nil {
		t.Fatal(err)
	}
	c := foldBatch(events)
	if !slices.IsSorted(c.clerkUserID) || len(slices.Compact(slices.Clone(c.clerkUserID))) != len(c.clerkUserID) {
		t.Fatal("rows are not one per user in clerk_user_id order")
	}
	// The fold agrees with a plain reading of the rules: a delete wins; else the greatest
	// (updated_at, svix-id).
	deleted := map[string]time.Time{}
	best := map[string]userEvent{}
	for _, e := range events {
		if e.User == nil {
			if at, ok := deleted[e.ClerkUserID]; !ok || e.Timestamp.Before(at) {
				deleted[e.ClerkUserID] = e.Timestamp
			}
			continue
		}
		b, ok := best[e.ClerkUserID]
		if !ok || e.User.UpdatedAt.After(b.User.UpdatedAt) || e.User.UpdatedAt.Equal(b.User.UpdatedAt) && e.ID > b.ID {
			best[e.ClerkUserID] = e
		}
	}
	for i, id := range c.clerkUserID {
		if at, ok := deleted[id]; ok {
			if c.deletedAt[i] == nil || !c.deletedAt[i].Equal(at) || c.data[i] != nil || c.versionEventID[i] != nil {
				t.Errorf("user %s: want a tombstone at %v", id, at)
			}
			continue
		}
		if c.deletedAt[i] != nil || *c.versionEventID[i] != best[id].ID {
			t.Errorf("user %s: version %v, want %s", id, c.versionEventID[i], best[id].ID)
		}
	}
}

func TestCountHasThousandsSeparators(t *testing.T) {
	t.Parallel()
	for in, want := range map[float64]string{0: "0", 999.4: "999", 999.5: "1,000", 1234567: "1,234,567"} {
		if got := count(in); got != want {
			t.Errorf("count(%v) = %q, want %q", in, got, want)
		}
	}
}

func TestScrapeMetricsAddsUpSeries(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, `# HELP clerksync_worker_events_total Events.
# TYPE clerksync_worker_events_total counter
clerksync_worker_events_total{outcome="applied",type="user.created"} 7
clerksync_worker_events_total{outcome="duplicate",type="user.created"} 3 1700000000000
clerksync_worker_batch_size_sum 12.5
clerksync_worker_batch_size_count 2
odd{label="a } b"} 1
`)
	}))
	t.Cleanup(srv.Close)
	m, err := scrapeMetrics(context.Background(), srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{"clerksync_worker_events_total": 10, "clerksync_worker_batch_size_sum": 12.5, "clerksync_worker_batch_size_count": 2, "odd": 1}
	if diff := cmp.Diff(want, m); diff != "" {
		t.Errorf("metrics (-want +got):\n%s", diff)
	}
}

func TestDriveWithNothingToDoReturns(t *testing.T) {
	t.Parallel()
	r := drive(context.Background(), "empty", load{Clients: 4}, func(context.Context, int, int) (string, error) {
		t.Error("a job ran")
		return "ok", nil
	})
	if r.Count != 0 || r.Failed() {
		t.Errorf("empty stage: %+v", r)
	}
}

func TestDrivePacesAndCounts(t *testing.T) {
	t.Parallel()
	var ran atomic.Int64
	r := drive(context.Background(), "paced", load{Clients: 3, Jobs: 20, Rate: 1000}, func(_ context.Context, _, i int) (string, error) {
		ran.Add(1)
		if i == 7 {
			return "", errors.New("no answer")
		}
		if i%2 == 0 {
			return "200", nil
		}
		return "503", nil
	})
	if ran.Load() != 20 || r.Count != 20 {
		t.Fatalf("%d jobs ran, %d counted, want 20", ran.Load(), r.Count)
	}
	want := map[string]int{"200": 10, "503": 9, "error": 1}
	if diff := cmp.Diff(want, r.Statuses); diff != "" {
		t.Errorf("statuses (-want +got):\n%s", diff)
	}
	if r.OK() != 10 || r.Attempts() != 20 || !r.Failed() || r.Error != "no answer" {
		t.Errorf("OK %d, Attempts %d, Failed %v, Error %q", r.OK(), r.Attempts(), r.Failed(), r.Error)
	}
	// Paced at 1000/s, the 20th job is not due before 19 ms: the run cannot be shorter.
	if r.Elapsed < 19*time.Millisecond {
		t.Errorf("20 jobs paced at 1000/s took %v", r.Elapsed)
	}
}
