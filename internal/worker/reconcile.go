package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/clerksync/clerksync/internal/clerkapi"
	"github.com/clerksync/clerksync/internal/event"
	"github.com/clerksync/clerksync/internal/postgres"
	"github.com/clerksync/clerksync/internal/postgres/dbsqlc"
)

// Reconcile (worker reconcile, and RECONCILE_INTERVAL) reads every object of Clerk's Backend API
// and appends a snapshot to the stream for each one that is new or newer than its row: the
// worker then folds it like any update, so backfilling users who signed up before clerksync and
// healing undelivered webhooks take the one path every event takes. It never writes a table
// itself, never publishes for a tombstoned row, and prunes (synthetic deletes) only after a
// complete sweep that would delete at most half of the live rows.

// Kinds reconcile sweeps, as --kinds names them.
const (
	KindUsers         = "users"
	KindOrganizations = "organizations"
	KindMemberships   = "memberships"
)

// AllKinds is what a sweep reconciles by default, in this order.
var AllKinds = []string{KindUsers, KindOrganizations, KindMemberships}

// reconcileLockKey is the Postgres advisory lock one sweep holds across every worker: a
// constant of our own (goose's migration lock uses another).
const reconcileLockKey int64 = 0x636c_6b72_7263_6e63 // "clkrrcnc"

// Errors callers branch on.
var (
	// ErrReconcileRunning: another sweep holds the advisory lock. Nothing was read or published.
	ErrReconcileRunning = errors.New("another reconcile sweep is running (it holds the Postgres advisory lock): nothing done; run it again once that one ends")
	// ErrPruneRefused: --prune published no delete (exit 2).
	ErrPruneRefused = errors.New("prune refused: no delete published")
	// errListingChanged: an offset-paged listing changed while it was read, so an object may have
	// been skipped: the sweep is incomplete.
	errListingChanged = errors.New("the Backend API's listing changed while it was read (total_count moved): an object may have been skipped; run the sweep again")
)

// ReconcileOptions say what a sweep does.
type ReconcileOptions struct {
	// DryRun reads and compares but publishes nothing.
	DryRun bool
	// Prune publishes a synthetic delete for each live row the complete sweep did not see.
	Prune bool
	// Kinds to sweep (default: AllKinds).
	Kinds []string
	// Progress receives a line every ProgressEvery (default 2s) and the summary; nil: none.
	Progress      io.Writer
	ProgressEvery time.Duration
}

// ParseKinds reads --kinds: a comma-separated list of kinds reconcile sweeps.
func ParseKinds(s string) ([]string, error) {
	var kinds []string
	for k := range strings.SplitSeq(s, ",") {
		switch k = strings.TrimSpace(k); k {
		case KindUsers, KindOrganizations, KindMemberships:
			if !slices.Contains(kinds, k) {
				kinds = append(kinds, k)
			}
		default:
			return nil, fmt.Errorf("--kinds %q: unknown kind (want users, organizations, memberships)", k)
		}
	}
	if len(kinds) == 0 {
		return nil, errors.New("--kinds: want at least one kind (users, organizations, memberships)")
	}
	return kinds, nil
}

// ReconcileSummary is what a sweep of one kind did.
type ReconcileSummary struct {
	Kind      string
	Complete  bool // every page was read
	Seen      int  // objects the Backend API listed
	Published int  // snapshots published (in a dry run: that would be)
	// Duplicates are published snapshots JetStream already had (a sweep run again before the
	// worker applied the last one's): harmless.
	Duplicates int
	Unchanged  int // rows already at the API's version, or newer
	Tombstoned int // listed, but the row is a tombstone: left alone
	Missing    int // live rows the sweep did not see
	Pruned     int // synthetic deletes published (in a dry run: that would be)
	Pages      int
	Requests   int64 // Backend API requests, retries included
	Retries    int64
	Took       time.Duration
}

func (s ReconcileSummary) logAttrs() []any {
	return []any{"kind", s.Kind, "complete", s.Complete, "seen", s.Seen, "published", s.Published,
		"duplicates", s.Duplicates, "unchanged", s.Unchanged, "tombstoned", s.Tombstoned,
		"missing", s.Missing, "pruned", s.Pruned, "pages", s.Pages, "requests", s.Requests,
		"retries", s.Retries, "took", s.Took.Round(time.Millisecond)}
}

// String is the summary line reconcile prints at the end.
func (s ReconcileSummary) String() string {
	state := "complete"
	if !s.Complete {
		state = "INCOMPLETE"
	}
	return fmt.Sprintf("reconcile %s: %s: seen %d, published %d, unchanged %d, missing %d, pruned %d (tombstoned %d, duplicates %d; %d pages, %d requests, %d retries, %s)",
		s.Kind, state, s.Seen, s.Published, s.Unchanged, s.Missing, s.Pruned, s.Tombstoned,
		s.Duplicates, s.Pages, s.Requests, s.Retries, s.Took.Round(time.Millisecond))
}

// Reconcile runs one sweep (worker reconcile) and returns a summary per kind. An error means the
// sweep did not complete (or, wrapping ErrPruneRefused, completed but pruned nothing);
// ErrReconcileRunning means another sweep holds the lock.
func Reconcile(ctx context.Context, cfg Config, opts ReconcileOptions, logger *slog.Logger) ([]ReconcileSummary, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if len(opts.Kinds) == 0 {
		opts.Kinds = AllKinds
	}
	api, err := newAPIClient(cfg, nil)
	if err != nil {
		return nil, err
	}
	pool, err := postgres.OpenConns(ctx, cfg.DatabaseURL, 2)
	if err != nil {
		return nil, err
	}
	defer pool.Close()
	nc, err := nats.Connect(cfg.NATSURL, nats.Name("clerksync-worker-reconcile"))
	if err != nil {
		return nil, fmt.Errorf("connecting to nats: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("opening jetstream: %w", err)
	}
	if err := ensureStream(ctx, js, cfg); err != nil {
		return nil, err
	}
	s := &sweeper{pool: pool, js: js, api: api, logger: logger}
	return s.sweep(ctx, opts)
}

// newAPIClient is the Backend API client of cfg; onError counts failed attempts.
func newAPIClient(cfg Config, onError func(string)) (*clerkapi.Client, error) {
	return clerkapi.New(clerkapi.Config{URL: cfg.ClerkAPIURL, SecretKey: cfg.ClerkSecretKey,
		Rate: cfg.ClerkAPIRate, OnError: onError})
}

// ensureStream opens the stream, creating it with cfg.Stream when it is missing (a reconcile
// run before any service started), as ensureConsumer does.
func ensureStream(ctx context.Context, js jetstream.JetStream, cfg Config) error {
	_, err := js.Stream(ctx, event.Stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		_, err = event.EnsureStream(ctx, js, cfg.Stream)
	}
	if err != nil {
		return fmt.Errorf("opening stream %s: %w", event.Stream, err)
	}
	return nil
}

// sweeper runs sweeps with its dependencies; metrics may be nil.
type sweeper struct {
	pool    *pgxpool.Pool
	js      jetstream.JetStream
	api     *clerkapi.Client
	logger  *slog.Logger
	metrics *reconcileMetrics
	// publishWindow is how many snapshots await their PubAck at once (default 256).
	publishWindow int
}

// sweep takes the advisory lock on a connection of its own, holds it for the whole sweep, and
// sweeps each kind in turn.
func (s *sweeper) sweep(ctx context.Context, opts ReconcileOptions) ([]ReconcileSummary, error) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("reconcile: %w", err)
	}
	defer conn.Release()
	lockQ := dbsqlc.New(conn)
	locked, err := lockQ.TryAdvisoryLock(ctx, reconcileLockKey)
	if err != nil {
		return nil, fmt.Errorf("reconcile: taking the advisory lock: %w", err)
	}
	if !locked {
		return nil, ErrReconcileRunning
	}
	defer func() {
		// The lock belongs to the connection: unlock it before the connection goes back to the
		// pool (were that to fail, closing the connection releases it).
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if ok, err := lockQ.AdvisoryUnlock(uctx, reconcileLockKey); err != nil || !ok {
			_ = conn.Conn().Close(uctx)
		}
	}()

	var sums []ReconcileSummary
	for _, kind := range opts.Kinds {
		k, err := s.kind(kind)
		if err != nil {
			return sums, err
		}
		sum, err := s.sweepKind(ctx, opts, k)
		sums = append(sums, sum)
		if err != nil {
			return sums, err
		}
	}
	return sums, nil
}

// objectVersion is what a sweep compares an object the Backend API listed against: its row's
// clerk_updated_at (NULL for a tombstone) and whether it is a tombstone.
type objectVersion struct {
	updatedAt pgtype.Timestamptz
	deleted   bool
}

// kindSweep is what differs between the kinds a sweep reconciles; the rules are sweepKind's.
type kindSweep struct {
	name      string // KindUsers, …
	eventKind string // event.KindUser, …: the snapshots' and synthetic deletes' type
	// list calls fn with every page of the kind's objects; complete is false when the listing
	// may have skipped one.
	list     func(ctx context.Context, fn func([]clerkapi.Object) error) (complete bool, err error)
	liveIDs  func(ctx context.Context, q *dbsqlc.Queries) ([]string, error)
	versions func(ctx context.Context, q *dbsqlc.Queries, ids []string) (map[string]objectVersion, error)
}

func (s *sweeper) kind(name string) (kindSweep, error) {
	switch name {
	case KindUsers:
		return kindSweep{
			name: KindUsers, eventKind: event.KindUser,
			list: func(ctx context.Context, fn func([]clerkapi.Object) error) (bool, error) {
				return true, s.api.ListUsers(ctx, fn)
			},
			liveIDs: func(ctx context.Context, q *dbsqlc.Queries) ([]string, error) { return q.LiveUserIDs(ctx) },
			versions: func(ctx context.Context, q *dbsqlc.Queries, ids []string) (map[string]objectVersion, error) {
				rows, err := q.UserVersions(ctx, ids)
				out := make(map[string]objectVersion, len(rows))
				for _, r := range rows {
					out[r.ClerkUserID] = objectVersion{r.ClerkUpdatedAt, r.DeletedAt.Valid}
				}
				return out, err
			},
		}, nil
	case KindOrganizations:
		return kindSweep{
			name: KindOrganizations, eventKind: event.KindOrganization,
			list:    s.api.ListOrganizations,
			liveIDs: func(ctx context.Context, q *dbsqlc.Queries) ([]string, error) { return q.LiveOrganizationIDs(ctx) },
			versions: func(ctx context.Context, q *dbsqlc.Queries, ids []string) (map[string]objectVersion, error) {
				rows, err := q.OrganizationVersions(ctx, ids)
				out := make(map[string]objectVersion, len(rows))
				for _, r := range rows {
					out[r.ClerkOrgID] = objectVersion{r.ClerkUpdatedAt, r.DeletedAt.Valid}
				}
				return out, err
			},
		}, nil
	case KindMemberships:
		return kindSweep{
			name: KindMemberships, eventKind: event.KindOrganizationMembership,
			list:    s.listMemberships,
			liveIDs: func(ctx context.Context, q *dbsqlc.Queries) ([]string, error) { return q.LiveMembershipIDs(ctx) },
			versions: func(ctx context.Context, q *dbsqlc.Queries, ids []string) (map[string]objectVersion, error) {
				rows, err := q.MembershipVersions(ctx, ids)
				out := make(map[string]objectVersion, len(rows))
				for _, r := range rows {
					out[r.ClerkMembershipID] = objectVersion{r.ClerkUpdatedAt, r.DeletedAt.Valid}
				}
				return out, err
			},
		}, nil
	}
	return kindSweep{}, fmt.Errorf("reconcile: unknown kind %q", name)
}

// listMemberships lists the memberships of every organization the Backend API lists, one
// organization at a time. An organization deleted since it was listed leaves the listing
// incomplete: its memberships might otherwise be taken for missing while Clerk is still deleting
// them.
func (s *sweeper) listMemberships(ctx context.Context, fn func([]clerkapi.Object) error) (bool, error) {
	complete := true
	orgsComplete, err := s.api.ListOrganizations(ctx, func(orgs []clerkapi.Object) error {
		for _, o := range orgs {
			ok, err := s.api.ListMemberships(ctx, o.ID, fn)
			switch {
			case errors.Is(err, clerkapi.ErrNotFound):
				complete = false
			case err != nil:
				return err
			case !ok:
				complete = false
			}
		}
		return nil
	})
	return complete && orgsComplete, err
}

// sweepKind sweeps the Backend API's objects of one kind: a snapshot for each one new or newer
// than its row, then, with Prune, a synthetic delete for each live row not seen.
func (s *sweeper) sweepKind(ctx context.Context, opts ReconcileOptions, k kindSweep) (sum ReconcileSummary, err error) {
	start := time.Now()
	before := s.api.Stats()
	sum.Kind = k.name
	q := dbsqlc.New(s.pool)
	progress := newProgress(opts, &sum, s.api, before, start)
	defer func() {
		st := s.api.Stats()
		sum.Requests, sum.Retries = st.Requests-before.Requests, st.Retries-before.Retries
		sum.Took = time.Since(start)
		progress.done()
		if err != nil {
			s.logger.Error("reconcile stopped", append(sum.logAttrs(), "dry_run", opts.DryRun, "err", err)...)
		} else {
			s.logger.Info("reconcile finished", append(sum.logAttrs(), "dry_run", opts.DryRun)...)
		}
		s.metrics.observe(sum, err)
	}()

	// The live rows before the first page: an object created later cannot be taken for missing.
	liveAtStart, err := k.liveIDs(ctx, q)
	if err != nil {
		return sum, fmt.Errorf("reconcile %s: reading the live rows: %w", k.name, err)
	}
	seen := make(map[string]struct{}, len(liveAtStart))
	pub := event.NewPublisher(s.js, cmpOr(s.publishWindow, 256), 30*time.Second)

	complete, listErr := k.list(ctx, func(page []clerkapi.Object) error {
		readAt := time.Now()
		sum.Pages++
		sum.Seen += len(page)
		ids := make([]string, len(page))
		for i, o := range page {
			ids[i] = o.ID
		}
		versions, err := k.versions(ctx, q, ids)
		if err != nil {
			return fmt.Errorf("reconcile %s: reading their rows: %w", k.name, err)
		}
		var batch []*nats.Msg
		for _, o := range page {
			seen[o.ID] = struct{}{}
			row, known := versions[o.ID]
			switch {
			case known && row.deleted:
				// Nothing resurrects a tombstone: a listing that still has the object is stale.
				sum.Tombstoned++
				continue
			case known && row.updatedAt.Valid && o.UpdatedAt <= row.updatedAt.Time.UnixMilli():
				// Equal: that version is applied. Older: a webhook newer than the listing won.
				sum.Unchanged++
				continue
			}
			sum.Published++
			if opts.DryRun {
				continue
			}
			msg, err := event.Snapshot(k.eventKind, o.ID, o.UpdatedAt, o.Raw, readAt)
			if err != nil {
				return fmt.Errorf("reconcile %s: %w", k.name, err)
			}
			batch = append(batch, msg)
		}
		if err := pub.PublishBatch(ctx, batch); err != nil {
			return err
		}
		progress.tick()
		return nil
	})
	if listErr == nil && !complete {
		listErr = errListingChanged
	}
	waitErr := pub.Wait(ctx)
	sum.Duplicates = pub.Duplicates
	if err := errors.Join(listErr, waitErr); err != nil {
		if opts.Prune {
			return sum, fmt.Errorf("%w: the sweep did not complete: %w", ErrPruneRefused, err)
		}
		return sum, err
	}
	sum.Complete = true

	var missing []string
	for _, id := range liveAtStart {
		if _, ok := seen[id]; !ok {
			missing = append(missing, id)
		}
	}
	sum.Missing = len(missing)
	if !opts.Prune || len(missing) == 0 {
		return sum, nil
	}
	if 2*len(missing) > len(liveAtStart) {
		return sum, fmt.Errorf("%w: %d of the %d live %s are missing from the Backend API: more than half, which looks like the wrong instance or key rather than deleted %s",
			ErrPruneRefused, len(missing), len(liveAtStart), k.name, k.name)
	}
	if opts.DryRun {
		sum.Pruned = len(missing)
		return sum, nil
	}
	now := time.Now()
	deletes := make([]*nats.Msg, len(missing))
	for i, id := range missing {
		if deletes[i], err = event.SyntheticDelete(k.eventKind, id, now); err != nil {
			return sum, fmt.Errorf("reconcile %s: %w", k.name, err)
		}
	}
	if err := pub.PublishBatch(ctx, deletes); err != nil {
		return sum, err
	}
	if err := pub.Wait(ctx); err != nil {
		return sum, err
	}
	sum.Pruned = len(missing)
	return sum, nil
}

func cmpOr(n, def int) int {
	if n > 0 {
		return n
	}
	return def
}

// progress writes a line every ProgressEvery while a sweep runs, and the summary at its end.
type progress struct {
	w      io.Writer
	every  time.Duration
	sum    *ReconcileSummary
	api    *clerkapi.Client
	before clerkapi.Stats
	start  time.Time
	last   time.Time
}

func newProgress(opts ReconcileOptions, sum *ReconcileSummary, api *clerkapi.Client, before clerkapi.Stats, start time.Time) *progress {
	return &progress{w: opts.Progress, every: cmpOrDuration(opts.ProgressEvery, 2*time.Second),
		sum: sum, api: api, before: before, start: start, last: start}
}

func cmpOrDuration(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

func (p *progress) tick() {
	if p.w == nil || time.Since(p.last) < p.every {
		return
	}
	p.last = time.Now()
	st := p.api.Stats()
	reqs := st.Requests - p.before.Requests
	elapsed := time.Since(p.start).Seconds()
	_, _ = fmt.Fprintf(p.w, "reconcile %s: read %d in %d pages, %.1f requests/s, %d retries, published %d\n",
		p.sum.Kind, p.sum.Seen, p.sum.Pages, float64(reqs)/elapsed, st.Retries-p.before.Retries, p.sum.Published)
}

func (p *progress) done() {
	if p.w != nil {
		_, _ = fmt.Fprintln(p.w, p.sum.String())
	}
}

// reconcileMetrics are the periodic sweep's series on the worker's /metrics.
type reconcileMetrics struct {
	lastSuccess prometheus.Gauge
	published   *prometheus.CounterVec
	sweeps      *prometheus.CounterVec
	apiErrors   *prometheus.CounterVec
}

func newReconcileMetrics(reg prometheus.Registerer) *reconcileMetrics {
	m := &reconcileMetrics{
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "clerksync_worker_reconcile_last_success_timestamp_seconds",
			Help: "When the last complete reconcile sweep ended (Unix time; 0 before the first).",
		}),
		published: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "clerksync_worker_reconcile_published_total",
			Help: "Snapshots reconcile sweeps published, by kind.",
		}, []string{"kind"}),
		sweeps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "clerksync_worker_reconcile_sweeps_total",
			Help: "Reconcile sweeps by result (complete, incomplete, locked: another worker was sweeping).",
		}, []string{"result"}),
		apiErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "clerksync_worker_clerk_api_errors_total",
			Help: "Failed Clerk Backend API attempts, by HTTP status (or network).",
		}, []string{"status"}),
	}
	reg.MustRegister(m.lastSuccess, m.published, m.sweeps, m.apiErrors)
	return m
}

func (m *reconcileMetrics) observe(sum ReconcileSummary, err error) {
	if m == nil {
		return
	}
	// New messages only: a snapshot JetStream already had is not counted twice.
	m.published.WithLabelValues(sum.Kind).Add(float64(sum.Published - sum.Duplicates))
	if sum.Complete && err == nil {
		m.sweeps.WithLabelValues("complete").Inc()
		m.lastSuccess.SetToCurrentTime()
	} else {
		m.sweeps.WithLabelValues("incomplete").Inc()
	}
}

func (m *reconcileMetrics) apiError(status string) {
	if m != nil {
		m.apiErrors.WithLabelValues(status).Inc()
	}
}

// reconcileEvery is the long-running worker's periodic sweep (RECONCILE_INTERVAL): every
// interval, one sweep of every kind under the same advisory lock, never pruning (pruning deletes,
// which an operator decides on). A failed sweep is logged and tried again at the next tick.
func reconcileEvery(ctx context.Context, cfg Config, js jetstream.JetStream, reg prometheus.Registerer, logger *slog.Logger) error {
	m := newReconcileMetrics(reg)
	api, err := newAPIClient(cfg, m.apiError)
	if err != nil {
		return err
	}
	log := logger.With("component", "reconcile")
	s := &sweeper{js: js, api: api, logger: log, metrics: m}
	defer func() {
		if s.pool != nil {
			s.pool.Close()
		}
	}()
	t := time.NewTicker(cfg.ReconcileInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if s.pool == nil {
			// A pool of its own, so a sweep never takes a connection from the lanes; opened at
			// the first tick, so that a Postgres outage delays the sweep, never the worker.
			pool, err := postgres.OpenConns(ctx, cfg.DatabaseURL, 2)
			if err != nil {
				m.sweeps.WithLabelValues("incomplete").Inc()
				log.Warn("reconcile: cannot reach Postgres; trying again at the next interval", "err", err)
				continue
			}
			s.pool = pool
		}
		_, err := s.sweep(ctx, ReconcileOptions{Kinds: AllKinds})
		switch {
		case errors.Is(err, ErrReconcileRunning):
			m.sweeps.WithLabelValues("locked").Inc()
			log.Info("reconcile skipped: another worker is sweeping")
		case err != nil && ctx.Err() == nil:
			log.Warn("reconcile sweep failed; trying again at the next interval", "err", err, "interval", cfg.ReconcileInterval)
		}
	}
}
