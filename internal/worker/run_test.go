package worker

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/clerksync/clerksync/internal/event"
	"github.com/clerksync/clerksync/internal/service"
)

// The tests here run the worker as it runs in production: Run, its HTTP endpoints, the durable
// consumer on a real NATS server, Postgres through the network.

func TestMain(m *testing.M) {
	// TestWorkerKilledMidBatch runs the worker as a child process of this test binary.
	if os.Getenv("CLERKSYNC_WORKER_TEST_CHILD") == "1" {
		os.Exit(runChild())
	}
	goleak.VerifyTestMain(m) // and no goroutine outlives the tests

}

func runChild() int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	cfg, err := service.ParseEnv[Config](os.Getenv)
	if err == nil {
		cfg.NoMigrate = true
		err = Run(ctx, cfg, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})), nil)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		return 1
	}
	return 0
}

// runner is a worker started with Run on a loopback listener.
type runner struct {
	url    string
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	err    error
}

// start runs the worker with cfg and waits until /readyz answers 200. It is stopped when the test
// ends, if the test has not stopped it.
func start(t *testing.T, cfg Config) *runner {
	t.Helper()
	var lc net.ListenConfig
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &runner{url: "http://" + ln.Addr().String(), cancel: cancel, done: make(chan error, 1)}
	logger := testLogger(t)
	go func() { r.done <- Run(ctx, cfg, logger, ln) }()
	t.Cleanup(func() { _ = r.stop(t) })
	waitFor(t, 20*time.Second, "/readyz to answer 200", func() bool {
		select {
		case err := <-r.done:
			t.Fatalf("worker exited: %v", err)
		default:
		}
		return statusOf(t, r.url+"/readyz") == http.StatusOK
	})
	return r
}

// stop asks the worker to stop (as SIGTERM does) and returns what Run returned.
func (r *runner) stop(t *testing.T) error {
	t.Helper()
	r.once.Do(func() {
		r.cancel()
		select {
		case r.err = <-r.done:
		case <-time.After(service.ShutdownTimeout + 5*time.Second):
			r.err = errors.New("worker did not stop in time")
		}
	})
	return r.err
}

func statusOf(t *testing.T, u string) int {
	t.Helper()
	resp, err := http.Get(u) //nolint:noctx // a test probe
	if err != nil {
		return 0
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode
}

// metric returns the value of one series on /metrics (0 when absent), e.g.
// `clerksync_worker_events_total{outcome="applied",type="user.created"}`.
func metric(t *testing.T, r *runner, series string) float64 {
	t.Helper()
	resp, err := http.Get(r.url + "/metrics") //nolint:noctx // a test probe
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	return 0
}

func durable(t *testing.T, b *bundle) jetstream.Consumer {
	t.Helper()
	cons, err := b.js.Consumer(context.Background(), event.Stream, b.cfg.Consumer)
	if err != nil {
		t.Fatal(err)
	}
	return cons
}

func TestRunEndToEnd(t *testing.T) {
	t.Parallel()
	b := setup(t)
	cfg := b.cfg
	cfg.NoMigrate = false // already migrated: a no-op under the advisory lock, but the path runs
	r := start(t, cfg)

	if got := statusOf(t, r.url+"/healthz"); got != http.StatusOK {
		t.Errorf("/healthz: %d", got)
	}
	resp, err := http.Get(r.url + "/nowhere") //nolint:noctx // a test probe
	if err != nil {
		t.Fatal(err)
	}
	var body service.ErrorBody
	_ = json.NewDecoder(resp.Body).Decode(&body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound || body.Error.Code != "not_found" {
		t.Errorf("unknown route: %d %+v, want 404 not_found", resp.StatusCode, body)
	}

	raw, err := os.ReadFile("testdata/user.created.json")
	if err != nil {
		t.Fatal(err)
	}
	publishRaw(t, b.js, "clerk.user.created", "msg_e2e", raw, false)
	publishRaw(t, b.js, "clerk.session.created", "msg_session", []byte(`{"type":"session.created","data":{"id":"sess_1"}}`), false)
	const id = "user_29w83sxmDNGwOuEthce5gg56FcC"
	waitFor(t, 10*time.Second, "the user row", func() bool { _, ok := readState(t, b.pool)[id]; return ok })
	got := readState(t, b.pool)[id]
	if *got.Email != "example@example.org" || *got.Tier != "free" || *got.Status != "active" || !got.HasUsage {
		t.Errorf("user: %+v", got)
	}

	for series, want := range map[string]float64{
		`clerksync_worker_events_total{outcome="applied",type="user.created"}`: 1,
		`clerksync_worker_freshness_seconds_count`:                             1,
		`clerksync_worker_consumer_pending`:                                    0,
		`clerksync_worker_postgres_up`:                                         1,
		`clerksync_worker_nats_server_supported`:                               1, // the embedded server is current
	} {
		if got := metric(t, r, series); got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}
	if got := metric(t, r, `clerksync_worker_batch_size_count`); got < 1 {
		t.Errorf("batch size histogram empty")
	}
	if err := r.stop(t); err != nil {
		t.Fatalf("Run after shutdown: %v", err)
	}
	if info := settled(t, durable(t, b)); info.NumRedelivered != 0 {
		t.Errorf("redelivered: %d", info.NumRedelivered)
	}
}

// simulateBug makes Postgres reject users named "boom", as a projection bug would: an event that
// parses but fails with Postgres reachable, with an error that may heal (a trigger's exception,
// SQLSTATE P0001), so the worker retries it. (A constraint violation would be poison, parked at
// once.) It returns the fix.
func simulateBug(t *testing.T, b *bundle) (fix func()) {
	t.Helper()
	ctx := context.Background()
	if _, err := b.pool.Exec(ctx, `
		CREATE FUNCTION simulated_bug() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF NEW.username = 'boom' THEN
				RAISE EXCEPTION 'simulated_bug: a user named boom';
			END IF;
			RETURN NEW;
		END $$;
		CREATE TRIGGER simulated_bug BEFORE INSERT OR UPDATE ON users
			FOR EACH ROW EXECUTE FUNCTION simulated_bug();`); err != nil {
		t.Fatal(err)
	}
	return func() {
		if _, err := b.pool.Exec(ctx, `DROP TRIGGER simulated_bug ON users`); err != nil {
			t.Fatal(err)
		}
	}
}

// TestRunRetriesThenParks: an event failing with Postgres reachable is split from its batch,
// retried with back-off, parked after WORKER_MAX_ATTEMPTS, and applies once retried after a fix.
func TestRunRetriesThenParks(t *testing.T) {
	t.Parallel()
	b := setup(t)
	fix := simulateBug(t, b)
	good1, good2 := created("msg_good1", "user_good1", 1700000000000), created("msg_good2", "user_good2", 1700000000000)
	bad := created("msg_bad", "user_bad", 1700000000000)
	bad.Username = ptr("boom")
	// Published before the worker starts, so they come as one batch.
	publish(t, b.js, good1, false)
	badSeq := publish(t, b.js, bad, false)
	publish(t, b.js, good2, false)
	poisonSeq := publishRaw(t, b.js, "clerk.user.updated", "msg_poison", []byte(`{"type":"user.updated","data":{"id":"user_poison"}}`), false)

	cfg := b.cfg
	cfg.MaxAttempts = 3
	r := start(t, cfg)
	waitFor(t, 20*time.Second, "two dead letters", func() bool { return count(t, b.pool, `SELECT count(*) FROM dead_letters`) == 2 })
	settled(t, durable(t, b))

	want := map[string]userState{"user_good1": live(t, good1), "user_good2": live(t, good2)}
	if diff := cmp.Diff(want, readState(t, b.pool)); diff != "" {
		t.Errorf("projection (-want +got):\n%s", diff)
	}
	var reason string
	if err := b.pool.QueryRow(context.Background(), `SELECT error FROM dead_letters WHERE stream_seq = $1`, badSeq).Scan(&reason); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(reason, "failed 3 times") || !strings.Contains(reason, "simulated_bug") {
		t.Errorf("dead letter error %q: want the attempts and the cause", reason)
	}
	for series, want := range map[string]float64{
		`clerksync_worker_events_total{outcome="retried",type="user.created"}`:       2,
		`clerksync_worker_events_total{outcome="dead_lettered",type="user.created"}`: 1,
		`clerksync_worker_events_total{outcome="dead_lettered",type="user.updated"}`: 1,
		`clerksync_worker_events_total{outcome="applied",type="user.created"}`:       2,
		`clerksync_worker_dead_letters_total{reason="max_attempts"}`:                 1,
		`clerksync_worker_dead_letters_total{reason="poison"}`:                       1,
		`clerksync_worker_dead_letters_pending`:                                      2,
	} {
		if got := metric(t, r, series); got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}

	// The fix ships; the operator retries every dead letter: the bug's victim applies, the
	// poison still cannot and stays pending.
	fix()
	ctx := context.Background()
	sum, err := RetryDeadLetters(ctx, cfg, 0, testLogger(t))
	if err == nil || !strings.Contains(err.Error(), "1 of 2 dead letters still fail") {
		t.Errorf("RetryDeadLetters: %v, want 1 of 2 still failing", err)
	}
	if sum.Applied != 1 || sum.DeadLettered != 1 {
		t.Errorf("retry summary %+v", sum)
	}
	want["user_bad"] = live(t, bad)
	if diff := cmp.Diff(want, readState(t, b.pool)); diff != "" {
		t.Errorf("projection after retry (-want +got):\n%s", diff)
	}
	// The gauge reads Postgres: the retry ran in another process's place, and it sees it.
	if got := metric(t, r, `clerksync_worker_dead_letters_pending`); got != 1 {
		t.Errorf("clerksync_worker_dead_letters_pending = %v after the retry, want 1", got)
	}
	pending, err := ListDeadLetters(ctx, cfg, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(pending) != 1 || pending[0].StreamSeq != int64(poisonSeq) {
		t.Fatalf("pending dead letters %+v, want only the poison", pending)
	}
	all, err := ListDeadLetters(ctx, cfg, true)
	if err != nil {
		t.Fatal(err)
	}
	var retried DeadLetter
	for _, d := range all {
		if d.StreamSeq == int64(badSeq) {
			retried = d
		}
	}
	if retried.RetriedAt == nil {
		t.Errorf("dead letter of seq %d not marked retried: %+v", badSeq, retried)
	}
	if _, err := RetryDeadLetters(ctx, cfg, retried.ID, testLogger(t)); err == nil || !strings.Contains(err.Error(), "already retried") {
		t.Errorf("retrying a retried dead letter: %v", err)
	}
	if _, err := RetryDeadLetters(ctx, cfg, 999, testLogger(t)); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("retrying a missing dead letter: %v", err)
	}
}

// TestRunParksMaxDeliveries: a message JetStream gives up on (MaxDeliver reached before the
// worker's own limit) is read back from the stream and parked from the advisory.
func TestRunParksMaxDeliveries(t *testing.T) {
	t.Parallel()
	b := setup(t)
	simulateBug(t, b)
	start(t, b.cfg)

	// An operator (or an older worker) set a lower MaxDeliver than the worker's attempts.
	ctx := context.Background()
	info, err := durable(t, b).Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c := info.Config
	c.MaxDeliver = 2
	if _, err := b.js.UpdateConsumer(ctx, event.Stream, c); err != nil {
		t.Fatal(err)
	}
	bad := created("msg_bad", "user_bad", 1700000000000)
	bad.Username = ptr("boom")
	seq := publish(t, b.js, bad, false)
	waitFor(t, 20*time.Second, "the dead letter", func() bool {
		return count(t, b.pool, `SELECT count(*) FROM dead_letters WHERE stream_seq = $1 AND error LIKE '%MaxDeliver%'`, seq) == 1
	})
	var payload []byte
	if err := b.pool.QueryRow(ctx, `SELECT payload FROM dead_letters WHERE stream_seq = $1`, seq).Scan(&payload); err != nil {
		t.Fatal(err)
	}
	if string(payload) != string(bad.body(t)) {
		t.Errorf("parked payload differs from the stream message")
	}
}

// proxy stands between the worker and Postgres so a test can take Postgres away: down, it cuts
// every connection and closes new ones at once, as a stopped server does.
type proxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	down   bool
	conns  map[net.Conn]bool
}

func newProxy(t *testing.T, target string) *proxy {
	t.Helper()
	var lc net.ListenConfig
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target, conns: map[net.Conn]bool{}}
	t.Cleanup(func() { _ = ln.Close(); p.setDown(true) })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.serve(c)
		}
	}()
	return p
}

func (p *proxy) serve(c net.Conn) {
	p.mu.Lock()
	if p.down {
		p.mu.Unlock()
		_ = c.Close()
		return
	}
	p.mu.Unlock()
	var d net.Dialer
	up, err := d.DialContext(context.Background(), "tcp", p.target)
	if err != nil {
		_ = c.Close()
		return
	}
	p.mu.Lock()
	p.conns[c], p.conns[up] = true, true
	p.mu.Unlock()
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(up, c); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, up); done <- struct{}{} }()
	<-done
	_ = c.Close()
	_ = up.Close()
	p.mu.Lock()
	delete(p.conns, c)
	delete(p.conns, up)
	p.mu.Unlock()
}

func (p *proxy) setDown(down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = down
	if down {
		for c := range p.conns {
			_ = c.Close()
		}
	}
}

// through returns dbURL with its host replaced by the proxy, which forwards to dbURL's host.
func proxied(t *testing.T, dbURL string) (*proxy, string) {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil || u.Host == "" {
		t.Fatalf("the outage test needs a postgres:// URL, got a key=value DSN")
	}
	p := newProxy(t, u.Host)
	u.Host = p.ln.Addr().String()
	return p, u.String()
}

// TestRunHoldsDuringPostgresOutage: while Postgres is unreachable the worker holds what it
// fetched (keeping it from redelivery), fetches nothing more, and /readyz fails; when Postgres is
// back everything applies, nothing is dead-lettered and no delivery attempt was spent.
func TestRunHoldsDuringPostgresOutage(t *testing.T) {
	t.Parallel()
	b := setup(t)
	p, dbURL := proxied(t, b.cfg.DatabaseURL)
	cfg := b.cfg
	cfg.DatabaseURL = dbURL
	cfg.AckWait = 2 * time.Second
	r := start(t, cfg)
	ctx := context.Background()

	var events []histEvent
	send := func(n int) {
		for range n {
			e := created(fmt.Sprintf("msg_%03d", len(events)), fmt.Sprintf("user_%03d", len(events)), 1700000000000)
			events = append(events, e)
			publish(t, b.js, e, false)
		}
	}
	applied := func(n int) func() bool {
		return func() bool { return count(t, b.pool, `SELECT count(*) FROM users`) == n }
	}
	send(5)
	waitFor(t, 10*time.Second, "the first events", applied(5))

	// Its connections are killed (a restart, a failover): the next batch retries on new ones.
	if _, err := b.pool.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE datname = current_database() AND pid <> pg_backend_pid()`); err != nil {
		t.Fatal(err)
	}
	send(3)
	waitFor(t, 10*time.Second, "the events after the connections were killed", applied(8))

	// Postgres goes away for longer than AckWait.
	p.setDown(true)
	waitFor(t, 10*time.Second, "/readyz to fail", func() bool { return statusOf(t, r.url+"/readyz") == http.StatusServiceUnavailable })
	send(10)
	cons := durable(t, b)
	waitFor(t, 10*time.Second, "the worker to hold a batch", func() bool {
		info, err := cons.Info(ctx)
		return err == nil && info.NumAckPending > 0
	})
	if got := metric(t, r, `clerksync_worker_postgres_up`); got != 0 {
		t.Errorf("postgres_up = %v during the outage", got)
	}
	time.Sleep(3 * cfg.AckWait) // the outage lasts: held messages must not be redelivered
	p.setDown(false)
	waitFor(t, 20*time.Second, "the events held during the outage", applied(18))
	waitFor(t, 10*time.Second, "/readyz to recover", func() bool { return statusOf(t, r.url+"/readyz") == http.StatusOK })

	info := settled(t, cons)
	if info.Delivered.Consumer != uint64(len(events)) {
		t.Errorf("%d deliveries for %d messages: attempts were spent during the outage", info.Delivered.Consumer, len(events))
	}
	if n := count(t, b.pool, `SELECT count(*) FROM dead_letters`); n != 0 {
		t.Errorf("%d dead letters, want none", n)
	}
	if got := metric(t, r, `clerksync_worker_events_total{outcome="retried",type="user.created"}`); got != 0 {
		t.Errorf("%v NAKs during an outage, want none", got)
	}
	if diff := cmp.Diff(fold(t, events), readState(t, b.pool)); diff != "" {
		t.Errorf("projection (-want +got):\n%s", diff)
	}
}

// publishHistory publishes a seeded history, each event one to three times (the repeats as late
// Svix retries), and returns the history.
func publishHistory(t *testing.T, b *bundle, seed uint64, users int) (history, sent []histEvent) {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 0))
	history = genHistory(r, "user_h", users)
	seen := map[string]bool{}
	for _, e := range deliveries(r, history) {
		publish(t, b.js, e, seen[e.ID])
		seen[e.ID] = true
		sent = append(sent, e)
	}
	return history, sent
}

// TestRunSharedConsumer: several workers on one durable consumer end at the same rows.
func TestRunSharedConsumer(t *testing.T) {
	t.Parallel()
	b := setup(t)
	seed := uint64(time.Now().UnixNano())
	t.Logf("history seed %d", seed)
	cfg := b.cfg
	cfg.BatchSize = 8
	for range 3 {
		start(t, cfg)
	}
	history, sent := publishHistory(t, b, seed, 60)
	waitFor(t, 60*time.Second, "every event", func() bool {
		return count(t, b.pool, `SELECT count(*) FROM processed_events`) == distinctIDs(history)
	})
	settled(t, durable(t, b))
	if diff := cmp.Diff(fold(t, history), readState(t, b.pool)); diff != "" {
		t.Errorf("projection after %d deliveries (-want +got):\n%s", len(sent), diff)
	}
	if n := count(t, b.pool, `SELECT count(*) FROM dead_letters`); n != 0 {
		t.Errorf("%d dead letters, want none", n)
	}
}

// TestWorkerKilledMidBatch kills a worker process (SIGKILL: no shutdown, acks lost) while it
// works through a backlog, starts another, and checks the rows end the same.
func TestWorkerKilledMidBatch(t *testing.T) {
	t.Parallel()
	b := setup(t)
	seed := uint64(time.Now().UnixNano())
	t.Logf("history seed %d", seed)
	history, _ := publishHistory(t, b, seed, 150)
	total := distinctIDs(history)

	child := func() *exec.Cmd {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(),
			"CLERKSYNC_WORKER_TEST_CHILD=1",
			"NATS_URL="+b.cfg.NATSURL,
			"DATABASE_URL="+b.cfg.DatabaseURL,
			"WORKER_ADDR=127.0.0.1:0",
			"WORKER_BATCH_SIZE=16",
			"WORKER_ACK_WAIT=1s",
			"WORKER_FETCH_WAIT=100ms",
		)
		cmd.Stdout, cmd.Stderr = t.Output(), t.Output()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	first := child()
	waitFor(t, 60*time.Second, "the first worker to be under way", func() bool {
		return count(t, b.pool, `SELECT count(*) FROM processed_events`) >= total/3
	})
	if err := first.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = first.Wait()
	if n := count(t, b.pool, `SELECT count(*) FROM processed_events`); n == total {
		t.Logf("the first worker finished before it was killed; the restart only checks redelivery")
	}

	second := child()
	waitFor(t, 60*time.Second, "every event", func() bool {
		return count(t, b.pool, `SELECT count(*) FROM processed_events`) == total
	})
	settled(t, durable(t, b))
	if err := second.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := second.Wait(); err != nil {
		t.Errorf("worker after SIGTERM: %v, want exit 0", err)
	}
	if diff := cmp.Diff(fold(t, history), readState(t, b.pool)); diff != "" {
		t.Errorf("projection (-want +got):\n%s", diff)
	}
	if n := count(t, b.pool, `SELECT count(*) FROM dead_letters`); n != 0 {
		t.Errorf("%d dead letters, want none", n)
	}
}

// TestRunRecreatesDeletedConsumer: when the durable consumer disappears (deleted by hand, or with
// the stream's data), the worker creates it again and goes on; the ledger makes the redelivered
// history duplicates.
func TestRunRecreatesDeletedConsumer(t *testing.T) {
	t.Parallel()
	b := setup(t)
	// A message the new consumer hands out as it is created can land on a pull request of the
	// old one and be lost: it comes back after AckWait, kept short here.
	cfg := b.cfg
	cfg.AckWait = time.Second
	start(t, cfg)
	first, second := created("msg_first", "user_first", 1700000000000), created("msg_second", "user_second", 1700000000000)
	publish(t, b.js, first, false)
	waitFor(t, 10*time.Second, "the first event", func() bool { return count(t, b.pool, `SELECT count(*) FROM users`) == 1 })
	if err := b.js.DeleteConsumer(context.Background(), event.Stream, b.cfg.Consumer); err != nil {
		t.Fatal(err)
	}
	publish(t, b.js, second, false)
	waitFor(t, 20*time.Second, "the event after the consumer was deleted", func() bool {
		return count(t, b.pool, `SELECT count(*) FROM users`) == 2
	})
	settled(t, durable(t, b))
	if diff := cmp.Diff(fold(t, []histEvent{first, second}), readState(t, b.pool)); diff != "" {
		t.Errorf("projection (-want +got):\n%s", diff)
	}
}

// TestRunWaitsForPostgres: a worker started before Postgres answers does not exit: /healthz
// answers, /readyz fails, and once Postgres is up it migrates, becomes ready and applies.
func TestRunWaitsForPostgres(t *testing.T) {
	t.Parallel()
	b := setup(t)
	p, dbURL := proxied(t, b.cfg.DatabaseURL)
	p.setDown(true)
	cfg := b.cfg
	cfg.DatabaseURL = dbURL
	cfg.NoMigrate = false // migrating waits for Postgres too (the database is migrated already: a no-op)
	var lc net.ListenConfig
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, testLogger(t), ln) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	waitFor(t, 10*time.Second, "/healthz while Postgres is down", func() bool {
		select {
		case err := <-done:
			t.Fatalf("the worker exited instead of waiting for Postgres: %v", err)
		default:
		}
		return statusOf(t, url+"/healthz") == http.StatusOK
	})
	if got := statusOf(t, url+"/readyz"); got != http.StatusServiceUnavailable {
		t.Errorf("/readyz while Postgres is down = %d, want 503", got)
	}
	e := created("msg_early", "user_early", 1700000000000)
	publish(t, b.js, e, false)
	time.Sleep(300 * time.Millisecond) // a few of its attempts
	p.setDown(false)
	waitFor(t, 20*time.Second, "/readyz once Postgres is up", func() bool { return statusOf(t, url+"/readyz") == http.StatusOK })
	waitFor(t, 10*time.Second, "the event to apply", func() bool { return count(t, b.pool, `SELECT count(*) FROM users`) == 1 })
}
