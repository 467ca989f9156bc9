// Command loadgen measures clerksync against the raw limits of the machine it runs on: it loads
// ingest, the worker and the api, and the bare JetStream publish, Postgres upsert and token
// check underneath them, and reports each as a rate, latency percentiles and a ratio against
// its baseline from the same run. It only wires flags to internal/loadgen, where the work is.
package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/clerksync/clerksync/internal/devstack"
	"github.com/clerksync/clerksync/internal/event"
	"github.com/clerksync/clerksync/internal/loadgen"
	"github.com/clerksync/clerksync/internal/postgres"
	"github.com/clerksync/clerksync/internal/service"
)

const usage = `usage: loadgen <command> [flags]   (loadgen <command> -h lists a command's flags)

  all               start a stack in this process and run every stage and baseline below,
                    then print one table with the ratios against the baselines
  ingest            POST a realistic signed Clerk history to ingest
  baseline          publish the same bodies straight to JetStream: ingest's raw limit
  upsert-baseline   write the same users rows with a bare unnest upsert: the worker's raw limit
  e2e               ingest load, waiting until every accepted event is in processed_events
  api               GET /auth/me with valid tokens of synced users
  api-baseline      the same against a bare echo handler: RS256 check and one primary-key read
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		_, err := fmt.Fprint(stdout, usage)
		return err
	}
	cmd, args := args[0], args[1:]
	c := &command{name: cmd, getenv: getenv, stdout: stdout, stderr: stderr, fs: flag.NewFlagSet("loadgen "+cmd, flag.ContinueOnError)}
	c.fs.SetOutput(stderr)
	switch cmd {
	case "all":
		return c.all(ctx, args)
	case "ingest":
		return c.ingest(ctx, args)
	case "baseline":
		return c.baseline(ctx, args)
	case "upsert-baseline":
		return c.upsertBaseline(ctx, args)
	case "e2e":
		return c.e2e(ctx, args)
	case "api":
		return c.api(ctx, args, false)
	case "api-baseline":
		return c.api(ctx, args, true)
	default:
		return fmt.Errorf("unknown command %q (loadgen help)", cmd)
	}
}

type command struct {
	name           string
	getenv         func(string) string
	stdout, stderr io.Writer
	fs             *flag.FlagSet

	json    bool
	verbose bool
	timeout time.Duration
	seed    uint64
	pid     int
}

// parse adds the flags every command has and parses args.
func (c *command) parse(args []string, timeout time.Duration) error {
	c.fs.BoolVar(&c.json, "json", false, "write the report as JSON instead of a table")
	c.fs.BoolVar(&c.verbose, "v", false, "add each stage's note to the table: what it counts, how it ran")
	c.fs.DurationVar(&c.timeout, "timeout", timeout, "give up after this long")
	c.fs.Uint64Var(&c.seed, "seed", 0, "seed of the generated history (0: from the clock, so a rerun sends new svix-ids)")
	if c.name != "all" {
		c.fs.IntVar(&c.pid, "pid", 0, "pid of the service under test: its peak RSS (Linux VmHWM) is reported")
	}
	if err := c.fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return errHelp
		}
		return err
	}
	if c.fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", c.fs.Args())
	}
	return nil
}

var errHelp = errors.New("help shown")

// start bounds ctx by the timeout and starts the progress line on stderr.
func (c *command) start(ctx context.Context) (context.Context, *loadgen.Progress, func()) {
	ctx, cancel := context.WithTimeoutCause(ctx, c.timeout, fmt.Errorf("-timeout %s reached", c.timeout))
	p := &loadgen.Progress{}
	pctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { p.Run(pctx, c.stderr, isTerminal(c.stderr)); close(done) }()
	return ctx, p, func() { stop(); <-done; cancel() }
}

func (c *command) seedOr() uint64 {
	if c.seed != 0 {
		return c.seed
	}
	return uint64(time.Now().UnixNano()) //nolint:gosec // G115: a seed; any bit pattern will do
}

// report prints rep as a table or JSON on stdout.
func (c *command) report(rep loadgen.Report) error {
	if c.json {
		enc := json.NewEncoder(c.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	return rep.WriteTable(c.stdout, c.verbose)
}

// single reports one stage, and fails when it did.
func (c *command) single(r loadgen.Result, seed uint64) error {
	rep := loadgen.NewReport(seed)
	rep.Stages = []loadgen.Result{r}
	if c.pid > 0 {
		rss, err := loadgen.PeakRSS(c.pid)
		if err != nil {
			return err
		}
		rep.TargetPID, rep.TargetPeakRSS = c.pid, rss
	}
	if err := c.report(rep); err != nil {
		return err
	}
	if r.Failed() {
		return fmt.Errorf("%s: %d of %d operations succeeded%s", r.Stage, r.OK(), r.Attempts(), suffix(r.Error))
	}
	return nil
}

func suffix(s string) string {
	if s == "" {
		return ""
	}
	return ": " + s
}

func (c *command) all(ctx context.Context, args []string) error {
	d := loadgen.DefaultAllOptions()
	clients := c.fs.String("c", joinInts(d.Clients), "client counts of the publish and ingest stages, comma-separated")
	batch := c.fs.Int("batch", d.Batch, "size of the atomic batches of the extra publish baseline under sync always (0: none)")
	upsertP := c.fs.String("upsert-p", joinInts(d.UpsertParallel), "parallelisms of the upsert baseline, comma-separated")
	n := c.fs.Int("n", d.N, "webhooks per publish and ingest stage")
	syncMode := c.fs.String("sync", d.Sync, "NATS flush policy to measure ingest under: always, default or both")
	workerP := c.fs.Int("worker-parallelism", 0, "the worker's WORKER_PARALLELISM, at which the upsert baseline runs too (0: the environment's, else the worker's default)")
	e2eRate := c.fs.Float64("e2e-rate", d.E2ERate, "webhooks per second offered in the paced end-to-end stage")
	e2eDur := c.fs.Duration("e2e-d", d.E2EDuration, "length of the paced end-to-end stage")
	apiC := c.fs.Int("api-c", d.APIClients, "clients of the api stages")
	apiDur := c.fs.Duration("api-d", d.APIDuration, "length of each api stage")
	dbURL := c.fs.String("database-url", c.getenv("DATABASE_URL"), "Postgres server to create the scratch database on (default: the local server, else a private cluster)")
	logLevel := c.fs.String("log-level", "warn", "level of the services' logs (on stderr)")
	profileDir := c.fs.String("profile", "", "write a CPU profile of each measured stage (the whole process: load, services, NATS) into this directory")
	if err := c.parse(args, 20*time.Minute); err != nil {
		return ignoreHelp(err)
	}
	o := d
	var err error
	if o.Clients, err = parseInts(*clients); err != nil {
		return fmt.Errorf("-c: %w", err)
	}
	if o.UpsertParallel, err = parseInts(*upsertP); err != nil {
		return fmt.Errorf("-upsert-p: %w", err)
	}
	o.N, o.Sync, o.WorkerParallel = *n, *syncMode, *workerP
	if o.Batch = *batch; o.Batch == 0 {
		o.Batch = -1
	}
	o.E2ERate, o.E2EDuration, o.APIClients, o.APIDuration = *e2eRate, *e2eDur, *apiC, *apiDur
	if bs := c.getenv("WORKER_BATCH_SIZE"); bs != "" {
		if o.BatchSize, err = strconv.Atoi(bs); err != nil {
			return fmt.Errorf("WORKER_BATCH_SIZE: %w", err)
		}
	}
	o.Seed = c.seed
	logger, err := service.NewLogger(c.stderr, service.Logging{Format: c.getenv("LOG_FORMAT"), Level: *logLevel})
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "clerksync-loadgen-")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(dir) }() // a temporary directory: best effort
	o.Stack = loadgen.StackOptions{Dir: dir, DatabaseURL: *dbURL, Getenv: c.getenv, Logger: logger}
	if o.ProfileDir = *profileDir; o.ProfileDir != "" {
		if err := os.MkdirAll(o.ProfileDir, 0o755); err != nil {
			return err
		}
	}

	ctx, p, stop := c.start(ctx)
	o.Progress = p
	rep, runErr := loadgen.All(ctx, o)
	stop()
	if err := c.report(rep); err != nil {
		return err
	}
	if runErr != nil {
		return runErr
	}
	for _, s := range rep.Stages {
		if s.Failed() {
			return fmt.Errorf("%s: %d of %d operations succeeded%s", s.Stage, s.OK(), s.Attempts(), suffix(s.Error))
		}
	}
	return nil
}

func (c *command) ingest(ctx context.Context, args []string) error {
	n := c.fs.Int("n", 10000, "webhooks to send")
	clients := c.fs.Int("c", 32, "concurrent keep-alive clients")
	rate := c.fs.Float64("rate", 0, "webhooks per second to offer (0: as fast as the clients go)")
	url := c.fs.String("url", "http://127.0.0.1:8080/webhooks/clerk", "ingest's webhook endpoint")
	secret := c.fs.String("secret", "", "webhook secret (default: the first of CLERK_WEBHOOK_SECRET; never printed)")
	if err := c.parse(args, 10*time.Minute); err != nil {
		return ignoreHelp(err)
	}
	// Read after the flags, not as their default: -h prints defaults, and a secret is never printed.
	*secret = cmp.Or(*secret, firstSecret(c.getenv("CLERK_WEBHOOK_SECRET")))
	if *secret == "" {
		return errors.New("no webhook secret: pass -secret or set CLERK_WEBHOOK_SECRET (go run ./cmd/dev prints the dev one)")
	}
	seed := c.seedOr()
	ctx, p, stop := c.start(ctx)
	r, err := loadgen.Ingest(ctx, fmt.Sprintf("ingest c=%d", *clients), loadgen.IngestOptions{
		URL: *url, Secret: *secret, Clients: *clients, Rate: *rate, Workload: loadgen.NewWorkload(seed, *n), Progress: p,
	})
	stop()
	if err != nil {
		return err
	}
	return c.single(r, seed)
}

func (c *command) baseline(ctx context.Context, args []string) error {
	n := c.fs.Int("n", 10000, "messages to publish")
	clients := c.fs.Int("c", 32, "concurrent synchronous publishers, on one connection")
	natsURL := c.fs.String("nats-url", or(c.getenv("NATS_URL"), "nats://127.0.0.1:4222"), "NATS server (a scratch stream configured like CLERK is created and deleted)")
	batch := c.fs.Int("batch", 0, "publish atomic batches of this many messages (from c/batch publishers) instead of one by one")
	if err := c.parse(args, 10*time.Minute); err != nil {
		return ignoreHelp(err)
	}
	stream, err := service.ParseEnv[event.StreamConfig](c.getenv)
	if err != nil {
		return err
	}
	seed := c.seedOr()
	ctx, p, stop := c.start(ctx)
	r, err := loadgen.Publish(ctx, fmt.Sprintf("publish c=%d", *clients), loadgen.PublishOptions{
		NATSURL: *natsURL, Clients: *clients, Batch: *batch, Workload: loadgen.NewWorkload(seed, *n), Stream: stream, Progress: p,
	})
	stop()
	if err != nil {
		return err
	}
	return c.single(r, seed)
}

func (c *command) upsertBaseline(ctx context.Context, args []string) error {
	n := c.fs.Int("n", 10000, "webhooks of history whose users rows are written")
	par := c.fs.Int("p", 1, "batches written at once, each on its own connection (the worker's parallelism)")
	batch := c.fs.Int("batch", or(atoi(c.getenv("WORKER_BATCH_SIZE")), 256), "events per batch (default: WORKER_BATCH_SIZE, else 256)")
	dbURL := c.fs.String("database-url", or(c.getenv("DATABASE_URL"), postgres.DefaultURL), "migrated database to create the scratch table in")
	if err := c.parse(args, 10*time.Minute); err != nil {
		return ignoreHelp(err)
	}
	seed := c.seedOr()
	ctx, p, stop := c.start(ctx)
	r, err := loadgen.Upsert(ctx, fmt.Sprintf("upsert baseline p=%d", *par), loadgen.UpsertOptions{
		DatabaseURL: *dbURL, Parallel: *par, BatchSize: *batch, Workloads: []loadgen.Workload{loadgen.NewWorkload(seed, *n)}, Progress: p,
	})
	stop()
	if err != nil {
		return err
	}
	return c.single(r, seed)
}

func (c *command) e2e(ctx context.Context, args []string) error {
	n := c.fs.Int("n", 5000, "webhooks to send")
	clients := c.fs.Int("c", 32, "concurrent keep-alive clients")
	rate := c.fs.Float64("rate", 500, "webhooks per second to offer (0: as fast as the clients go)")
	url := c.fs.String("url", "http://127.0.0.1:8080/webhooks/clerk", "ingest's webhook endpoint")
	secret := c.fs.String("secret", "", "webhook secret (default: the first of CLERK_WEBHOOK_SECRET; never printed)")
	dbURL := c.fs.String("database-url", or(c.getenv("DATABASE_URL"), postgres.DefaultURL), "the worker's database, where processed_events is watched")
	wait := c.fs.Duration("wait", 2*time.Minute, "how long to wait for the worker after the last webhook")
	if err := c.parse(args, 10*time.Minute); err != nil {
		return ignoreHelp(err)
	}
	// Read after the flags, not as their default: -h prints defaults, and a secret is never printed.
	*secret = cmp.Or(*secret, firstSecret(c.getenv("CLERK_WEBHOOK_SECRET")))
	if *secret == "" {
		return errors.New("no webhook secret: pass -secret or set CLERK_WEBHOOK_SECRET (go run ./cmd/dev prints the dev one)")
	}
	seed := c.seedOr()
	ctx, p, stop := c.start(ctx)
	r, err := loadgen.E2E(ctx, fmt.Sprintf("e2e c=%d", *clients), loadgen.E2EOptions{DatabaseURL: *dbURL, Timeout: *wait, Ingest: loadgen.IngestOptions{
		URL: *url, Secret: *secret, Clients: *clients, Rate: *rate, Workload: loadgen.NewWorkload(seed, *n), Progress: p,
	}})
	stop()
	if err != nil {
		return err
	}
	return c.single(r, seed)
}

func (c *command) api(ctx context.Context, args []string, baseline bool) error {
	dur := c.fs.Duration("d", 10*time.Second, "how long to run")
	clients := c.fs.Int("c", 32, "concurrent keep-alive clients")
	users := c.fs.Int("users", 1000, "synced users to take tokens for (one token each, reused)")
	dbURL := c.fs.String("database-url", or(c.getenv("DATABASE_URL"), postgres.DefaultURL), "database to find synced users in")
	var url, keyFile, kid, dev *string
	issuer := c.fs.String("issuer", c.getenv("CLERK_ISSUER"), "iss of the minted tokens")
	azp := c.fs.String("azp", firstSecret(c.getenv("CLERK_AUTHORIZED_PARTIES")), "azp of the minted tokens")
	if !baseline {
		url = c.fs.String("url", "http://127.0.0.1:8081/auth/me", "the api's /auth/me")
		keyFile = c.fs.String("key", "", "PEM private key to mint tokens with (the api must trust its public half)")
		kid = c.fs.String("kid", "", "kid of the minted tokens")
		dev = c.fs.String("dev", "", "mint tokens with the dev stack's key from this data directory (go run ./cmd/dev), instead of -key")
	}
	if err := c.parse(args, 10*time.Minute); err != nil {
		return ignoreHelp(err)
	}
	ctx, p, stop := c.start(ctx)
	defer stop()
	ids, err := loadgen.SyncedUsers(ctx, *dbURL, *users)
	if err != nil {
		return err
	}
	ttl := 2**dur + time.Minute
	var tokens []string
	var minter *loadgen.Minter
	switch {
	case baseline:
		if minter, err = loadgen.NewMinter(*issuer, *azp); err != nil {
			return err
		}
	case *dev != "":
		for _, id := range ids {
			t, _, err := devstack.Token(*dev, id, "", time.Now())
			if err != nil {
				return err
			}
			tokens = append(tokens, t)
		}
	case *keyFile != "":
		pemBytes, err := os.ReadFile(*keyFile)
		if err != nil {
			return err
		}
		if minter, err = loadgen.ParseMinterKey(pemBytes, *kid, *issuer, *azp); err != nil {
			return err
		}
	default:
		return errors.New("no way to mint tokens the api accepts: pass -dev DIR (the dev stack) or -key FILE")
	}
	if minter != nil {
		if tokens, err = minter.MintAll(ids, time.Now(), ttl); err != nil {
			return err
		}
	}
	stage, target := fmt.Sprintf("api /auth/me c=%d", *clients), ""
	if baseline {
		logger := slog.New(slog.NewTextHandler(c.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
		b, err := loadgen.StartAPIBaseline(ctx, *dbURL, &minter.Key.PublicKey, minter.Issuer, logger)
		if err != nil {
			return err
		}
		defer b.Close()
		stage, target = fmt.Sprintf("api baseline c=%d", *clients), b.URL
	} else {
		target = *url
	}
	r, err := loadgen.API(ctx, stage, loadgen.APIOptions{URL: target, Tokens: tokens, Clients: *clients, Duration: *dur, Progress: p})
	stop()
	if err != nil {
		return err
	}
	return c.single(r, 0)
}

func ignoreHelp(err error) error {
	if errors.Is(err, errHelp) {
		return nil
	}
	return err
}

func firstSecret(list string) string {
	first, _, _ := strings.Cut(list, ",")
	return strings.TrimSpace(first)
}

func or[T comparable](v, fallback T) T {
	var zero T
	if v == zero {
		return fallback
	}
	return v
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

func parseInts(s string) ([]int, error) {
	var out []int
	for part := range strings.SplitSeq(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(part))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q is not a positive integer", part)
		}
		out = append(out, n)
	}
	return out, nil
}

func joinInts(ns []int) string {
	parts := make([]string, len(ns))
	for i, n := range ns {
		parts[i] = strconv.Itoa(n)
	}
	return strings.Join(parts, ",")
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
