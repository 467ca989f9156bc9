// Package soak is the crash soak: it runs the built ingest, worker and api binaries against a
// NATS server process (sync_interval: always) and a private Postgres cluster, sends a seeded
// Clerk history as signed webhooks, retrying every non-2xx like Svix, while it SIGKILLs the
// worker, the ingest and NATS and crashes Postgres (an immediate shutdown) over and over. Then
// it checks the promises: every webhook eventually answered 2xx, none lost, none applied twice,
// the projection (and GET /auth/me) equal to the history's final state, nothing left pending.
// It is a test
// harness: the services must not import it, and it must never be pointed at real data.
package soak

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/clerksync/clerksync/internal/clerkgen"
	"github.com/clerksync/clerksync/internal/event"
	"github.com/clerksync/clerksync/internal/loadgen"
	"github.com/clerksync/clerksync/internal/pgcluster"
)

// Fault is how often one kind of fault strikes while the webhooks are sent: after a random
// wait between Min and Max, again and again, at most Count times (0: no limit). A zero Max
// turns it off.
type Fault struct {
	Min, Max time.Duration
	Count    int
}

// Config sizes a soak run.
type Config struct {
	Webhooks int    // about this many deliveries, resends included (the history is not cut)
	Users    int    // users of the history (0: Webhooks/10)
	Seed     uint64 // the history's seed
	// Duration spreads the deliveries evenly over this time, so that the faults strike
	// throughout (0: as fast as the senders go).
	Duration time.Duration
	Senders  int // concurrent deliveries (default 32)

	KillWorker, KillIngest, KillNATS, CrashPostgres Fault

	// Drain bounds the wait, after the last 2xx, for the worker to apply everything (default 2m).
	Drain time.Duration
	// WorkDir keeps the binaries, stores and logs (default: a temporary directory, removed
	// after a passing run).
	WorkDir string
	// Progress receives a line per phase and any differences found; nil discards them.
	Progress io.Writer
}

// DefaultConfig is `make soak`: 20,000 webhooks for 2,000 users over about 10 minutes.
func DefaultConfig() Config {
	return Config{
		Webhooks:      20000,
		Users:         2000,
		Seed:          1,
		Duration:      9 * time.Minute,
		Senders:       32,
		KillWorker:    Fault{Min: 5 * time.Second, Max: 10 * time.Second},
		KillIngest:    Fault{Min: 30 * time.Second, Max: 60 * time.Second},
		KillNATS:      Fault{Min: 60 * time.Second, Max: 120 * time.Second},
		CrashPostgres: Fault{Min: 110 * time.Second, Max: 130 * time.Second},
		Drain:         2 * time.Minute,
	}
}

// Result holds the figures a run is judged by.
type Result struct {
	Webhooks, Distinct int // deliveries sent, distinct svix-ids among them
	Accepted           int // deliveries eventually answered 2xx
	Retries            int // non-2xx answers and failed connections, each retried
	Status503          int
	Rejected           int // 4xx answers: never right for a valid, signed webhook

	Kills    map[string]int // faults dealt, by target
	Restarts map[string]int // service starts beyond the first (faults, and starts that failed)

	Lost          int // 2xx svix-ids missing from processed_events
	StreamMsgs    int // messages in the stream
	StoredTwice   int // stream messages beyond the distinct accepted svix-ids
	LedgerRows    int // processed_events rows
	AppliedTwice  int // ledger rows beyond distinct svix-ids, and ledger rows for ids never sent
	RowDiffs      map[string]int
	DeadLetters   int
	APIDiffs      int // users whose GET /auth/me disagrees with their final state
	Pending       int // the consumer's pending plus ack-pending messages at the end
	Elapsed       time.Duration
	DrainDuration time.Duration
}

// Err says why the run failed, or nil when every promise held.
func (r Result) Err() error {
	var errs []error
	check := func(ok bool, format string, args ...any) {
		if !ok {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}
	check(r.Accepted == r.Webhooks, "%d of %d webhooks never answered 2xx", r.Webhooks-r.Accepted, r.Webhooks)
	check(r.Rejected == 0, "%d 4xx answers to valid webhooks", r.Rejected)
	check(r.Lost == 0, "%d accepted webhooks lost", r.Lost)
	check(r.StoredTwice == 0, "%d webhooks stored twice in the stream", r.StoredTwice)
	check(r.AppliedTwice == 0, "%d ledger rows applied twice or unknown", r.AppliedTwice)
	for _, name := range tableNames {
		check(r.RowDiffs[name] == 0, "%d %s rows differ from the reference", r.RowDiffs[name], name)
	}
	check(r.DeadLetters == 0, "%d dead letters", r.DeadLetters)
	check(r.APIDiffs == 0, "%d users answered wrong by GET /auth/me", r.APIDiffs)
	check(r.Pending == 0, "%d messages still pending on the consumer", r.Pending)
	return errors.Join(errs...)
}

// String is the one-line summary.
func (r Result) String() string {
	verdict := "PASS"
	if r.Err() != nil {
		verdict = "FAIL"
	}
	diffs := 0
	for _, n := range r.RowDiffs {
		diffs += n
	}
	return fmt.Sprintf("soak %s: webhooks=%d distinct=%d 2xx=%d retries=%d (503=%d 4xx=%d) "+
		"kills: worker=%d ingest=%d nats=%d postgres=%d | lost=%d stored_twice=%d applied_twice=%d "+
		"row_diffs=%d (users=%d subscriptions=%d usage_metrics=%d) dead_letters=%d pending=%d api_diffs=%d | "+
		"stream=%d ledger=%d drain=%s elapsed=%s",
		verdict, r.Webhooks, r.Distinct, r.Accepted, r.Retries, r.Status503, r.Rejected,
		r.Kills["worker"], r.Kills["ingest"], r.Kills["nats"], r.Kills["postgres"],
		r.Lost, r.StoredTwice, r.AppliedTwice, diffs, r.RowDiffs["users"], r.RowDiffs["subscriptions"],
		r.RowDiffs["usage_metrics"], r.DeadLetters, r.Pending, r.APIDiffs, r.StreamMsgs, r.LedgerRows,
		r.DrainDuration.Round(time.Millisecond), r.Elapsed.Round(time.Second))
}

// Run builds the binaries, starts the system, soaks it and checks it. An error means the soak
// could not run (or was cancelled); a run that finds broken promises returns a Result whose
// Err says which.
func Run(ctx context.Context, cfg Config) (Result, error) {
	cfg = withDefaults(cfg)
	began := time.Now()
	out := cfg.Progress
	if out == nil {
		out = io.Discard
	}
	say := func(format string, args ...any) { _, _ = fmt.Fprintf(out, "soak: "+format+"\n", args...) }

	dir := cfg.WorkDir
	var err error
	if dir == "" {
		dir, err = os.MkdirTemp("", "clerksync-soak-")
	} else {
		err = os.MkdirAll(dir, 0o755)
	}
	if err != nil {
		return Result{}, fmt.Errorf("soak: %w", err)
	}
	// As root the cluster runs as postgres, which must reach its data directory.
	if err := os.Chmod(dir, 0o755); err != nil {
		return Result{}, fmt.Errorf("soak: %w", err)
	}
	say("working in %s", dir)

	bin := filepath.Join(dir, "bin")
	say("building ingest, worker, api and soak")
	if err := build(ctx, bin); err != nil {
		return Result{}, err
	}

	say("starting postgres, nats, ingest, worker and api")
	pg, err := startPostgres(ctx, filepath.Join(dir, "pg"))
	if err != nil {
		return Result{}, err
	}
	defer pg.stop()
	ports, err := freePorts(4)
	if err != nil {
		return Result{}, err
	}
	natsURL := "nats://127.0.0.1:" + strconv.Itoa(ports[0])
	ingestURL := "http://127.0.0.1:" + strconv.Itoa(ports[1])
	workerURL := "http://127.0.0.1:" + strconv.Itoa(ports[2])
	apiURL := "http://127.0.0.1:" + strconv.Itoa(ports[3])
	secret := clerkgen.NewSecret()
	minter, err := loadgen.NewMinter("", "")
	if err != nil {
		return Result{}, fmt.Errorf("soak: %w", err)
	}
	env := append(os.Environ(),
		"NATS_URL="+natsURL,
		"DATABASE_URL="+pg.url(),
		"INGEST_ADDR=127.0.0.1:"+strconv.Itoa(ports[1]),
		"WORKER_ADDR=127.0.0.1:"+strconv.Itoa(ports[2]),
		"API_ADDR=127.0.0.1:"+strconv.Itoa(ports[3]),
		"CLERK_JWT_KEY="+minter.PublicPEM(),
		"CLERK_WEBHOOK_SECRET="+secret,
		"PUBLISH_TIMEOUT=2s",
		"WORKER_ACK_WAIT=5s", // a killed worker's messages come back in 5 s, not 30
		"LOG_FORMAT=json",
	)
	logs, err := os.OpenFile(filepath.Join(dir, "services.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return Result{}, fmt.Errorf("soak: %w", err)
	}
	defer func() { _ = logs.Close() }()
	procs := map[string]*proc{
		"nats": {name: "nats", path: filepath.Join(bin, "soak"), env: env, log: logs,
			args: []string{"nats", "-store", filepath.Join(dir, "nats"), "-port", strconv.Itoa(ports[0])}},
		"ingest": {name: "ingest", path: filepath.Join(bin, "ingest"), env: env, log: logs},
		"worker": {name: "worker", path: filepath.Join(bin, "worker"), env: env, log: logs},
		"api":    {name: "api", path: filepath.Join(bin, "api"), env: env, log: logs},
	}

	svcCtx, stopServices := context.WithCancel(context.WithoutCancel(ctx))
	defer stopServices()
	var services errgroup.Group
	for _, name := range []string{"nats", "ingest", "worker", "api"} {
		p := procs[name]
		services.Go(func() error { return p.supervise(svcCtx) })
	}
	stopAll := func() error {
		stopServices()
		return services.Wait()
	}
	defer func() { _ = stopAll() }()
	for _, u := range []string{ingestURL + "/readyz", workerURL + "/readyz", apiURL + "/readyz"} {
		if err := waitOK(ctx, u, time.Minute); err != nil {
			return Result{}, err
		}
	}

	o := clerkgen.DefaultHistoryOptions(cfg.Seed, cfg.Users)
	o.ResendRatio = 0.1
	// About Webhooks/Users deliveries each: a create, updates, a delete for one in five, and a
	// tenth more resent.
	perUser := float64(cfg.Webhooks) / float64(cfg.Users) / (1 + o.ResendRatio)
	o.MaxUpdates = max(0, int(2*(perUser-1-o.DeleteRatio)+0.5))
	h := clerkgen.NewHistory(o)
	want, err := expected(h)
	if err != nil {
		return Result{}, err
	}
	res := Result{Webhooks: len(h.Events), Kills: map[string]int{}, Restarts: map[string]int{}}
	ids := map[string]bool{}
	for _, e := range h.Events {
		ids[e.ID] = true
	}
	res.Distinct = len(ids)
	say("sending %d webhooks (%d distinct) for %d users (seed %d) over %s; faults: worker %v, ingest %v, nats %v, postgres %v",
		res.Webhooks, res.Distinct, cfg.Users, cfg.Seed, cfg.Duration, cfg.KillWorker, cfg.KillIngest, cfg.KillNATS, cfg.CrashPostgres)

	// Faults strike while the webhooks are sent, and stop with the last 2xx.
	faultCtx, stopFaults := context.WithCancel(ctx)
	var faults errgroup.Group
	var killsMu sync.Mutex
	fault := func(name string, f Fault, seed uint64, do func() error) {
		faults.Go(func() error {
			n, err := strike(faultCtx, f, rand.New(rand.NewPCG(cfg.Seed, seed)), do)
			killsMu.Lock()
			res.Kills[name] = n
			killsMu.Unlock()
			if err != nil {
				say("%s fault: %v", name, err)
			}
			return err
		})
	}
	fault("worker", cfg.KillWorker, 1, func() error { procs["worker"].kill(); return nil })
	fault("ingest", cfg.KillIngest, 2, func() error { procs["ingest"].kill(); return nil })
	fault("nats", cfg.KillNATS, 3, func() error { procs["nats"].kill(); return nil })
	fault("postgres", cfg.CrashPostgres, 4, func() error { return pg.crash(ctx) })

	sent := send(ctx, h, cfg, ingestURL, secret)
	stopFaults()
	faultErr := faults.Wait()
	res.Accepted, res.Retries, res.Status503, res.Rejected = sent.accepted, sent.retries, sent.status503, sent.rejected
	say("sent: %d of %d answered 2xx after %d retries", res.Accepted, res.Webhooks, res.Retries)
	if err := ctx.Err(); err != nil {
		return res, fmt.Errorf("soak: %w", err)
	}
	if faultErr != nil {
		return res, faultErr
	}

	drained := time.Now()
	if err := measure(ctx, &res, cfg, natsURL, pg.url(), sent.ids, want, out); err != nil {
		return res, err
	}
	res.DrainDuration = time.Since(drained)
	if res.APIDiffs, err = checkAPI(ctx, apiURL, minter, h.Users, out); err != nil {
		return res, err
	}
	if err := stopAll(); err != nil {
		say("stopping the services: %v", err)
	}
	for name, p := range procs {
		res.Restarts[name] = int(p.starts.Load()) - 1
	}
	res.Elapsed = time.Since(began)
	if res.Err() == nil && cfg.WorkDir == "" {
		pg.stop()
		_ = os.RemoveAll(dir)
	} else {
		say("kept %s (services.log, pg/server.log)", dir)
	}
	return res, nil
}

func withDefaults(cfg Config) Config {
	d := DefaultConfig()
	if cfg.Webhooks <= 0 {
		cfg.Webhooks = d.Webhooks
	}
	if cfg.Users <= 0 {
		cfg.Users = max(1, cfg.Webhooks/10)
	}
	if cfg.Senders <= 0 {
		cfg.Senders = d.Senders
	}
	if cfg.Drain <= 0 {
		cfg.Drain = d.Drain
	}
	return cfg
}

// build compiles the binaries the soak runs, without the race detector (they are the
// system under test, run as it would be deployed).
func build(ctx context.Context, dir string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-o", dir+string(filepath.Separator),
		"github.com/clerksync/clerksync/cmd/ingest",
		"github.com/clerksync/clerksync/cmd/worker",
		"github.com/clerksync/clerksync/cmd/api",
		"github.com/clerksync/clerksync/cmd/soak")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("soak: building: %w\n%s", err, out)
	}
	return nil
}

// strike deals fault f until ctx ends.
func strike(ctx context.Context, f Fault, r *rand.Rand, do func() error) (int, error) {
	if f.Max <= 0 {
		return 0, nil
	}
	n := 0
	for f.Count == 0 || n < f.Count {
		wait := f.Min
		if f.Max > f.Min {
			wait += time.Duration(r.Int64N(int64(f.Max - f.Min)))
		}
		select {
		case <-ctx.Done():
			return n, nil
		case <-time.After(wait):
		}
		if err := do(); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// sent is what the generator saw.
type sent struct {
	accepted, retries, status503, rejected int
	ids                                    map[string]bool // svix-ids answered 2xx
}

// send delivers h's events in order, spread over cfg.Duration, each retried until it is
// answered 2xx as Svix does: same svix-id and body, a fresh timestamp and signature. A 4xx is
// retried a few times too, then given up on (it is a failure of the run).
func send(ctx context.Context, h clerkgen.History, cfg Config, ingestURL, secret string) sent {
	client := &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: cfg.Senders, IdleConnTimeout: 30 * time.Second},
	}
	defer client.CloseIdleConnections()
	var mu sync.Mutex
	s := sent{ids: map[string]bool{}}
	queue := make(chan clerkgen.Event)
	var wg sync.WaitGroup
	for range cfg.Senders {
		wg.Go(func() {
			for e := range queue {
				body := e.Body()
				rejections := 0
				for attempt := 0; ; attempt++ {
					resp, err := clerkgen.Post(ctx, client, ingestURL+"/webhooks/clerk", secret, e.ID, body)
					if err == nil && resp.StatusCode/100 == 2 {
						mu.Lock()
						s.accepted++
						s.ids[e.ID] = true
						mu.Unlock()
						break
					}
					mu.Lock()
					s.retries++
					if err == nil && resp.StatusCode == http.StatusServiceUnavailable {
						s.status503++
					}
					if err == nil && resp.StatusCode/100 == 4 {
						s.rejected++
						rejections++
					}
					mu.Unlock()
					if ctx.Err() != nil || rejections == 3 {
						break
					}
					select {
					case <-ctx.Done():
					case <-time.After(min(50*time.Millisecond<<min(attempt, 5), time.Second)):
					}
				}
			}
		})
	}
	start := time.Now()
	for i, e := range h.Events {
		if cfg.Duration > 0 {
			due := start.Add(cfg.Duration * time.Duration(i) / time.Duration(len(h.Events)))
			if d := time.Until(due); d > 0 {
				select {
				case <-ctx.Done():
				case <-time.After(d):
				}
			}
		}
		select {
		case <-ctx.Done():
		case queue <- e:
		}
		if ctx.Err() != nil {
			break
		}
	}
	close(queue)
	wg.Wait()
	return s
}

// measure waits for the worker to drain, then takes the figures.
func measure(ctx context.Context, res *Result, cfg Config, natsURL, dbURL string, accepted map[string]bool, want tables, out io.Writer) error {
	nc, err := nats.Connect(natsURL, nats.Name("clerksync-soak"), nats.RetryOnFailedConnect(true), nats.MaxReconnects(-1))
	if err != nil {
		return fmt.Errorf("soak: connecting to nats: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("soak: %w", err)
	}
	conn, err := connectPostgres(ctx, dbURL)
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }()

	// Drained: nothing pending on the consumer and a ledger row for every accepted id.
	deadline := time.Now().Add(cfg.Drain)
	for {
		pending, perr := consumerPending(ctx, js)
		var ledger int
		lerr := conn.QueryRow(ctx, "SELECT count(*) FROM processed_events").Scan(&ledger)
		res.Pending, res.LedgerRows = pending, ledger
		if perr == nil && lerr == nil && pending == 0 && ledger >= len(accepted) {
			break
		}
		if time.Now().After(deadline) {
			_, _ = fmt.Fprintf(out, "soak: not drained after %s: pending %d (%v), ledger %d of %d (%v)\n", cfg.Drain, pending, perr, ledger, len(accepted), lerr)
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("soak: %w", ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
	}

	info, err := js.Stream(ctx, event.Stream)
	if err != nil {
		return fmt.Errorf("soak: stream: %w", err)
	}
	res.StreamMsgs = int(info.CachedInfo().State.Msgs) //nolint:gosec // G115: the soak's own messages, tens of thousands
	res.StoredTwice = max(0, res.StreamMsgs-len(accepted))

	ledger := map[string]bool{}
	rows, err := conn.Query(ctx, "SELECT event_id FROM processed_events")
	if err != nil {
		return fmt.Errorf("soak: reading processed_events: %w", err)
	}
	rowCount := 0
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return fmt.Errorf("soak: reading processed_events: %w", err)
		}
		rowCount++
		if ledger[id] || !accepted[id] {
			res.AppliedTwice++
		}
		ledger[id] = true
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("soak: reading processed_events: %w", err)
	}
	res.LedgerRows = rowCount
	for id := range accepted {
		if !ledger[id] {
			res.Lost++
		}
	}
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM dead_letters").Scan(&res.DeadLetters); err != nil {
		return fmt.Errorf("soak: counting dead letters: %w", err)
	}
	got, err := actual(ctx, conn)
	if err != nil {
		return err
	}
	var examples []string
	res.RowDiffs, examples = diff(want, got, 5)
	for _, e := range examples {
		_, _ = fmt.Fprintln(out, "soak: difference:", e)
	}
	return nil
}

func consumerPending(ctx context.Context, js jetstream.JetStream) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := js.Consumer(ctx, event.Stream, "clerk-users")
	if err != nil {
		return -1, err
	}
	info, err := c.Info(ctx)
	if err != nil {
		return -1, err
	}
	return int(info.NumPending) + info.NumAckPending, nil //nolint:gosec // G115: at most the soak's own messages, tens of thousands
}

func connectPostgres(ctx context.Context, url string) (*pgx.Conn, error) {
	deadline := time.Now().Add(time.Minute)
	for {
		conn, err := pgx.Connect(ctx, url)
		if err == nil {
			return conn, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return nil, fmt.Errorf("soak: connecting to postgres: %w", err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// waitOK polls url until it answers 200.
func waitOK(ctx context.Context, url string, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return fmt.Errorf("soak: %w", err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("soak: %s not ready within %s (last: %v)", url, within, describe(resp, err))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("soak: %w", ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func describe(resp *http.Response, err error) string {
	if err != nil {
		return err.Error()
	}
	return resp.Status
}

// freePorts returns n loopback ports that were free a moment ago.
func freePorts(n int) ([]int, error) {
	var ports []int
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			_ = ln.Close()
		}
	}()
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("soak: %w", err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// postgres is the private cluster, crashed and restarted on the same port and data directory.
type postgres struct {
	mu   sync.Mutex
	opts pgcluster.Options
	c    *pgcluster.Cluster
}

func startPostgres(ctx context.Context, dataDir string) (*postgres, error) {
	// Durable, not Ephemeral: with synchronous_commit off, a crash of the server loses the
	// last commits, which the worker has rightly acknowledged by then.
	o := pgcluster.Options{DataDir: dataDir}
	c, err := pgcluster.Start(ctx, o)
	if err != nil {
		return nil, fmt.Errorf("soak: %w", err)
	}
	if err := c.EnsureDatabase(ctx, "clerksync"); err != nil {
		_ = c.Stop()
		return nil, fmt.Errorf("soak: %w", err)
	}
	o.Port = c.Port()
	return &postgres{opts: o, c: c}, nil
}

func (p *postgres) url() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.c.URL("clerksync")
}

// crash stops the server as `pg_ctl stop -m immediate` does and starts it again.
func (p *postgres) crash(ctx context.Context) error {
	if err := p.down(); err != nil {
		return err
	}
	return p.up(ctx)
}

// down stops the server as `pg_ctl stop -m immediate` does (SIGQUIT: no checkpoint, recovery
// at the next start).
func (p *postgres) down() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := syscall.Kill(p.c.PID(), syscall.SIGQUIT); err != nil {
		return fmt.Errorf("soak: crashing postgres: %w", err)
	}
	<-p.c.Done()
	return nil
}

// up starts the server again on the same port and data directory.
func (p *postgres) up(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	c, err := pgcluster.Start(context.WithoutCancel(ctx), p.opts)
	if err != nil {
		return fmt.Errorf("soak: restarting postgres: %w", err)
	}
	p.c = c
	if c.Port() != p.opts.Port {
		return fmt.Errorf("soak: postgres came back on port %d, not %d (taken meanwhile)", c.Port(), p.opts.Port)
	}
	return nil
}

func (p *postgres) stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	_ = p.c.Stop()
}

// String is a fault's schedule, for the progress line.
func (f Fault) String() string {
	if f.Max <= 0 {
		return "off"
	}
	s := fmt.Sprintf("every %s–%s", f.Min, f.Max)
	if f.Count > 0 {
		s += fmt.Sprintf(" (%d×)", f.Count)
	}
	return strings.ReplaceAll(s, "m0s", "m")
}

// checkAPI asks GET /auth/me, as each user, for every user of the history: a live user's
// email and Clerk updated_at, a deleted one's 404 user_deleted. It returns how many disagree.
func checkAPI(ctx context.Context, apiURL string, minter *loadgen.Minter, users []clerkgen.UserState, out io.Writer) (int, error) {
	client := &http.Client{Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	var mu sync.Mutex
	diffs := 0
	var g errgroup.Group
	g.SetLimit(8)
	for _, u := range users {
		g.Go(func() error {
			token, err := minter.Mint(u.User.ID, time.Now(), time.Hour)
			if err != nil {
				return fmt.Errorf("soak: %w", err)
			}
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, apiURL+"/auth/me", nil)
			if err != nil {
				return fmt.Errorf("soak: %w", err)
			}
			req.Header.Set("Authorization", "Bearer "+token)
			resp, err := client.Do(req)
			if err != nil {
				return fmt.Errorf("soak: GET /auth/me: %w", err)
			}
			defer func() { _ = resp.Body.Close() }()
			var body struct {
				Email     *string    `json:"email"`
				UpdatedAt *time.Time `json:"updated_at"`
				Error     struct{ Code string }
			}
			if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
				return fmt.Errorf("soak: GET /auth/me: %w", err)
			}
			var ok bool
			if u.Deleted {
				ok = resp.StatusCode == http.StatusNotFound && body.Error.Code == "user_deleted"
			} else {
				ok = resp.StatusCode == http.StatusOK && body.Email != nil && *body.Email == u.User.Email &&
					body.UpdatedAt != nil && body.UpdatedAt.Equal(u.User.UpdatedAt)
			}
			if !ok {
				mu.Lock()
				diffs++
				if diffs <= 5 {
					_, _ = fmt.Fprintf(out, "soak: GET /auth/me as %s (deleted %v): %d %+v\n", u.User.ID, u.Deleted, resp.StatusCode, body)
				}
				mu.Unlock()
			}
			return nil
		})
	}
	return diffs, g.Wait()
}
