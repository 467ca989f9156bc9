package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/clerksync/clerksync/internal/clerkapi"
	"github.com/clerksync/clerksync/internal/clerkapi/clerkapitest"
	"github.com/clerksync/clerksync/internal/event"
)

// The tests here play Clerk's Backend API with clerkapitest and run reconcile as worker reconcile
// does (Reconcile, its own connections), with a real worker (Run) folding what it publishes.

// testKey is the secret key the fake accepts; no log line, progress line or error may show it.
const testKey = "sk_test_RECONCILEsecretNEVERshown0123456789abcdef"

// rbundle is a reconcile test's world.
type rbundle struct {
	*bundle
	api  *clerkapitest.Server
	logs *syncBuffer // everything reconcile logged and printed
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func rsetup(t *testing.T) *rbundle {
	t.Helper()
	b := setup(t)
	api := clerkapitest.New(t, testKey)
	b.cfg.ClerkAPIURL, b.cfg.ClerkSecretKey, b.cfg.ClerkAPIRate = api.URL, testKey, 1000
	r := &rbundle{bundle: b, api: api, logs: &syncBuffer{}}
	t.Cleanup(func() {
		if strings.Contains(r.logs.String(), testKey) {
			t.Errorf("the secret key appears in reconcile's output:\n%s", r.logs)
		}
	})
	return r
}

// sweep runs one reconcile (of users unless opts says otherwise), its logs (every level) and
// progress into r.logs, and returns the first kind's summary.
func (r *rbundle) sweep(t *testing.T, opts ReconcileOptions) (ReconcileSummary, error) {
	t.Helper()
	sums, err := r.sweepAll(t, opts)
	if len(sums) == 0 {
		return ReconcileSummary{}, err
	}
	return sums[0], err
}

func (r *rbundle) sweepAll(t *testing.T, opts ReconcileOptions) ([]ReconcileSummary, error) {
	t.Helper()
	if opts.Kinds == nil {
		opts.Kinds = []string{KindUsers}
	}
	opts.Progress = r.logs
	logger := slog.New(slog.NewJSONHandler(r.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	sums, err := Reconcile(context.Background(), r.cfg, opts, logger)
	if err != nil {
		_, _ = fmt.Fprintln(r.logs, "error:", err)
	}
	return sums, err
}

// put adds users to the fake API: user_<prefix>_<i>, created in order.
func (r *rbundle) put(t *testing.T, prefix string, n int, updatedAt int64) []string {
	t.Helper()
	ids := make([]string, n)
	for i := range n {
		ids[i] = fmt.Sprintf("user_%s_%05d", prefix, i)
		if err := r.api.Put(clerkapitest.NewUser(ids[i], 1700000000000+int64(i), updatedAt, "Backfilled")); err != nil {
			t.Fatal(err)
		}
	}
	return ids
}

func (r *rbundle) streamMessages(t *testing.T) uint64 {
	t.Helper()
	s, err := r.js.Stream(context.Background(), event.Stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

// settle waits until the durable consumer has applied everything in the stream.
func (r *rbundle) settle(t *testing.T) {
	t.Helper()
	settled(t, durable(t, r.bundle))
}

func TestReconcileBackfill(t *testing.T) {
	t.Parallel()
	r := rsetup(t)
	start(t, r.cfg)
	ids := r.put(t, "b", 2500, 1700000100000)

	sum, err := r.sweep(t, ReconcileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := ReconcileSummary{Kind: KindUsers, Complete: true, Seen: 2500, Published: 2500, Pages: 6, Requests: 6}
	if diff := cmp.Diff(want, sum, ignoreTook); diff != "" {
		t.Errorf("first sweep (-want +got)\n%s", diff)
	}
	r.settle(t)
	if n := count(t, r.pool, `SELECT count(*) FROM users WHERE deleted_at IS NULL AND version_event_id LIKE 'snap\_%'`); n != 2500 {
		t.Fatalf("%d users backfilled from snapshots, want 2500", n)
	}
	// The row holds the bytes the API served (as jsonb), and the snapshot's version.
	var data []byte
	var version string
	if err := r.pool.QueryRow(context.Background(), `SELECT clerk_data, version_event_id FROM users WHERE clerk_user_id = $1`, ids[1234]).Scan(&data, &version); err != nil {
		t.Fatal(err)
	}
	if !jsonEqual(t, data, r.api.User(ids[1234])) || version != "snap_"+ids[1234]+"_1700000100000" {
		t.Errorf("row of %s: version %s, data %s", ids[1234], version, data)
	}

	// Nothing changed: nothing to publish.
	msgs := r.streamMessages(t)
	sum, err = r.sweep(t, ReconcileOptions{})
	if err != nil || sum.Published != 0 || sum.Unchanged != 2500 || r.streamMessages(t) != msgs {
		t.Errorf("second sweep: %v, %+v, %d messages (was %d)", err, sum, r.streamMessages(t), msgs)
	}

	// A user changed in Clerk (its webhook lost) is updated.
	if err := r.api.Put(clerkapitest.NewUser(ids[7], 1700000000007, 1700000200000, "Renamed")); err != nil {
		t.Fatal(err)
	}
	sum, err = r.sweep(t, ReconcileOptions{})
	if err != nil || sum.Published != 1 || sum.Unchanged != 2499 {
		t.Fatalf("sweep after a change: %v, %+v", err, sum)
	}
	r.settle(t)
	if got := readState(t, r.pool)[ids[7]]; got.FirstName == nil || *got.FirstName != "Renamed" {
		t.Errorf("changed user: %+v", got)
	}
}

var ignoreTook = cmp.FilterPath(func(p cmp.Path) bool { return p.Last().String() == ".Took" }, cmp.Ignore())

func jsonEqual(t *testing.T, a, b []byte) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &y); err != nil {
		t.Fatal(err)
	}
	return cmp.Equal(x, y)
}

// TestReconcileAgainstWebhooks: a sweep and webhooks of the same user, in both orders, end at the
// newer version, and nothing resurrects a tombstone.
func TestReconcileAgainstWebhooks(t *testing.T) {
	t.Parallel()
	const u = "user_2gR0rOWvX77FZ91ghfT4QVzfEgG"
	const listed = 1700000500000 // updated_at of the user as the API lists it
	tests := []struct {
		name          string
		before, after []histEvent // webhooks applied before the sweep, and after it
		wantPublished int
		want          func(t *testing.T) userState
		wantName      string // first_name of the final row; "" for a tombstone
	}{
		{"a newer webhook already applied is not overwritten by the older listing",
			[]histEvent{updated("msg_newer", u, listed+1000)}, nil, 0, nil, "First msg_newer"},
		{"an older webhook applied before is overwritten",
			[]histEvent{updated("msg_older", u, listed-1000)}, nil, 1, nil, "Backfilled"},
		{"an older webhook arriving after the snapshot changes nothing",
			nil, []histEvent{updated("msg_late_older", u, listed-1000)}, 1, nil, "Backfilled"},
		{"a newer webhook arriving after the snapshot wins",
			nil, []histEvent{updated("msg_late_newer", u, listed+1000)}, 1, nil, "First msg_late_newer"},
		{"a tombstone is not resurrected by a stale listing",
			[]histEvent{created("msg_created", u, listed-5000), deleted("msg_deleted", u, listed-1000)}, nil, 0, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := rsetup(t)
			start(t, r.cfg)
			if err := r.api.Put(clerkapitest.NewUser(u, 1654012591514, listed, "Backfilled")); err != nil {
				t.Fatal(err)
			}
			for _, e := range tt.before {
				publish(t, r.js, e, false)
			}
			r.settle(t)
			sum, err := r.sweep(t, ReconcileOptions{})
			if err != nil || sum.Published != tt.wantPublished {
				t.Fatalf("sweep: %v, published %d, want %d (%+v)", err, sum.Published, tt.wantPublished, sum)
			}
			r.settle(t)
			for _, e := range tt.after {
				publish(t, r.js, e, false)
			}
			r.settle(t)
			got := readState(t, r.pool)[u]
			switch {
			case tt.wantName == "":
				if got.DeletedAt == nil || got.ClerkData != nil || sum.Tombstoned != 1 {
					t.Errorf("want the tombstone kept: %+v (summary %+v)", got, sum)
				}
			case got.FirstName == nil || *got.FirstName != tt.wantName:
				t.Errorf("first_name %v, want %q (row %+v)", got.FirstName, tt.wantName, got)
			}
		})
	}
}

// TestSnapshotFoldsLikeUpdate: through the durable consumer, a user.snapshot folds exactly as a
// user.updated with the same data and svix-id would, older or newer than a webhook, in both
// orders.
func TestSnapshotFoldsLikeUpdate(t *testing.T) {
	t.Parallel()
	const u = "user_29w83sxmDNGwOuEthce5gg56FcC"
	webhook := updated("msg_webhook", u, 1654012824306)
	older, newer := updated("", u, 1654012700000), updated("", u, 1654012900000)
	older.FirstName, newer.FirstName = ptr("Snap older"), ptr("Snap newer")
	for _, tt := range []struct {
		name     string
		snapshot histEvent
		first    bool // the snapshot before the webhook
	}{
		{"older snapshot after the webhook", older, false},
		{"older snapshot before the webhook", older, true},
		{"newer snapshot after the webhook", newer, false},
		{"newer snapshot before the webhook", newer, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			c := b.consumer(t)
			snap, ref, body := asSnapshot(t, tt.snapshot)
			deliverSnap := func() {
				publishRaw(t, b.js, "clerk."+clerkSnapshot, snap.ID, body, false)
				c.handle(context.Background(), fetch(t, c, 1))
			}
			if tt.first {
				deliverSnap()
			}
			deliver(t, b, c, []histEvent{webhook})
			if !tt.first {
				deliverSnap()
			}
			settled(t, c.cons)
			if diff := cmp.Diff(fold(t, []histEvent{webhook, ref}), readState(t, b.pool)); diff != "" {
				t.Errorf("(-want +got)\n%s", diff)
			}
		})
	}
}

const clerkSnapshot = "user.snapshot"

// asSnapshot turns e (a created or updated event) into the snapshot a reconcile would publish for
// the same user object: snap is e as a snapshot (Type user.snapshot, the snapshot's id), ref the
// same as the user.updated the reference fold knows, body the message body.
func asSnapshot(t *testing.T, e histEvent) (snap, ref histEvent, body []byte) {
	t.Helper()
	ref = e
	ref.Type = "user.updated"
	ref.ID = event.SnapshotID(e.ClerkID, e.UpdatedAt.UnixMilli())
	var env struct{ Data json.RawMessage }
	if err := json.Unmarshal(ref.body(t), &env); err != nil {
		t.Fatal(err)
	}
	msg, err := event.Snapshot(event.KindUser, e.ClerkID, e.UpdatedAt.UnixMilli(), env.Data, e.UpdatedAt.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	snap = ref
	snap.Type = clerkSnapshot
	return snap, ref, msg.Data
}

// TestSnapshotsConverge is TestApplyConverges with snapshots among the webhooks: seeded random
// histories where some versions come as user.snapshot instead of their webhook, and some come
// both ways (a sweep that read what a webhook carried), each delivered one to three times in
// random order and batches; the rows equal the reference fold of the same history with every
// snapshot read as a user.updated. Replay with CLERKSYNC_PROPERTY_SEED.
func TestSnapshotsConverge(t *testing.T) {
	t.Parallel()
	seed := uint64(time.Now().UnixNano())
	if s := envInt(t, "CLERKSYNC_PROPERTY_SEED", -1); s >= 0 {
		seed = uint64(s)
	}
	t.Logf("seed %d: replay with CLERKSYNC_PROPERTY_SEED=%d", seed, seed)
	b := setup(t)
	want := map[string]userState{}
	for i := range 200 {
		r := rand.New(rand.NewPCG(seed, uint64(i)))
		history := genHistory(r, fmt.Sprintf("user_s%d", i), 1+r.IntN(3))
		var applied, reference []histEvent
		bodies := map[string][]byte{}
		snapped := map[string]bool{} // user and updated_at: one snapshot id each
		for _, e := range history {
			key := fmt.Sprintf("%s/%d", e.ClerkID, e.UpdatedAt.UnixMilli())
			if e.Type == "user.deleted" || snapped[key] || r.IntN(2) == 0 {
				bodies[e.ID] = e.body(t)
				applied, reference = append(applied, e), append(reference, e)
				continue
			}
			snapped[key] = true
			snap, ref, body := asSnapshot(t, e)
			bodies[snap.ID] = body
			applied, reference = append(applied, snap), append(reference, ref)
			if r.IntN(3) == 0 { // its webhook too
				bodies[e.ID] = e.body(t)
				applied, reference = append(applied, e), append(reference, e)
			}
		}
		for _, batch := range split(r, deliveries(r, applied), 8) {
			if _, err := applyBatch(b.pool, batch, bodies, uint64(i)*100); err != nil {
				t.Fatalf("case %d (CLERKSYNC_PROPERTY_SEED=%d): %v", i, seed, err)
			}
		}
		for id, s := range fold(t, reference) {
			want[id] = s
		}
	}
	if diff := cmp.Diff(want, readState(t, b.pool)); diff != "" {
		t.Errorf("CLERKSYNC_PROPERTY_SEED=%d (-want +got)\n%s", seed, diff)
	}
}

func TestReconcileFaults(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		faults      []clerkapitest.Fault
		wantErr     error
		wantRetries int64
	}{
		{"429 on a page is waited out", []clerkapitest.Fault{{Status: 429, RetryAfter: "1"}}, nil, 1},
		{"a 500 is retried", []clerkapitest.Fault{{Status: 500}}, nil, 1},
		{"a 401 stops at once", []clerkapitest.Fault{{Status: 401}}, clerkapi.ErrUnauthorized, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := rsetup(t)
			r.put(t, "f", 1100, 1700000100000)
			r.api.FailAt(2, tt.faults...) // the second page
			began := time.Now()
			sum, err := r.sweep(t, ReconcileOptions{})
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("sweep: %v, want %v", err, tt.wantErr)
			}
			if sum.Retries != tt.wantRetries {
				t.Errorf("%d retries, want %d", sum.Retries, tt.wantRetries)
			}
			if tt.wantErr == nil {
				if !sum.Complete || sum.Seen != 1100 || sum.Published != 1100 {
					t.Errorf("summary %+v, want a complete sweep of 1100", sum)
				}
				if tt.faults[0].Status == 429 && time.Since(began) < time.Second {
					t.Errorf("the sweep took %s: Retry-After 1 was not waited out", time.Since(began))
				}
				return
			}
			if sum.Complete || r.api.Requests() != 2 {
				t.Errorf("after a 401: %d requests, complete %v; want it to stop at the 401", r.api.Requests(), sum.Complete)
			}
			if !strings.Contains(err.Error(), "CLERK_SECRET_KEY") || strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q: want one line naming CLERK_SECRET_KEY", err)
			}
		})
	}
}

func TestReconcileDryRun(t *testing.T) {
	t.Parallel()
	r := rsetup(t)
	r.put(t, "d", 30, 1700000100000)
	msgs := r.streamMessages(t)
	sum, err := r.sweep(t, ReconcileOptions{DryRun: true, Prune: true})
	if err != nil || sum.Published != 30 || !sum.Complete {
		t.Fatalf("dry run: %v, %+v", err, sum)
	}
	if got := r.streamMessages(t); got != msgs {
		t.Errorf("a dry run changed the stream: %d messages, was %d", got, msgs)
	}
}

func TestReconcilePrune(t *testing.T) {
	t.Parallel()
	r := rsetup(t)
	start(t, r.cfg)
	ids := r.put(t, "p", 10, 1700000100000)
	if _, err := r.sweep(t, ReconcileOptions{}); err != nil {
		t.Fatal(err)
	}
	r.settle(t)

	// Deleted in Clerk while the webhook endpoint was down.
	r.api.Delete(ids[3])
	sum, err := r.sweep(t, ReconcileOptions{Prune: true})
	if err != nil || sum.Missing != 1 || sum.Pruned != 1 {
		t.Fatalf("prune: %v, %+v", err, sum)
	}
	r.settle(t)
	state := readState(t, r.pool)
	if s := state[ids[3]]; s.DeletedAt == nil || s.Email != nil {
		t.Errorf("pruned user: %+v, want a tombstone", s)
	}
	if s := state[ids[4]]; s.DeletedAt != nil {
		t.Errorf("another user was deleted: %+v", s)
	}

	// Most users gone at once looks like the wrong instance: refused, nothing published.
	for _, id := range ids[4:9] {
		r.api.Delete(id)
	}
	msgs := r.streamMessages(t)
	sum, err = r.sweep(t, ReconcileOptions{Prune: true})
	if !errors.Is(err, ErrPruneRefused) || sum.Pruned != 0 || sum.Missing != 5 || !strings.Contains(err.Error(), "more than half") {
		t.Errorf("prune of 5 of 9: %v, %+v; want it refused", err, sum)
	}
	if got := r.streamMessages(t); got != msgs {
		t.Errorf("a refused prune published %d messages", got-msgs)
	}

	// An incomplete sweep prunes nothing.
	r.api.FailNext(clerkapitest.Fault{Status: 500}, clerkapitest.Fault{Status: 500}, clerkapitest.Fault{Status: 500},
		clerkapitest.Fault{Status: 500}, clerkapitest.Fault{Status: 500})
	_, err = r.sweep(t, ReconcileOptions{Prune: true})
	if !errors.Is(err, ErrPruneRefused) || !errors.Is(err, clerkapi.ErrGaveUp) {
		t.Errorf("prune after a failed sweep: %v", err)
	}
	if got := r.streamMessages(t); got != msgs {
		t.Errorf("an incomplete sweep published %d messages", got-msgs)
	}
}

// TestReconcileOneAtATime: while a sweep holds the advisory lock, another refuses at once,
// without reading the API; once it ends the next one runs.
func TestReconcileOneAtATime(t *testing.T) {
	t.Parallel()
	r := rsetup(t)
	r.put(t, "l", 600, 1700000100000)
	r.api.SetLatency(time.Second)
	first := make(chan error, 1)
	go func() { _, err := r.sweep(t, ReconcileOptions{}); first <- err }()
	waitFor(t, 10*time.Second, "the first sweep to read", func() bool { return r.api.Requests() >= 1 })
	_, err := r.sweep(t, ReconcileOptions{})
	if !errors.Is(err, ErrReconcileRunning) {
		t.Errorf("second sweep: %v, want ErrReconcileRunning", err)
	}
	if err := <-first; err != nil {
		t.Fatalf("first sweep: %v", err)
	}
	if n := r.api.Requests(); n != 2 {
		t.Errorf("%d requests, want the first sweep's 2 only", n)
	}
	r.api.SetLatency(0)
	if sum, err := r.sweep(t, ReconcileOptions{}); err != nil || !sum.Complete {
		t.Errorf("a sweep after the first ended: %v %+v", err, sum)
	}
}

// TestReconcileRate: a sweep keeps to CLERK_API_RATE, retries included: the token bucket
// (rate r, burst r, starting empty) allows at most r + r·T requests in any span of T, and r·T
// when it never idles; a retry's back-off is idle time, so the bound with the burst is the one
// to check.
func TestReconcileRate(t *testing.T) {
	t.Parallel()
	r := rsetup(t)
	const rate = 3
	r.cfg.ClerkAPIRate = rate
	r.put(t, "r", 2600, 1700000100000) // 6 pages
	r.api.FailAt(3, clerkapitest.Fault{Status: 502}, clerkapitest.Fault{Status: 503})
	sum, err := r.sweep(t, ReconcileOptions{})
	if err != nil || !sum.Complete || sum.Requests != 8 {
		t.Fatalf("sweep: %v, %+v", err, sum)
	}
	for _, span := range []time.Duration{time.Second, 2 * time.Second} {
		limit := rate + int(rate*span.Seconds())
		if got := r.api.MaxInWindow(span); got > limit {
			t.Errorf("%d requests within %s, more than the bucket allows (%d)", got, span, limit)
		}
	}
	// Eight requests, the bucket empty at the start: at least 7/3 s.
	if sum.Took < 2*time.Second {
		t.Errorf("8 requests at %d/s took %s", rate, sum.Took)
	}
	t.Logf("requests per second of the fake's clock: %v; most within 1s: %d", r.api.PerSecond(), r.api.MaxInWindow(time.Second))
}

// TestRunReconcilesPeriodically: with RECONCILE_INTERVAL the worker sweeps by itself, and its
// metrics say so.
func TestRunReconcilesPeriodically(t *testing.T) {
	t.Parallel()
	r := rsetup(t)
	ids := r.put(t, "i", 20, 1700000100000)
	r.api.FailAt(1, clerkapitest.Fault{Status: 500})
	cfg := r.cfg
	cfg.ReconcileInterval = 200 * time.Millisecond
	w := start(t, cfg)
	waitFor(t, 20*time.Second, "the periodic sweep's users", func() bool {
		return count(t, r.pool, `SELECT count(*) FROM users`) == len(ids)
	})
	waitFor(t, 10*time.Second, "a successful sweep", func() bool {
		return metric(t, w, `clerksync_worker_reconcile_last_success_timestamp_seconds`) > 0
	})
	for series, want := range map[string]float64{
		`clerksync_worker_reconcile_published_total{kind="users"}`: 20,
		`clerksync_worker_clerk_api_errors_total{status="500"}`:    1,
	} {
		if got := metric(t, w, series); got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}
}

func TestParseKinds(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"users": "", "users,users": "", " users ": "",
		"organizations": "", "users,memberships": "", "users,organizations,memberships": "",
		"groups": `unknown kind`, "": "unknown kind",
	} {
		_, err := ParseKinds(in)
		if (want == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), want) {
			t.Errorf("ParseKinds(%q) = %v, want %q", in, err, want)
		}
	}
}
