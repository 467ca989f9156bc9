package worker

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/clerksync/clerksync/internal/postgres/postgrestest"
)

// TestApplyConvergesAcrossKinds is TestApplyConverges for histories of users, organizations and
// memberships together: each event delivered one to three times, in random order and random
// batches, and a case's batches applied by two goroutines at once (as two lanes or two workers
// would), the final rows equal the reference fold, liveness and scrubbing included.
//
// Replay a failure with CLERKSYNC_PROPERTY_SEED (and CLERKSYNC_PROPERTY_CASE for one case);
// CLERKSYNC_ORG_PROPERTY_CASES changes the number of cases (default 400).
func TestApplyConvergesAcrossKinds(t *testing.T) {
	t.Parallel()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("CLERKSYNC_PROPERTY_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("CLERKSYNC_PROPERTY_SEED: %v", err)
		}
	}
	cases := envInt(t, "CLERKSYNC_ORG_PROPERTY_CASES", 400)
	only := envInt(t, "CLERKSYNC_PROPERTY_CASE", -1)
	t.Logf("seed %d, %d cases: replay with CLERKSYNC_PROPERTY_SEED=%d", seed, cases, seed)

	pcfg, err := pgxpool.ParseConfig(postgrestest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	pcfg.ConnConfig.RuntimeParams["synchronous_commit"] = "off"
	pool, err := pgxpool.NewWithConfig(context.Background(), pcfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)

	var mu sync.Mutex
	wantUsers, wantOrgs, wantMemberships := map[string]userState{}, map[string]orgState{}, map[string]membershipState{}
	caseOf := map[string]int{}
	work := make(chan int)
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			for i := range work {
				r := rand.New(rand.NewPCG(seed, uint64(i)))
				history := genOrgHistory(r, fmt.Sprintf("c%d", i))
				bodies := make(map[string][]byte, len(history))
				for _, e := range history {
					bodies[e.ID] = e.body(t)
				}
				batches := split(r, deliveries(r, history), 8)
				var cmu sync.Mutex
				counted := map[string]int{}
				var lanes sync.WaitGroup
				for lane := range 2 {
					lanes.Go(func() {
						for b := lane; b < len(batches); b += 2 {
							batch := batches[b]
							outcomes, err := applyBatchWith(applyRedelivering, pool, batch, bodies, uint64(i)*1000+uint64(b)*10)
							if err != nil {
								t.Errorf("case %d (CLERKSYNC_PROPERTY_SEED=%d CLERKSYNC_PROPERTY_CASE=%d): %v", i, seed, i, err)
								return
							}
							// (A batch partly redelivered is several transactions: unlike in
							// TestApplyConverges, two events of one object may both apply.)
							cmu.Lock()
							for k, o := range outcomes {
								if o == outcomeApplied || o == outcomeStale {
									counted[batch[k].ID]++
								}
							}
							cmu.Unlock()
						}
					})
				}
				lanes.Wait()
				for _, e := range history {
					if counted[e.ID] != 1 {
						t.Errorf("case %d (CLERKSYNC_PROPERTY_SEED=%d): event %s counted as applied or stale %d times, want 1", i, seed, e.ID, counted[e.ID])
					}
				}
				users := fold(t, history)
				orgs, memberships := foldOrgs(t, history, users)
				mu.Lock()
				for id, s := range users {
					wantUsers[id], caseOf[id] = s, i
				}
				for id, s := range orgs {
					wantOrgs[id], caseOf[id] = s, i
				}
				for id, s := range memberships {
					wantMemberships[id], caseOf[id] = s, i
				}
				mu.Unlock()
			}
		})
	}
	for i := range cases {
		if only < 0 || i == only {
			work <- i
		}
	}
	close(work)
	wg.Wait()

	failures := 0
	check := func(id string, diff string) {
		t.Helper()
		if diff == "" {
			return
		}
		t.Errorf("case %d, %s (CLERKSYNC_PROPERTY_SEED=%d CLERKSYNC_PROPERTY_CASE=%d) (-want +got):\n%s", caseOf[id], id, seed, caseOf[id], diff)
		if failures++; failures == 5 {
			t.Fatal("stopping after 5 differences")
		}
	}
	gotUsers := readState(t, pool)
	for _, id := range sortedKeys(wantUsers) {
		check(id, cmp.Diff(wantUsers[id], gotUsers[id]))
	}
	gotOrgs, gotMemberships := readOrgs(t, pool)
	for _, id := range sortedKeys(wantOrgs) {
		check(id, cmp.Diff(wantOrgs[id], gotOrgs[id]))
	}
	for _, id := range sortedKeys(wantMemberships) {
		check(id, cmp.Diff(wantMemberships[id], gotMemberships[id]))
	}
	if len(gotUsers) != len(wantUsers) || len(gotOrgs) != len(wantOrgs) || len(gotMemberships) != len(wantMemberships) {
		t.Errorf("%d users, %d organizations, %d memberships in the projection, want %d, %d, %d",
			len(gotUsers), len(gotOrgs), len(gotMemberships), len(wantUsers), len(wantOrgs), len(wantMemberships))
	}
	live := 0
	for _, s := range wantMemberships {
		if s.Live {
			live++
		}
	}
	t.Logf("%d users, %d organizations, %d memberships (%d live)", len(wantUsers), len(wantOrgs), len(wantMemberships), live)
}

// TestRunAndReplayAcrossKinds runs three workers sharing the durable consumer over histories of
// users, organizations and memberships (each event published 1–3 times, shuffled), checks the
// rows against the reference fold, then rebuilds the projection from the stream with Replay and
// checks that it reproduces the same rows and ids.
func TestRunAndReplayAcrossKinds(t *testing.T) {
	t.Parallel()
	b := setup(t)
	seed := uint64(time.Now().UnixNano())
	t.Logf("history seed %d", seed)
	r := rand.New(rand.NewPCG(seed, 0))
	var history []histEvent
	for i := range 12 {
		history = append(history, genOrgHistory(r, fmt.Sprintf("h%d", i))...)
	}
	cfg := b.cfg
	cfg.BatchSize = 8
	for range 3 {
		start(t, cfg)
	}
	seen := map[string]bool{}
	for _, e := range deliveries(r, history) {
		publish(t, b.js, e, seen[e.ID])
		seen[e.ID] = true
	}
	waitFor(t, 60*time.Second, "every event", func() bool {
		return count(t, b.pool, `SELECT count(*) FROM processed_events`) == len(seen)
	})
	settled(t, durable(t, b))
	users := fold(t, history)
	wantOrgs, wantMems := foldOrgs(t, history, users)
	check := func(when string) {
		t.Helper()
		if diff := cmp.Diff(users, readState(t, b.pool)); diff != "" {
			t.Errorf("users %s (-want +got):\n%s", when, diff)
		}
		gotOrgs, gotMems := readOrgs(t, b.pool)
		if diff := cmp.Diff(wantOrgs, gotOrgs); diff != "" {
			t.Errorf("organizations %s (-want +got):\n%s", when, diff)
		}
		if diff := cmp.Diff(wantMems, gotMems); diff != "" {
			t.Errorf("memberships %s (-want +got):\n%s", when, diff)
		}
	}
	check("built by the workers")
	if n := count(t, b.pool, `SELECT count(*) FROM dead_letters`); n != 0 {
		t.Errorf("%d dead letters", n)
	}

	if _, err := b.pool.Exec(context.Background(),
		`TRUNCATE users, subscriptions, usage_metrics, organizations, organization_memberships, processed_events`); err != nil {
		t.Fatal(err)
	}
	rcfg := b.cfg
	rcfg.BatchSize = 16
	sum, err := Replay(context.Background(), rcfg, ReplayOptions{FromSeq: 1}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if sum.Applied+sum.Stale != len(seen) {
		t.Errorf("replay: %+v, want %d events applied or stale", sum, len(seen))
	}
	check("rebuilt by replay")
}

// BenchmarkApplyMixedBatch is BenchmarkApplyBatch's batch=256 with half of each batch membership
// versions (of 10,000 memberships of 100 organizations, whose users exist): the batch then takes
// the advisory locks and an explicit transaction, and runs two fold statements.
func BenchmarkApplyMixedBatch(b *testing.B) {
	pool := postgrestest.NewPool(b)
	const users, orgs, size = 10000, 100, 256
	ctx := context.Background()
	next := 0
	apply := func(events []histEvent) []outcome {
		ds := make([]*delivery, len(events))
		for k, e := range events {
			if ds[k] = newDelivery(uint64(next*size+k+1), "clerk."+e.Type, e.ID, e.body(b)); ds[k].poison != nil {
				b.Fatal(ds[k].poison)
			}
		}
		outcomes, err := applyOnce(ctx, pool, ds)
		if err != nil {
			b.Fatal(err)
		}
		return outcomes
	}
	batch := func() []histEvent {
		events := make([]histEvent, size)
		for k := range events {
			next++
			u := fmt.Sprintf("user_bench_%05d", next%users)
			at := 1700000000000 + int64(next)
			if k%2 == 0 {
				events[k] = updated(fmt.Sprintf("msg_%09d", next), u, at)
			} else {
				events[k] = membership(fmt.Sprintf("msg_%09d", next), fmt.Sprintf("orgmem_bench_%05d", next%users),
					fmt.Sprintf("org_bench_%03d", next%orgs), u, "org:member", at)
			}
		}
		return events
	}
	setup := make([]histEvent, 0, orgs)
	for o := range orgs {
		setup = append(setup, org(fmt.Sprintf("msg_org_%03d", o), fmt.Sprintf("org_bench_%03d", o), 1700000000000))
	}
	apply(setup)
	for range 2 * users / size { // users and memberships exist: the steady state
		apply(batch())
	}
	var applied int
	b.ResetTimer()
	for b.Loop() {
		b.StopTimer()
		events := batch()
		b.StartTimer()
		for _, o := range apply(events) {
			if o == outcomeApplied {
				applied++
			}
		}
	}
	b.ReportMetric(float64(applied)/b.Elapsed().Seconds(), "events/s")
}
