package loadgen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/clerksync/clerksync/internal/service"
	"github.com/clerksync/clerksync/internal/worker"
)

// AllOptions configures All. Zero fields take the defaults of DefaultAllOptions.
type AllOptions struct {
	// N is the number of webhooks of each publish and ingest stage, sent in Rounds rounds that
	// alternate publish and ingest.
	N      int
	Rounds int
	// Clients are the client counts the publish and ingest stages run at.
	Clients []int
	// Sync says which NATS flush policies to measure ingest under: "always" (what clerksync
	// runs), "default" (NATS's own, for comparison) or "both".
	Sync string
	// Batch > 1 adds, under sync always, a publish baseline in atomic batches of that size:
	// what grouping concurrent webhooks into one flush could give ingest. Negative: none.
	Batch int
	// UpsertParallel are the parallelisms of the upsert baseline. WorkerParallel is the worker's
	// WORKER_PARALLELISM (0: the environment's, else the worker's default); the upsert baseline
	// always runs at it too, since that is the one the worker's drain is compared with.
	UpsertParallel []int
	WorkerParallel int
	BatchSize      int // the worker's WORKER_BATCH_SIZE
	// The paced end-to-end stage offers E2ERate webhooks per second for E2EDuration.
	E2ERate     float64
	E2EDuration time.Duration
	E2EClients  int
	// The api stages run APIClients clients for APIDuration, with tokens of up to APIUsers users.
	APIClients  int
	APIDuration time.Duration
	APIUsers    int
	// Seed makes the workloads; 0 picks one from the clock (reported).
	Seed     uint64
	Stack    StackOptions
	Progress *Progress
	// ProfileDir, when set, receives a CPU profile of the whole process (load generator,
	// services, NATS) for each measured stage.
	ProfileDir string
}

// DefaultAllOptions is what `loadgen all` runs with no flags: a few minutes on a small machine.
func DefaultAllOptions() AllOptions {
	return AllOptions{
		N:              20000,
		Rounds:         4,
		Batch:          16,
		Clients:        []int{32, 64},
		Sync:           "both",
		UpsertParallel: []int{1},
		BatchSize:      256,
		E2ERate:        500,
		E2EDuration:    10 * time.Second,
		E2EClients:     32,
		APIClients:     32,
		APIDuration:    10 * time.Second,
		APIUsers:       1000,
	}
}

// All starts a stack in this process and runs, back to back against it: for each NATS flush
// policy and client count, the raw JetStream publish baseline and ingest; the raw upsert
// baseline on the rows those webhooks make; the worker draining that backlog; end to end at a
// paced rate and flat out; the bare api baseline and /auth/me. Each stage is bounded by its
// count or duration. It returns what it measured so far along with any error.
func All(ctx context.Context, o AllOptions) (rep Report, err error) {
	d := DefaultAllOptions()
	o.N, o.Rounds = or(o.N, d.N), or(o.Rounds, d.Rounds)
	if o.Batch < 0 {
		o.Batch = 0 // asked for none
	} else {
		o.Batch = or(o.Batch, d.Batch)
	}
	if len(o.Clients) == 0 {
		o.Clients = d.Clients
	}
	if len(o.UpsertParallel) == 0 {
		o.UpsertParallel = d.UpsertParallel
	}
	o.Sync = or(o.Sync, d.Sync)
	o.BatchSize = or(o.BatchSize, d.BatchSize)
	if o.WorkerParallel, o.Stack.Getenv, err = workerParallelism(o.WorkerParallel, o.Stack.Getenv); err != nil {
		return rep, err
	}
	if !slices.Contains(o.UpsertParallel, o.WorkerParallel) {
		o.UpsertParallel = append(slices.Clone(o.UpsertParallel), o.WorkerParallel)
	}
	o.E2ERate, o.E2EDuration, o.E2EClients = or(o.E2ERate, d.E2ERate), or(o.E2EDuration, d.E2EDuration), or(o.E2EClients, d.E2EClients)
	o.APIClients, o.APIDuration, o.APIUsers = or(o.APIClients, d.APIClients), or(o.APIDuration, d.APIDuration), or(o.APIUsers, d.APIUsers)
	o.Seed = or(o.Seed, seedNow())
	var modes []bool // sync always?
	switch o.Sync {
	case "always":
		modes = []bool{true}
	case "default":
		modes = []bool{false}
	case "both":
		modes = []bool{true, false}
	default:
		return rep, fmt.Errorf("sync %q: want always, default or both", o.Sync)
	}

	rep = NewReport(o.Seed)
	p := o.Progress
	defer func() { rep.Targets, rep.PeakRSS = targets(rep.Stages, o), peakRSS() }()
	// measure runs one measured stage (or one round of it), under a CPU profile of its own when
	// asked for; stage adds it to the report.
	measure := func(name, profile string, fn func(name string) (Result, error)) (Result, error) {
		stop, err := startProfile(o.ProfileDir, profile)
		if err != nil {
			return Result{}, err
		}
		r, err := fn(name)
		if err := errors.Join(err, stop()); err != nil {
			return Result{}, fmt.Errorf("%s: %w", name, err)
		}
		return r, nil
	}
	stage := func(name string, fn func(name string) (Result, error)) error {
		r, err := measure(name, name, fn)
		if err == nil {
			rep.Stages = append(rep.Stages, r)
		}
		return err
	}

	p.Stage("starting the stack", 0)
	st, err := StartStack(ctx, o.Stack)
	if err != nil {
		return rep, err
	}
	defer func() {
		if cerr := st.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("stack: %w", cerr)
		}
	}()

	seed := o.Seed
	nextWorkload := func(n int) Workload {
		seed++
		return NewWorkload(seed, n)
	}

	// Ingest against its raw limit, one after the other at each client count, so that drift on
	// a shared machine hits both alike. Under sync always, what ingest stores is the backlog the
	// worker drains below.
	var backlog []Workload
	var accepted atomic.Int64 // distinct events stored on the stack's NATS
	countAccepted := func(_ int, _ time.Time, duplicate bool) {
		if !duplicate {
			accepted.Add(1)
		}
	}
	for _, always := range modes {
		var warm []Workload
		natsURL, ingestURL, policy, onAccept := st.NATSURL, st.IngestURL, "sync always", countAccepted
		if !always {
			policy, onAccept = "default sync", nil
			srv, err := StartNATS(filepath.Join(o.Stack.Dir, "nats-default-sync"), false)
			if err != nil {
				return rep, err
			}
			st.onClose(func() error { srv.Shutdown(); srv.WaitForShutdown(); return nil })
			natsURL = srv.ClientURL()
			if ingestURL, err = st.StartIngest(ctx, natsURL); err != nil {
				return rep, err
			}
		}
		bare, err := StartBareHandler(ctx, natsURL, st.Secret)
		if err != nil {
			return rep, err
		}
		st.onClose(bare.Close)
		for _, c := range o.Clients {
			// Warm up, unmeasured: connections, the stream's first blocks, the code paths.
			if _, err := Publish(ctx, "warm-up", PublishOptions{NATSURL: natsURL, Clients: c, Workload: nextWorkload(warmup(c)), Progress: p}); err != nil {
				return rep, err
			}
			warm = append(warm, nextWorkload(warmup(c)))
			if _, err := Ingest(ctx, "warm-up", IngestOptions{URL: ingestURL, Secret: st.Secret, Clients: c, Workload: warm[len(warm)-1], Progress: p, Accepted: onAccept}); err != nil {
				return rep, err
			}
			if _, err := Ingest(ctx, "warm-up", IngestOptions{URL: bare.URL, Secret: st.Secret, Clients: c, Workload: nextWorkload(warmup(c)), Progress: p}); err != nil {
				return rep, err
			}
			// Rounds of publish then ingest, each on fresh webhooks, so that the disk's
			// fsync latency, which drifts by tens of percent within seconds on a shared
			// machine, weighs on both alike.
			var pubs, ins, bares, batched []Result
			// CPU of this process (the client, NATS and the handler under test) over the rounds.
			var ingestCPU, bareCPU cpuTimes
			for round := range o.Rounds {
				w := nextWorkload(max(o.N/o.Rounds, 1))
				if always {
					backlog = append(backlog, w)
				}
				suffix := fmt.Sprintf(" round %d", round+1)
				pub, err := measure(stageName("publish", policy, c), stageName("publish", policy, c)+suffix, func(name string) (Result, error) {
					return Publish(ctx, name, PublishOptions{NATSURL: natsURL, Clients: c, Workload: w, Progress: p})
				})
				if err != nil {
					return rep, err
				}
				if always && o.Batch > 1 {
					name := stageName(fmt.Sprintf("publish atomic batches of %d", o.Batch), policy, c)
					b, err := measure(name, name+suffix, func(name string) (Result, error) {
						return Publish(ctx, name, PublishOptions{NATSURL: natsURL, Clients: c, Batch: o.Batch, Workload: w, Progress: p})
					})
					if err != nil {
						return rep, err
					}
					batched = append(batched, b)
				}
				before := sampleCPU(0)
				in, err := measure(stageName("ingest", policy, c), stageName("ingest", policy, c)+suffix, func(name string) (Result, error) {
					return Ingest(ctx, name, IngestOptions{URL: ingestURL, Secret: st.Secret, Clients: c, Workload: w, Progress: p, Accepted: onAccept})
				})
				if err != nil {
					return rep, err
				}
				ingestCPU.add(before, sampleCPU(0))
				before = sampleCPU(0)
				// The same signed requests from the same client: only the handler differs.
				bh, err := measure(stageName("bare handler", policy, c), stageName("bare handler", policy, c)+suffix, func(name string) (Result, error) {
					return Ingest(ctx, name, IngestOptions{URL: bare.URL, Secret: st.Secret, Clients: c, Workload: w, Progress: p})
				})
				if err != nil {
					return rep, err
				}
				bareCPU.add(before, sampleCPU(0))
				pubs, ins, bares = append(pubs, pub), append(ins, in), append(bares, bh)
			}
			rep.Stages = append(rep.Stages, mergeRounds(pubs))
			if len(batched) > 0 {
				rep.Stages = append(rep.Stages, mergeRounds(batched))
			}
			in, bh := mergeRounds(ins), mergeRounds(bares)
			in.CPU, bh.CPU = cpuPerEvent(cpuTimes{}, ingestCPU, in.Count), cpuPerEvent(cpuTimes{}, bareCPU, bh.Count)
			bh.Note = "the same signed requests, from the same client, to a bare net/http handler: bounded read, one HMAC-SHA256 compared, publish with Nats-Msg-Id into a scratch stream, 200 after the PubAck"
			rep.Stages = append(rep.Stages, in, bh)
		}
		if always {
			backlog = append(backlog, warm...)
		}
	}

	// The worker against its raw limits, on the same events: the bare upsert (less than a worker
	// can do) and the raw fold (the least a correct worker does), then the worker itself, run as
	// a process of its own so that the CPU of each process can be read apart.
	for _, par := range o.UpsertParallel {
		if err := stage("upsert baseline p="+strconv.Itoa(par), func(name string) (Result, error) {
			before := sampleCPU(0)
			r, err := Upsert(ctx, name, UpsertOptions{DatabaseURL: st.DatabaseURL, Parallel: par, BatchSize: o.BatchSize, Workloads: backlog, Progress: p})
			r.CPU = cpuPerEvent(before, sampleCPU(0), r.Count)
			return r, err
		}); err != nil {
			return rep, err
		}
	}
	if len(backlog) > 0 {
		if err := stage("raw fold baseline p="+strconv.Itoa(o.WorkerParallel), func(name string) (Result, error) {
			before := sampleCPU(0)
			r, err := RawFold(ctx, name, RawFoldOptions{NATSURL: st.NATSURL, DatabaseURL: st.DatabaseURL,
				Parallel: o.WorkerParallel, BatchSize: o.BatchSize, Events: int(accepted.Load()), Progress: p})
			r.CPU = cpuPerEvent(before, sampleCPU(0), r.Count)
			return r, err
		}); err != nil {
			return rep, err
		}
		if err := stage("worker drain", func(name string) (Result, error) {
			return drainWorker(ctx, name, st, o.Stack.Dir, int(accepted.Load()), o.WorkerParallel, p)
		}); err != nil {
			return rep, err
		}
	} else if err := st.StartWorker(ctx); err != nil {
		return rep, err
	}

	// End to end: paced at the rate the lag target names, then flat out.
	if err := stage(fmt.Sprintf("e2e @%g/s", o.E2ERate), func(name string) (Result, error) {
		return E2E(ctx, name, E2EOptions{DatabaseURL: st.DatabaseURL, Ingest: IngestOptions{
			URL: st.IngestURL, Secret: st.Secret, Clients: o.E2EClients, Rate: o.E2ERate,
			Workload: nextWorkload(int(o.E2ERate * o.E2EDuration.Seconds())), Progress: p,
		}})
	}); err != nil {
		return rep, err
	}
	if err := stage("e2e flat out c="+strconv.Itoa(o.E2EClients), func(name string) (Result, error) {
		return E2E(ctx, name, E2EOptions{DatabaseURL: st.DatabaseURL, Ingest: IngestOptions{
			URL: st.IngestURL, Secret: st.Secret, Clients: o.E2EClients, Workload: nextWorkload(o.N), Progress: p,
		}})
	}); err != nil {
		return rep, err
	}

	// The api against its raw limit, with the same tokens: one per user, reused.
	users, err := SyncedUsers(ctx, st.DatabaseURL, o.APIUsers)
	if err != nil {
		return rep, err
	}
	tokens, err := st.Minter.MintAll(users, time.Now(), 2*o.APIDuration+time.Minute)
	if err != nil {
		return rep, err
	}
	base, err := StartAPIBaseline(ctx, st.DatabaseURL, &st.Minter.Key.PublicKey, st.Minter.Issuer, st.logger)
	if err != nil {
		return rep, err
	}
	defer base.Close()
	for _, target := range []struct{ name, url string }{
		{"api baseline c=" + strconv.Itoa(o.APIClients), base.URL},
		{"api /auth/me c=" + strconv.Itoa(o.APIClients), st.APIURL},
	} {
		ao := APIOptions{URL: target.url, Tokens: tokens, Clients: o.APIClients, Duration: min(apiWarmup, o.APIDuration), Progress: p}
		if _, err := API(ctx, "warm-up", ao); err != nil {
			return rep, err
		}
		ao.Duration = o.APIDuration
		if err := stage(target.name, func(name string) (Result, error) { return API(ctx, name, ao) }); err != nil {
			return rep, err
		}
	}
	p.Stage("stopping the stack", 0)
	return rep, nil
}

// workerParallelism returns the parallelism the worker will run with and the environment that
// gives it: par as WORKER_PARALLELISM when it is set, else whatever getenv (or the worker's
// default) says.
func workerParallelism(par int, getenv func(string) string) (int, func(string) string, error) {
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	if par > 0 {
		inner := getenv
		getenv = func(k string) string {
			if k == "WORKER_PARALLELISM" {
				return strconv.Itoa(par)
			}
			return inner(k)
		}
	}
	cfg, err := service.ParseEnv[worker.Config](getenv)
	if err != nil {
		return 0, nil, fmt.Errorf("worker %w", err)
	}
	return cfg.Parallelism, getenv, nil
}

// warmup is the number of unmeasured webhooks sent before a stage of c clients.
func warmup(c int) int { return 4 * c }

// apiWarmup is how long the api stages warm up, unmeasured.
const apiWarmup = time.Second

func stageName(what, policy string, clients int) string {
	return fmt.Sprintf("%s (%s) c=%d", what, policy, clients)
}

// drainWorker starts the worker on the backlog ingest left in the stream and measures how fast it
// empties it into processed_events. The clock starts before the worker does, so its start-up
// (connections, the consumer) counts against it.
func drainWorker(ctx context.Context, stage string, st *Stack, dir string, want, parallel int, p *Progress) (Result, error) {
	conn, err := pgx.Connect(ctx, st.DatabaseURL)
	if err != nil {
		return Result{}, fmt.Errorf("connecting to postgres: %w", err)
	}
	defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }()
	p.Stage("building the worker", 0)
	bin, err := BuildWorker(ctx, dir)
	if err != nil {
		return Result{}, err
	}
	// The clock runs from the start of the process, as it did for the worker in this process;
	// CPU is counted from the moment it is ready, so that its start-up is not charged to events.
	p.Stage(stage, want)
	var pid int
	var atStart cpuTimes
	start := time.Now()
	if err := st.StartWorkerProcess(ctx, bin, func(p int) { pid, atStart = p, sampleCPU(p) }); err != nil {
		return Result{}, err
	}
	before := sampleCPU(pid)
	var ready int64
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM processed_events").Scan(&ready); err != nil {
		return Result{}, fmt.Errorf("counting processed_events: %w", err)
	}
	deadline := time.Now().Add(5 * time.Minute)
	for {
		var n int64
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM processed_events").Scan(&n); err != nil {
			return Result{}, fmt.Errorf("counting processed_events: %w", err)
		}
		p.set(n)
		r := Result{Stage: stage, Count: int(n), Elapsed: time.Since(start), Statuses: map[string]int{"ok": int(n)},
			Note: fmt.Sprintf("the worker process applying a backlog of %d distinct events left by the ingest stages", want)}
		r.Rate = float64(n) / r.Elapsed.Seconds()
		if int(n) >= want {
			if int(ready) >= r.Count { // a backlog too small to outlast the start-up
				before, ready = atStart, 0
			}
			r.CPU = cpuPerEvent(before, sampleCPU(pid), r.Count-int(ready))
			if rss, err := PeakRSS(pid); err == nil {
				r.PeakRSS = rss
			}
			r.Note += workerBatches(ctx, st.WorkerURL, r.Elapsed, parallel)
			return r, nil
		}
		if time.Now().After(deadline) || !sleep(ctx, 20*time.Millisecond) {
			r.Error = fmt.Sprintf("%d of %d events applied when the wait ended", n, want)
			return r, nil
		}
	}
}

// workerBatches describes the worker's batches from its metrics, to tell time spent applying
// from time spent fetching; "" when the metrics do not say.
func workerBatches(ctx context.Context, workerURL string, elapsed time.Duration, parallel int) string {
	m, err := scrapeMetrics(ctx, workerURL+"/metrics")
	batches, events, apply := m["clerksync_worker_batch_size_count"], m["clerksync_worker_batch_size_sum"], m["clerksync_worker_apply_seconds_sum"]
	if err != nil || batches == 0 {
		return ""
	}
	return fmt.Sprintf("; %.0f batches of %.0f events on average, %.1f ms each from the transaction to the acks (the lanes busy %.0f%% of the drain)",
		batches, events/batches, apply/batches*1000, 100*apply/elapsed.Seconds()/float64(parallel))
}

// scrapeMetrics reads a Prometheus text endpoint into metric name → value, adding up the
// series of a name.
func scrapeMetrics(ctx context.Context, url string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil}}
	defer client.CloseIdleConnections()
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return nil, err
	}
	m := map[string]float64{}
	for line := range strings.Lines(string(b)) {
		if strings.HasPrefix(line, "#") {
			continue
		}
		// name[{labels}] value [timestamp]
		name := strings.TrimSpace(line[:strings.IndexAny(line+" ", "{ ")])
		rest := strings.TrimPrefix(line, name)
		if i := strings.LastIndexByte(rest, '}'); i >= 0 {
			rest = rest[i+1:]
		}
		fields := strings.Fields(rest)
		if name == "" || len(fields) == 0 {
			continue
		}
		if v, err := strconv.ParseFloat(fields[0], 64); err == nil {
			m[name] += v
		}
	}
	return m, nil
}

// startProfile starts a CPU profile into dir, named after the stage; with no dir it does nothing.
func startProfile(dir, stage string) (stop func() error, err error) {
	if dir == "" {
		return func() error { return nil }, nil
	}
	name := strings.Map(func(r rune) rune {
		if 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || r == '-' || r == '=' {
			return r
		}
		return '_'
	}, stage)
	f, err := os.Create(filepath.Join(dir, name+".pprof"))
	if err != nil {
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	return func() error {
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			return fmt.Errorf("cpu profile: %w", err)
		}
		return nil
	}, nil
}

func or[T comparable](v, fallback T) T {
	var zero T
	if v == zero {
		return fallback
	}
	return v
}
