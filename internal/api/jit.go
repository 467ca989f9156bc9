package api

// Just-in-time sync (DESIGN.md, API → Just-in-time sync), on when CLERK_SECRET_KEY is set: a
// valid token whose user has no row yet makes the api read the user from Clerk's Backend API,
// append it to the stream as a user.snapshot (through package event, as reconcile does) and wait
// up to JIT_WAIT for the worker to commit it. This closes the sign-up race: the frontend calls
// the api before Clerk's user.created webhook has arrived.
//
// The api still writes no table: the worker's fold decides, so the later webhook and any replay
// fold with the snapshot exactly once. What keeps it cheap and safe:
//   - it runs only after requireSession accepted the token: an invalid token never reaches
//     the Backend API;
//   - one flight per user: concurrent first requests share one read, one publish, one wait;
//   - at most CLERK_API_RATE reads in any second, checked without waiting: beyond it a request
//     gets the old 404 user_not_synced at once, never a queue;
//   - one shared poll loop (commitWatch) serves every waiter with one query per tick, and only
//     while someone waits.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"

	"github.com/clerksync/clerksync/internal/clerkapi"
	"github.com/clerksync/clerksync/internal/event"
	"github.com/clerksync/clerksync/internal/postgres/dbsqlc"
)

// jitPollInterval is how often the shared loop looks for the rows being waited for. It runs
// only while a request waits: one indexed lookup of every awaited id per tick.
const jitPollInterval = 10 * time.Millisecond

// jitOutcome is what a flight achieved for every request that shared it.
type jitOutcome int

const (
	jitSynced    jitOutcome = iota // the worker committed the user's row
	jitDeleted                     // the Backend API has no such user
	jitNotSynced                   // rate limited, Clerk or NATS failing, or the wait ran out
)

func (o jitOutcome) String() string {
	switch o {
	case jitSynced:
		return "synced"
	case jitDeleted:
		return "deleted"
	}
	return "not_synced"
}

// jitMetrics are just-in-time sync's series, registered only when it is on.
type jitMetrics struct {
	// reads counts Backend API reads by result: ok, not_found, error, and rate_limited for the
	// reads not made because CLERK_API_RATE was used up.
	reads *prometheus.CounterVec
	// publishes counts snapshot publishes by result: stored, duplicate, error.
	publishes *prometheus.CounterVec
	// wait is the time from the PubAck to the worker's commit being seen (committed), or to the
	// budget running out (timeout).
	wait *prometheus.HistogramVec
	// requests counts the requests answered through just-in-time sync, by outcome.
	requests *prometheus.CounterVec
	// polls counts the shared loop's queries.
	polls prometheus.Counter
}

func newJITMetrics(reg prometheus.Registerer) *jitMetrics {
	m := &jitMetrics{
		reads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "clerksync_api_jit_reads_total",
			Help: "Just-in-time Backend API reads (GET /v1/users/{id}), by result: ok, not_found, error, rate_limited (not sent: CLERK_API_RATE used up).",
		}, []string{"result"}),
		publishes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "clerksync_api_jit_publishes_total",
			Help: "Just-in-time user.snapshot publishes, by result: stored, duplicate, error.",
		}, []string{"result"}),
		wait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "clerksync_api_jit_wait_seconds",
			Help:    "Time from a just-in-time snapshot's PubAck until the worker's commit was seen (committed) or JIT_WAIT ran out (timeout).",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"result"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "clerksync_api_jit_requests_total",
			Help: "GET /auth/me requests for a user without a row that went through just-in-time sync, by outcome: synced (answered 200), deleted, not_synced.",
		}, []string{"outcome"}),
		polls: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "clerksync_api_jit_polls_total",
			Help: "Queries of the shared loop that waits for just-in-time snapshots to be committed (one per tick while any request waits).",
		}),
	}
	reg.MustRegister(m.reads, m.publishes, m.wait, m.requests, m.polls)
	for _, r := range []string{"ok", "not_found", "error", "rate_limited"} {
		m.reads.WithLabelValues(r)
	}
	for _, o := range []jitOutcome{jitSynced, jitDeleted, jitNotSynced} {
		m.requests.WithLabelValues(o.String())
	}
	return m
}

// jit syncs users just in time. Its methods are safe for concurrent use.
type jit struct {
	logger  *slog.Logger
	clerk   *clerkapi.Client
	js      jetstream.JetStream
	nc      *nats.Conn
	budget  time.Duration // JIT_WAIT: read, publish and wait together
	limit   *windowLimiter
	commits *commitWatch
	metrics *jitMetrics
	flights singleflight.Group

	// ctx ends the flights and the poll loop at shutdown.
	ctx    context.Context
	cancel context.CancelFunc
}

type jitDeps struct {
	logger   *slog.Logger
	queries  *dbsqlc.Queries
	nc       *nats.Conn
	registry prometheus.Registerer
	apiURL   string
	key      clerkapi.SecretKey
	rate     float64 // CLERK_API_RATE; 0 is the default, 10
	wait     time.Duration
}

// newJIT builds just-in-time sync; close releases it.
func newJIT(d jitDeps) (*jit, error) {
	if d.rate == 0 {
		d.rate = 10
	}
	if d.rate < 0 {
		return nil, fmt.Errorf("config: CLERK_API_RATE %v: want a positive number of requests per second", d.rate)
	}
	if d.wait <= 0 {
		return nil, fmt.Errorf("config: JIT_WAIT %s: want a positive duration", d.wait)
	}
	js, err := jetstream.New(d.nc)
	if err != nil {
		return nil, fmt.Errorf("opening jetstream: %w", err)
	}
	// A reader's request must never wait behind retries: the flight's context (JIT_WAIT) bounds
	// every attempt and back-off, and at most one retry fits. The client's own limiter is a
	// backstop at the same rate; the window limiter in front of it refuses, never queues.
	client, err := clerkapi.New(clerkapi.Config{
		URL: d.apiURL, SecretKey: d.key, Rate: d.rate,
		Timeout: d.wait, MaxAttempts: 2, Max429: 1,
		Backoff: 100 * time.Millisecond, MaxBackoff: 250 * time.Millisecond, MaxRetryAfter: d.wait,
	})
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	m := newJITMetrics(d.registry)
	ctx, cancel := context.WithCancel(context.Background())
	j := &jit{
		logger:  d.logger.With("component", "jit"),
		clerk:   client,
		js:      js,
		nc:      d.nc,
		budget:  d.wait,
		limit:   newWindowLimiter(d.rate),
		metrics: m,
		ctx:     ctx,
		cancel:  cancel,
	}
	j.commits = newCommitWatch(ctx, d.queries, jitPollInterval, m.polls, j.logger)
	return j, nil
}

// close ends the flights still running and the poll loop.
func (j *jit) close() { j.cancel() }

// ready is /readyz's NATS check: the api can publish snapshots.
func (j *jit) ready(context.Context) error {
	if !j.nc.IsConnected() {
		return fmt.Errorf("nats connection %s", j.nc.Status())
	}
	return nil
}

// sync brings the user clerkID into Postgres, sharing the flight of any concurrent request for
// the same user. nil means the row is there now; otherwise the answer to give: user_deleted or
// user_not_synced.
func (j *jit) sync(ctx context.Context, clerkID string) error {
	ch := j.flights.DoChan(clerkID, func() (any, error) { return j.flight(clerkID), nil })
	var outcome jitOutcome
	select {
	case r := <-ch:
		outcome, _ = r.Val.(jitOutcome)
	case <-ctx.Done(): // the caller left; the flight goes on for the others
		outcome = jitNotSynced
	}
	j.metrics.requests.WithLabelValues(outcome.String()).Inc()
	switch outcome {
	case jitSynced:
		return nil
	case jitDeleted:
		return errUserDeleted
	}
	return errUserNotSynced
}

// flight reads, publishes and waits for one user, within JIT_WAIT and independently of the
// request that started it (the others sharing it still wait).
func (j *jit) flight(clerkID string) jitOutcome {
	ctx, cancel := context.WithTimeout(j.ctx, j.budget)
	defer cancel()
	logger := j.logger.With("clerk_user_id", clerkID)

	// A request that found no row may start its flight just after another flight for the user
	// committed it: look once more before spending a read.
	if j.commits.present(ctx, clerkID) {
		return jitSynced
	}
	if !j.limit.allow(time.Now()) {
		j.metrics.reads.WithLabelValues("rate_limited").Inc()
		logger.Debug("just-in-time read skipped: CLERK_API_RATE used up")
		return jitNotSynced
	}
	u, err := j.clerk.GetUser(ctx, clerkID)
	switch {
	case errors.Is(err, clerkapi.ErrNotFound):
		j.metrics.reads.WithLabelValues("not_found").Inc()
		logger.Info("just-in-time read: the Backend API has no such user")
		return jitDeleted
	case err == nil && u.ID != clerkID:
		err = fmt.Errorf("getting user %s: the Backend API answered user %s", clerkID, u.ID)
	}
	if err != nil {
		j.metrics.reads.WithLabelValues("error").Inc()
		logger.Warn("just-in-time read failed", "err", err) // clerkapi's errors never hold the key
		return jitNotSynced
	}
	j.metrics.reads.WithLabelValues("ok").Inc()

	msg, err := event.Snapshot(event.KindUser, u.ID, u.UpdatedAt, u.Raw, time.Now())
	if err == nil {
		err = j.publish(ctx, msg)
	}
	if err != nil {
		j.metrics.publishes.WithLabelValues("error").Inc()
		logger.Warn("just-in-time snapshot not published", "err", err)
		return jitNotSynced
	}

	start := time.Now()
	err = j.commits.wait(ctx, clerkID)
	result := "committed"
	if err != nil {
		result = "timeout"
	}
	j.metrics.wait.WithLabelValues(result).Observe(time.Since(start).Seconds())
	if err != nil {
		logger.Warn("just-in-time snapshot published but not committed within JIT_WAIT: is the worker running?", "jit_wait", j.budget)
		return jitNotSynced
	}
	return jitSynced
}

// publish appends the snapshot and waits for its PubAck. A duplicate is an earlier read of the
// same version (a flight whose wait ran out): the worker will fold it all the same.
func (j *jit) publish(ctx context.Context, msg *nats.Msg) error {
	deadline, _ := ctx.Deadline()
	pub := event.NewPublisher(j.js, 1, time.Until(deadline))
	if err := pub.Publish(ctx, msg); err != nil {
		return err
	}
	if err := pub.Wait(ctx); err != nil {
		return err
	}
	result := "stored"
	if pub.Duplicates > 0 {
		result = "duplicate"
	}
	j.metrics.publishes.WithLabelValues(result).Inc()
	return nil
}

// windowLimiter allows at most n events in any span of time, where n/span is the rate (n =
// the rate rounded down, at least 1), and answers at once: a caller over the limit is refused,
// never queued. Unlike a token bucket, a full burst after an idle spell does not add to the
// refill, so "at most CLERK_API_RATE reads per second" holds for every one-second window.
type windowLimiter struct {
	mu    sync.Mutex
	span  time.Duration
	times []time.Time // the last n events allowed, a ring
	next  int         // the oldest of them
}

func newWindowLimiter(perSecond float64) *windowLimiter {
	n := max(1, int(perSecond))
	return &windowLimiter{
		span:  time.Duration(float64(n) / perSecond * float64(time.Second)),
		times: make([]time.Time, n),
	}
}

func (l *windowLimiter) allow(now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if oldest := l.times[l.next]; !oldest.IsZero() && now.Sub(oldest) < l.span {
		return false
	}
	l.times[l.next] = now
	l.next = (l.next + 1) % len(l.times)
	return true
}

// commitWatch waits for users' rows to appear: one loop, running only while somebody waits,
// asks Postgres for every awaited id at once each tick (UserVersions), and wakes the waiters of
// the ids it found. It is the shared alternative to each request polling on its own; LISTEN /
// NOTIFY would need the worker's statement to notify.
type commitWatch struct {
	ctx     context.Context
	queries *dbsqlc.Queries
	every   time.Duration
	polls   prometheus.Counter
	logger  *slog.Logger

	mu      sync.Mutex
	waiters map[string]*awaited
	running bool
}

type awaited struct {
	done chan struct{} // closed when the row was seen
	n    int           // waiters
}

func newCommitWatch(ctx context.Context, q *dbsqlc.Queries, every time.Duration, polls prometheus.Counter, logger *slog.Logger) *commitWatch {
	return &commitWatch{ctx: ctx, queries: q, every: every, polls: polls, logger: logger, waiters: map[string]*awaited{}}
}

// present reports whether the user's row is there now; an error reads as no.
func (w *commitWatch) present(ctx context.Context, clerkID string) bool {
	rows, err := w.queries.UserVersions(ctx, []string{clerkID})
	return err == nil && len(rows) > 0
}

// wait returns nil once the user's row has been seen, or ctx's error.
func (w *commitWatch) wait(ctx context.Context, clerkID string) error {
	w.mu.Lock()
	a := w.waiters[clerkID]
	if a == nil {
		a = &awaited{done: make(chan struct{})}
		w.waiters[clerkID] = a
	}
	a.n++
	if !w.running {
		w.running = true
		go w.loop()
	}
	w.mu.Unlock()
	defer func() {
		w.mu.Lock()
		a.n--
		if a.n == 0 && w.waiters[clerkID] == a {
			delete(w.waiters, clerkID)
		}
		w.mu.Unlock()
	}()
	select {
	case <-a.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// loop polls until nobody waits (or the api shuts down).
func (w *commitWatch) loop() {
	t := time.NewTicker(w.every)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-w.ctx.Done():
			w.mu.Lock()
			w.running = false
			w.mu.Unlock()
			return
		}
		w.mu.Lock()
		if len(w.waiters) == 0 {
			w.running = false
			w.mu.Unlock()
			return
		}
		ids := make([]string, 0, len(w.waiters))
		for id := range w.waiters {
			ids = append(ids, id)
		}
		w.mu.Unlock()

		ctx, cancel := context.WithTimeout(w.ctx, time.Second)
		rows, err := w.queries.UserVersions(ctx, ids)
		cancel()
		w.polls.Inc()
		if err != nil {
			// The waiters' own deadlines end them; the next tick tries again.
			w.logger.Debug("looking for just-in-time rows", "err", err)
			continue
		}
		w.mu.Lock()
		for _, r := range rows {
			if a := w.waiters[r.ClerkUserID]; a != nil {
				close(a.done)
				delete(w.waiters, r.ClerkUserID)
			}
		}
		w.mu.Unlock()
	}
}

// connectNATS opens the api's NATS connection, for snapshots only. Like ingest's, it never gives
// up reconnecting (the api starts, unready, while NATS is down) and buffers nothing while
// disconnected: a publish then fails at once and the request gets user_not_synced instead of
// waiting out its budget.
func connectNATS(url string, logger *slog.Logger) (*nats.Conn, error) {
	logger = logger.With("component", "nats")
	nc, err := nats.Connect(url,
		nats.Name("clerksync-api"),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		nats.ReconnectBufSize(-1),
		nats.ConnectHandler(func(nc *nats.Conn) { logger.Info("connected", "url", nc.ConnectedUrlRedacted()) }),
		nats.ReconnectHandler(func(nc *nats.Conn) { logger.Info("reconnected", "url", nc.ConnectedUrlRedacted()) }),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				logger.Warn("disconnected", "err", err)
			}
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { logger.Warn("nats error", "err", err) }),
	)
	if err != nil {
		return nil, fmt.Errorf("connecting to nats: %w", err)
	}
	return nc, nil
}

// rate is the limiter's rate, in events per second.
func (l *windowLimiter) rate() float64 { return float64(len(l.times)) / l.span.Seconds() }
