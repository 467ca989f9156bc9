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

// TestApplyConverges is the property behind the projection: for seeded random histories, each
// event delivered one to three times, in random order and random batches, the final rows equal
// the reference fold. Cases share one database (their users are disjoint) and run four at a time;
// each goes through the same parse and applier as the consumer.
//
// Replay a failure with CLERKSYNC_PROPERTY_SEED (and CLERKSYNC_PROPERTY_CASE for one case);
// CLERKSYNC_PROPERTY_CASES changes the number of cases (default 2000).
func TestApplyConverges(t *testing.T) {
	t.Parallel()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("CLERKSYNC_PROPERTY_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("CLERKSYNC_PROPERTY_SEED: %v", err)
		}
	}
	cases := envInt(t, "CLERKSYNC_PROPERTY_CASES", 2000)
	only := envInt(t, "CLERKSYNC_PROPERTY_CASE", -1)
	t.Logf("seed %d, %d cases: replay with CLERKSYNC_PROPERTY_SEED=%d", seed, cases, seed)

	// Durability is not what this test is about: commits need not wait for the disk.
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
	want := map[string]userState{}
	caseOf := map[string]int{}
	work := make(chan int)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for i := range work {
				r := rand.New(rand.NewPCG(seed, uint64(i)))
				history := genHistory(r, fmt.Sprintf("user_c%d", i), 1+r.IntN(3))
				bodies := make(map[string][]byte, len(history))
				for _, e := range history {
					bodies[e.ID] = e.body(t)
				}
				// What each event's outcomes must be: counted once (applied or stale) however
				// often it comes, at most one applied per user and batch, and the event that
				// decides a user's final row applied.
				counted := map[string]int{}
				applied := map[string]bool{}
				for _, batch := range split(r, deliveries(r, history), 8) {
					outcomes, err := applyBatch(pool, batch, bodies, uint64(i)*100)
					if err != nil {
						t.Errorf("case %d (CLERKSYNC_PROPERTY_SEED=%d CLERKSYNC_PROPERTY_CASE=%d): %v", i, seed, i, err)
						break
					}
					winners := map[string]int{}
					for k, o := range outcomes {
						switch o {
						case outcomeApplied:
							applied[batch[k].ID] = true
							winners[batch[k].ClerkID]++
							counted[batch[k].ID]++
						case outcomeStale:
							counted[batch[k].ID]++
						}
					}
					for u, n := range winners {
						if n > 1 {
							t.Errorf("case %d (CLERKSYNC_PROPERTY_SEED=%d): %d events of %s applied in one batch", i, seed, n, u)
						}
					}
				}
				expected := fold(t, history)
				for _, e := range history {
					if counted[e.ID] != 1 {
						t.Errorf("case %d (CLERKSYNC_PROPERTY_SEED=%d): event %s counted as applied or stale %d times, want 1", i, seed, e.ID, counted[e.ID])
					}
				}
				for id, s := range expected {
					decided := false
					for _, e := range history {
						if e.ClerkID == id && applied[e.ID] &&
							(s.VersionEventID != nil && *s.VersionEventID == e.ID ||
								s.DeletedAt != nil && e.Type == "user.deleted" && e.At.Equal(*s.DeletedAt)) {
							decided = true
						}
					}
					if !decided {
						t.Errorf("case %d (CLERKSYNC_PROPERTY_SEED=%d): the event that decides %s was never counted as applied", i, seed, id)
					}
				}
				mu.Lock()
				for id, s := range expected {
					want[id], caseOf[id] = s, i
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

	got := readState(t, pool)
	failures := 0
	for _, id := range sortedKeys(want) {
		if diff := cmp.Diff(want[id], got[id]); diff != "" {
			t.Errorf("case %d, %s (CLERKSYNC_PROPERTY_SEED=%d CLERKSYNC_PROPERTY_CASE=%d) (-want +got):\n%s",
				caseOf[id], id, seed, caseOf[id], diff)
			if failures++; failures == 5 {
				t.Fatal("stopping after 5 differences")
			}
		}
	}
	if len(got) != len(want) {
		t.Errorf("%d users in the projection, want %d", len(got), len(want))
	}
}

// applyBatch decodes events (their bodies by svix-id) as stream messages and applies them in
// one transaction, returning each one's outcome.
func applyBatch(pool *pgxpool.Pool, batch []histEvent, bodies map[string][]byte, seqBase uint64) ([]outcome, error) {
	return applyBatchWith(applyOnce, pool, batch, bodies, seqBase)
}

func applyBatchWith(apply func(context.Context, *pgxpool.Pool, []*delivery) ([]outcome, error),
	pool *pgxpool.Pool, batch []histEvent, bodies map[string][]byte, seqBase uint64) ([]outcome, error) {
	ds := make([]*delivery, len(batch))
	for k, e := range batch {
		ds[k] = newDelivery(seqBase+uint64(k)+1, "clerk."+e.Type, e.ID, bodies[e.ID])
		if ds[k].poison != nil {
			return nil, ds[k].poison
		}
	}
	return apply(context.Background(), pool, ds)
}

func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return n
}

// BenchmarkApplyBatch measures the apply path (parse, one transaction, the ledger and the fold)
// for batches of 1, 16 and 256 events: user.updated events with new svix-ids for a pool of 10,000
// existing users, each version newer than the last, so every event applies.
func BenchmarkApplyBatch(b *testing.B) {
	for _, size := range []int{1, 16, 256} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			pool := postgrestest.NewPool(b)
			const users = 10000
			next := 0
			type message struct {
				seq  uint64
				id   string
				body []byte
			}
			messages := func(size int) []message {
				msgs := make([]message, size)
				for k := range msgs {
					next++
					e := updated(fmt.Sprintf("msg_%09d", next), fmt.Sprintf("user_bench_%05d", next%users), 1700000000000+int64(next))
					msgs[k] = message{uint64(next), e.ID, e.body(b)}
				}
				return msgs
			}
			ctx := context.Background()
			apply := func(msgs []message) []outcome {
				ds := make([]*delivery, len(msgs))
				for k, m := range msgs {
					if ds[k] = newDelivery(m.seq, "clerk.user.updated", m.id, m.body); ds[k].poison != nil {
						b.Fatal(ds[k].poison)
					}
				}
				outcomes, err := applyOnce(ctx, pool, ds)
				if err != nil {
					b.Fatal(err)
				}
				return outcomes
			}
			for range users / 250 { // the users exist: measure the steady state, not first inserts
				apply(messages(250))
			}
			var applied int
			b.ResetTimer()
			for b.Loop() {
				b.StopTimer()
				msgs := messages(size)
				b.StartTimer()
				for _, o := range apply(msgs) {
					if o == outcomeApplied {
						applied++
					}
				}
			}
			b.ReportMetric(float64(applied)/b.Elapsed().Seconds(), "events/s")
		})
	}
}
