package api

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/clerksync/clerksync/internal/api/apitest"
	"github.com/clerksync/clerksync/internal/clerkapi/clerkapitest"
	"github.com/clerksync/clerksync/internal/event"
	"github.com/clerksync/clerksync/internal/event/eventtest"
	"github.com/clerksync/clerksync/internal/postgres/dbsqlc"
	"github.com/clerksync/clerksync/internal/postgres/postgrestest"
	"github.com/clerksync/clerksync/internal/session"
	"github.com/clerksync/clerksync/internal/worker"
)

// testSecretKey is the fake Backend API's key: it must never reach a log.
const testSecretKey = "sk_test_jitSECRETnever1nLogs0000000000000000"

// jitSetup turns just-in-time sync on in setup, against a NATS server and a fake Backend API.
type jitSetup struct {
	natsURL, apiURL string
	rate            float64
	wait            time.Duration
	j               *jit
}

func (s *jitSetup) start(t testing.TB, logger *slog.Logger, reg prometheus.Registerer, q *dbsqlc.Queries) *jit {
	t.Helper()
	nc, err := connectNATS(s.natsURL, logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	j, err := newJIT(jitDeps{logger: logger, queries: q, nc: nc, registry: reg,
		apiURL: s.apiURL, key: testSecretKey, rate: s.rate, wait: s.wait})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(j.close)
	s.j = j
	return j
}

// jitStack is an api with just-in-time sync on: a fresh database, an embedded NATS server with
// the stream, a fake Backend API and, when asked, a running worker.
type jitStack struct {
	*bundle
	clerk  *clerkapitest.Server
	nats   *eventtest.Server
	stream jetstream.Stream
	jit    *jit
}

type jitOptions struct {
	wait   time.Duration // default 3s (JIT_WAIT's default)
	rate   float64       // default 10
	worker bool
}

func setupJIT(t testing.TB, o jitOptions) *jitStack {
	t.Helper()
	if o.wait == 0 {
		o.wait = 3 * time.Second
	}
	if o.rate == 0 {
		o.rate = 10
	}
	ns := eventtest.NewServer(t)
	_, js := eventtest.Connect(t, ns.URL())
	stream, err := js.Stream(t.Context(), event.Stream)
	if err != nil {
		t.Fatal(err)
	}
	clerk := clerkapitest.New(t, testSecretKey)
	dbURL := postgrestest.NewDatabase(t)
	if o.worker {
		startWorker(t, ns.URL(), dbURL)
	}
	js2 := &jitSetup{natsURL: ns.URL(), apiURL: clerk.URL, rate: o.rate, wait: o.wait}
	b := setup(t, func(c *setupConfig) { c.databaseURL, c.jit = dbURL, js2 })
	return &jitStack{bundle: b, clerk: clerk, nats: ns, stream: stream, jit: js2.j}
}

// startWorker runs the worker on the database and NATS server until the test ends.
func startWorker(t testing.TB, natsURL, dbURL string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- worker.Run(ctx, worker.Config{
			NATSURL: natsURL, DatabaseURL: dbURL, Consumer: "clerk-users", BatchSize: 256, Parallelism: 2,
			MaxAttempts: 20, AckWait: 30 * time.Second, FetchWait: 100 * time.Millisecond,
			RetryDelay: time.Second, RetryMaxDelay: time.Minute, NoMigrate: true,
		}, slog.New(slog.DiscardHandler), ln)
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("worker: %v", err)
		}
	})
	poll(t, func() bool {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+ln.Addr().String()+"/readyz", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

// putUser gives the fake Backend API a user no webhook announced.
func (s *jitStack) putUser(t testing.TB, id string) json.RawMessage {
	t.Helper()
	now := time.Now().UnixMilli()
	raw := clerkapitest.NewUser(id, now-1000, now, "Grace")
	if err := s.clerk.Put(raw); err != nil {
		t.Fatal(err)
	}
	return raw
}

// snapshots counts the user.snapshot messages in the stream.
func (s *jitStack) snapshots(t testing.TB) uint64 {
	t.Helper()
	info, err := s.stream.Info(t.Context(), jetstream.WithSubjectFilter(event.SubjectPrefix+"user.snapshot"))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Subjects[event.SubjectPrefix+"user.snapshot"]
}

func (s *jitStack) me(t testing.TB, sub string) *responseRecorder {
	t.Helper()
	rec, _ := s.do(t, request{bearer: s.issuer.Token(sub)})
	return &responseRecorder{rec.Code, rec.Header(), rec.Body.Bytes()}
}

type responseRecorder struct {
	status int
	header http.Header
	body   []byte
}

func (r *responseRecorder) code(t testing.TB) string {
	t.Helper()
	var e struct {
		Error struct{ Code string } `json:"error"`
	}
	if err := json.Unmarshal(r.body, &e); err != nil {
		t.Fatalf("body %s: %v", r.body, err)
	}
	return e.Error.Code
}

func (s *jitStack) noKeyInLogs(t testing.TB) {
	t.Helper()
	if strings.Contains(s.logs.String(), testSecretKey) {
		t.Error("the log holds CLERK_SECRET_KEY")
	}
}

// TestJITFirstRequest: the first request of a user only the Backend API knows is answered 200
// within JIT_WAIT, with the row the worker folded from the one snapshot the api published; the
// next request reads the row alone.
func TestJITFirstRequest(t *testing.T) {
	t.Parallel()
	s := setupJIT(t, jitOptions{worker: true})
	const id = "user_2jitfirst"
	s.putUser(t, id)

	start := time.Now()
	r := s.me(t, id)
	elapsed := time.Since(start)
	if r.status != http.StatusOK {
		t.Fatalf("first request: %d %s", r.status, r.body)
	}
	if elapsed > s.jit.budget {
		t.Errorf("answered in %s, over JIT_WAIT %s", elapsed, s.jit.budget)
	}
	var me meResponse
	if err := json.Unmarshal(r.body, &me); err != nil {
		t.Fatal(err)
	}
	if me.ClerkUserID != id || me.FirstName == nil || *me.FirstName != "Grace" || me.Email == nil || *me.Email != "user_2jitfirst@example.org" || me.Subscription.Tier != "free" {
		t.Errorf("me = %+v", me)
	}
	if n := s.snapshots(t); n != 1 {
		t.Errorf("%d snapshots in the stream, want 1", n)
	}
	if r := s.me(t, id); r.status != http.StatusOK {
		t.Errorf("second request: %d %s", r.status, r.body)
	}
	if n := s.clerk.Requests(); n != 1 {
		t.Errorf("%d Backend API requests, want 1", n)
	}
	m := s.jit.metrics
	if got := testutil.ToFloat64(m.requests.WithLabelValues("synced")); got != 1 {
		t.Errorf("jit requests synced = %v, want 1", got)
	}
	if got := testutil.ToFloat64(m.reads.WithLabelValues("ok")); got != 1 {
		t.Errorf("jit reads ok = %v, want 1", got)
	}
	if got := testutil.CollectAndCount(m.wait); got != 1 {
		t.Errorf("wait histogram series = %d, want 1", got)
	}
	s.noKeyInLogs(t)
}

// TestJITSingleFlight: 50 concurrent first requests of one user share one read and one publish.
func TestJITSingleFlight(t *testing.T) {
	t.Parallel()
	s := setupJIT(t, jitOptions{worker: true})
	const id = "user_2jitflight"
	s.putUser(t, id)
	s.clerk.SetLatency(50 * time.Millisecond)

	var wg sync.WaitGroup
	statuses := make([]int, 50)
	for i := range statuses {
		wg.Go(func() { statuses[i] = s.me(t, id).status })
	}
	wg.Wait()
	for i, st := range statuses {
		if st != http.StatusOK {
			t.Errorf("request %d: %d", i, st)
		}
	}
	if n := s.clerk.Requests(); n != 1 {
		t.Errorf("%d Backend API requests, want 1", n)
	}
	if n := s.snapshots(t); n != 1 {
		t.Errorf("%d snapshots in the stream, want 1", n)
	}
	if got := testutil.ToFloat64(s.jit.metrics.publishes.WithLabelValues("stored")); got != 1 {
		t.Errorf("publishes stored = %v, want 1", got)
	}
}

// TestJITRateLimit: 500 distinct unknown users in one second get at most CLERK_API_RATE reads
// a second; every other request is answered user_not_synced at once, never queued.
func TestJITRateLimit(t *testing.T) {
	t.Parallel()
	const rate = 10
	// The longest budget: a request queued behind the limiter would wait seconds, not answer.
	s := setupJIT(t, jitOptions{rate: rate, wait: 10 * time.Second})
	const n = 500
	type answer struct {
		status  int
		code    string
		elapsed time.Duration
	}
	answers := make([]answer, n)
	tokens := make([]string, n)
	for i := range tokens {
		tokens[i] = s.issuer.Token(fmt.Sprintf("user_2jitrate%03d", i))
	}
	var wg sync.WaitGroup
	start := time.Now()
	for i := range n {
		// Spread over one second, as a sign-up storm would arrive.
		time.Sleep(time.Until(start.Add(time.Duration(i) * time.Second / n)))
		wg.Go(func() {
			t0 := time.Now()
			rec, _ := s.do(t, request{bearer: tokens[i]})
			r := &responseRecorder{rec.Code, rec.Header(), rec.Body.Bytes()}
			answers[i] = answer{r.status, r.code(t), time.Since(t0)}
		})
	}
	wg.Wait()
	burst := time.Since(start)

	reads := s.clerk.Requests()
	// Unknown to the Backend API, a read user is answered user_deleted; the others were not read.
	var deleted, notSynced int64
	var slowest time.Duration
	for i, a := range answers {
		switch {
		case a.status == http.StatusNotFound && a.code == "user_deleted":
			deleted++
		case a.status == http.StatusNotFound && a.code == "user_not_synced":
			notSynced++
			slowest = max(slowest, a.elapsed)
		default:
			t.Errorf("request %d: %d %s", i, a.status, a.code)
		}
	}
	// The limiter's own windows are exact (TestWindowLimiter); here the reads are counted where
	// they arrive, after a scheduling delay that a loaded machine stretches, so the bound is on
	// the whole burst: a token bucket starting full would allow rate more.
	limit := int64(rate * math.Ceil(burst.Seconds()))
	t.Logf("%d requests in %s: %d reads (limit %d; at most %d arrived within one second), %d answered user_not_synced, the slowest in %s",
		n, burst.Round(time.Millisecond), reads, limit, s.clerk.MaxInWindow(time.Second), notSynced, slowest.Round(time.Millisecond))
	if reads < 1 || reads > limit || deleted != reads {
		t.Errorf("%d reads, %d answered user_deleted: want 1 to %d, one answer per read", reads, deleted, limit)
	}
	if slowest > 2*time.Second {
		t.Errorf("a rate-limited request took %s: it must be answered at once", slowest)
	}
	if got := testutil.ToFloat64(s.jit.metrics.reads.WithLabelValues("rate_limited")); int64(got) != notSynced {
		t.Errorf("jit reads rate_limited = %v, want %d", got, notSynced)
	}
}

// TestWindowLimiter: at most n in any window, refused at once beyond it, fractional rates too.
func TestWindowLimiter(t *testing.T) {
	t.Parallel()
	t0 := time.Unix(1_000_000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	tests := []struct {
		rate  float64
		times []int // ms
		want  []bool
	}{
		{rate: 2, times: []int{0, 1, 2, 999, 1000, 1001, 1002}, want: []bool{true, true, false, false, true, true, false}},
		{rate: 0.5, times: []int{0, 1000, 1999, 2000}, want: []bool{true, false, false, true}},
		{rate: 10, times: []int{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 999, 1000}, want: []bool{true, true, true, true, true, true, true, true, true, true, false, false, true}},
	}
	for _, tt := range tests {
		l := newWindowLimiter(tt.rate)
		for i, ms := range tt.times {
			if got := l.allow(at(ms)); got != tt.want[i] {
				t.Errorf("rate %v: allow at %dms = %v, want %v", tt.rate, ms, got, tt.want[i])
			}
		}
		if got := l.rate(); got != tt.rate {
			t.Errorf("rate() = %v, want %v", got, tt.rate)
		}
	}
}

// TestJITFaults: what the caller gets when the Backend API, NATS or the worker fails.
func TestJITFaults(t *testing.T) {
	t.Parallel()
	const wait = time.Second
	tests := []struct {
		name       string
		worker     bool
		fault      func(*jitStack)
		status     int
		code       string
		retryAfter string
		minElapsed time.Duration // answered only once JIT_WAIT ran out
		waits      bool          // else answered before JIT_WAIT ran out
		snapshots  uint64
		read       string // the jit reads result counted
	}{
		{name: "clerk 404", worker: true, fault: func(s *jitStack) { s.clerk.Delete("user_2jitfault") },
			status: 404, code: "user_deleted", read: "not_found"},
		{name: "clerk 500", worker: true, fault: func(s *jitStack) {
			s.clerk.FailNext(clerkapitest.Fault{Status: 500}, clerkapitest.Fault{Status: 500})
		}, status: 404, code: "user_not_synced", retryAfter: "1", read: "error"},
		{name: "clerk 401", worker: true, fault: func(s *jitStack) { s.clerk.FailNext(clerkapitest.Fault{Status: 401}) },
			status: 404, code: "user_not_synced", retryAfter: "1", read: "error"},
		{name: "clerk hangs", worker: true, fault: func(s *jitStack) { s.clerk.FailNext(clerkapitest.Fault{Hang: true}) },
			status: 404, code: "user_not_synced", retryAfter: "1", minElapsed: wait, waits: true, read: "error"},
		{name: "nats stopped", worker: false, fault: func(s *jitStack) { s.nats.Shutdown() },
			status: 404, code: "user_not_synced", retryAfter: "1", read: "ok"},
		{name: "worker stopped", worker: false, fault: func(*jitStack) {},
			status: 404, code: "user_not_synced", retryAfter: "1", minElapsed: wait, waits: true, snapshots: 1, read: "ok"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := setupJIT(t, jitOptions{wait: wait, worker: tt.worker})
			const id = "user_2jitfault"
			s.putUser(t, id)
			tt.fault(s)
			start := time.Now()
			r := s.me(t, id)
			elapsed := time.Since(start)
			if r.status != tt.status || r.code(t) != tt.code || r.header.Get("Retry-After") != tt.retryAfter {
				t.Errorf("got %d %s Retry-After=%q, want %d %s Retry-After=%q", r.status, r.body, r.header.Get("Retry-After"), tt.status, tt.code, tt.retryAfter)
			}
			// The budget bounds the answer; the slack is a loaded machine's, not the code's.
			if elapsed < tt.minElapsed || elapsed > wait+3*time.Second {
				t.Errorf("answered in %s, want between %s and JIT_WAIT (%s) + 3s", elapsed, tt.minElapsed, wait)
			}
			if !tt.waits && elapsed >= wait {
				t.Errorf("answered in %s: a failure it can see must not wait out JIT_WAIT (%s)", elapsed, wait)
			}
			if got := testutil.ToFloat64(s.jit.metrics.reads.WithLabelValues(tt.read)); got != 1 {
				t.Errorf("jit reads %s = %v, want 1", tt.read, got)
			}
			if tt.name != "nats stopped" {
				if n := s.snapshots(t); n != tt.snapshots {
					t.Errorf("%d snapshots, want %d", n, tt.snapshots)
				}
			}
			s.noKeyInLogs(t)
		})
	}
}

// TestJITAttackTable: with just-in-time sync on, no refused token of the hostile-token table
// causes a Backend API read (no amplification), nor a database query.
func TestJITAttackTable(t *testing.T) {
	t.Parallel()
	// The verifier's clock is pinned, as in TestAttackTable.
	now := time.Now()
	ns := eventtest.NewServer(t)
	eventtest.Connect(t, ns.URL())
	clerk := clerkapitest.New(t, testSecretKey)
	b := setup(t, func(c *setupConfig) {
		c.session = func(o *session.Options) { o.Now, o.Leeway = func() time.Time { return now }, apitest.Leeway }
		c.jit = &jitSetup{natsURL: ns.URL(), apiURL: clerk.URL, rate: 1000, wait: time.Second}
	})
	table := apitest.Attacks(t, b.issuer, func() time.Time { return now })
	t.Run("rows", func(t *testing.T) {
		for _, a := range table.Attacks {
			if !a.Refused() {
				continue
			}
			t.Run(a.Name, func(t *testing.T) {
				t.Parallel()
				header := map[string]string{}
				for k, v := range a.Header() {
					header[k] = v[0]
				}
				rec, queries := b.do(t, request{header: header})
				wantError(t, rec, a.Status, a.Code)
				if queries != 0 {
					t.Errorf("a refused token ran %d database queries", queries)
				}
			})
		}
	})
	if n := clerk.Requests(); n != 0 {
		t.Errorf("refused tokens caused %d Backend API requests, want 0", n)
	}
	if strings.Contains(b.logs.String(), testSecretKey) {
		t.Error("the log holds CLERK_SECRET_KEY")
	}
}

// TestJITOffWithoutKey: without CLERK_SECRET_KEY nothing of just-in-time sync exists: no
// metrics, no NATS check, the old answer.
func TestJITOffWithoutKey(t *testing.T) {
	t.Parallel()
	b := setup(t)
	rec, _ := b.do(t, request{bearer: b.issuer.Token("user_2nojit")})
	wantError(t, rec, http.StatusNotFound, "user_not_synced")
	families, err := b.registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if strings.HasPrefix(f.GetName(), "clerksync_api_jit_") {
			t.Errorf("metric %s without just-in-time sync", f.GetName())
		}
	}
}
