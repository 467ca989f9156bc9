package loadgen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats-server/v2/server"

	"github.com/clerksync/clerksync/internal/api"
	"github.com/clerksync/clerksync/internal/clerkgen"
	"github.com/clerksync/clerksync/internal/ingest"
	"github.com/clerksync/clerksync/internal/natsembed"
	"github.com/clerksync/clerksync/internal/pgcluster"
	"github.com/clerksync/clerksync/internal/postgres"
	"github.com/clerksync/clerksync/internal/service"
	"github.com/clerksync/clerksync/internal/worker"
)

// StackOptions configures StartStack.
type StackOptions struct {
	// Dir holds the NATS stores and, when one is started, the private Postgres cluster. Required.
	Dir string
	// DatabaseURL names the Postgres server the stack creates its scratch database on (the
	// database in the URL is not touched). Empty: the local server at postgres.DefaultURL when it
	// answers, else a private cluster started under Dir.
	DatabaseURL string
	// Getenv supplies the services' tuning variables (WORKER_BATCH_SIZE, …); where the stack
	// puts NATS, Postgres, the secret and the key overrides it. Nil reads nothing.
	Getenv func(string) string
	// Logger receives the services' logs.
	Logger *slog.Logger
}

// Stack is clerksync running in this process on loopback, as the load generator's target: an
// embedded NATS server with sync_interval: always, a scratch database (dropped by Close),
// ingest and api at once, and the worker when StartWorker is called, so that a backlog can be
// built first and its drain measured.
type Stack struct {
	NATSURL     string
	DatabaseURL string // the scratch database
	IngestURL   string // the webhook endpoint
	APIURL      string // GET /auth/me
	WorkerURL   string // the worker's ops endpoints, once started
	Secret      string
	Minter      *Minter

	logger   *slog.Logger
	env      func(string) string
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	mu       sync.Mutex
	errs     []error
	cleanups []func() error // run in reverse by Close
}

// StartStack starts NATS, the scratch database, ingest and api, and waits until they are ready.
func StartStack(ctx context.Context, o StackOptions) (_ *Stack, err error) {
	if o.Dir == "" {
		return nil, errors.New("stack: Dir is required")
	}
	logger := o.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	getenv := o.Getenv
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	s := &Stack{logger: logger, Secret: clerkgen.NewSecret()}
	s.ctx, s.cancel = context.WithCancel(context.WithoutCancel(ctx))
	defer func() {
		if err != nil {
			_ = s.Close()
		}
	}()

	srv, err := StartNATS(filepath.Join(o.Dir, "nats"), true)
	if err != nil {
		return nil, err
	}
	s.cleanups = append(s.cleanups, func() error { srv.Shutdown(); srv.WaitForShutdown(); return nil })
	s.NATSURL = srv.ClientURL()

	admin, err := s.postgresServer(ctx, o.DatabaseURL, filepath.Join(o.Dir, "postgres"))
	if err != nil {
		return nil, err
	}
	if s.DatabaseURL, err = s.scratchDatabase(ctx, admin); err != nil {
		return nil, err
	}

	if s.Minter, err = NewMinter("https://clerk.loadgen.invalid", "http://localhost:3000"); err != nil {
		return nil, err
	}
	s.env = func(key string) string {
		switch key {
		case "NATS_URL":
			return s.NATSURL
		case "DATABASE_URL":
			return s.DatabaseURL
		case "CLERK_WEBHOOK_SECRET":
			return s.Secret
		case "CLERK_JWT_KEY":
			return s.Minter.PublicPEM()
		case "CLERK_JWKS_URL":
			return ""
		case "CLERK_ISSUER":
			return s.Minter.Issuer
		case "CLERK_AUTHORIZED_PARTIES":
			return s.Minter.AuthorizedParty
		}
		return getenv(key)
	}

	if s.IngestURL, err = s.StartIngest(ctx, s.NATSURL); err != nil {
		return nil, err
	}
	apiCfg, err := service.ParseEnv[api.Config](s.env)
	if err != nil {
		return nil, fmt.Errorf("api %w", err)
	}
	base, err := s.run(ctx, "api", func(ctx context.Context, ln net.Listener) error {
		return api.Run(ctx, apiCfg, logger.With("service", "api"), ln)
	})
	if err != nil {
		return nil, err
	}
	s.APIURL = base + "/auth/me"
	return s, nil
}

// StartIngest starts another ingest, publishing to the NATS server at natsURL, and returns its
// webhook endpoint.
func (s *Stack) StartIngest(ctx context.Context, natsURL string) (string, error) {
	cfg, err := service.ParseEnv[ingest.Config](s.env)
	if err != nil {
		return "", fmt.Errorf("ingest %w", err)
	}
	cfg.NATSURL = natsURL
	base, err := s.run(ctx, "ingest", func(ctx context.Context, ln net.Listener) error {
		return ingest.Run(ctx, cfg, s.logger.With("service", "ingest"), ln)
	})
	if err != nil {
		return "", err
	}
	return base + "/webhooks/clerk", nil
}

// StartWorker starts the worker and waits until it is ready.
func (s *Stack) StartWorker(ctx context.Context) error {
	cfg, err := service.ParseEnv[worker.Config](s.env)
	if err != nil {
		return fmt.Errorf("worker %w", err)
	}
	cfg.NoMigrate = true // the stack migrated the scratch database
	s.WorkerURL, err = s.run(ctx, "worker", func(ctx context.Context, ln net.Listener) error {
		return worker.Run(ctx, cfg, s.logger.With("service", "worker"), ln)
	})
	return err
}

// BuildWorker compiles cmd/worker into dir, for StartWorkerProcess, and returns its path.
func BuildWorker(ctx context.Context, dir string) (string, error) {
	bin := filepath.Join(dir, "worker")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/clerksync/clerksync/cmd/worker")
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building the worker: %w\n%s", err, out)
	}
	return bin, nil
}

// StartWorkerProcess runs the worker binary bin as a process of its own, so that its CPU time can
// be read apart from this process's (the load generator and NATS). started, when not nil, is
// called with the process id as soon as it runs; StartWorkerProcess then waits until the worker
// is ready. Close stops it with SIGTERM.
func (s *Stack) StartWorkerProcess(ctx context.Context, bin string, started func(pid int)) error {
	cfg, err := service.ParseEnv[worker.Config](s.env)
	if err != nil {
		return fmt.Errorf("worker %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		return err
	}
	cmd := exec.Command(bin, "--no-migrate") // the stack migrated the scratch database
	cmd.Env = []string{
		"NATS_URL=" + cfg.NATSURL, "DATABASE_URL=" + cfg.DatabaseURL, "WORKER_ADDR=" + addr,
		"WORKER_BATCH_SIZE=" + strconv.Itoa(cfg.BatchSize), "WORKER_PARALLELISM=" + strconv.Itoa(cfg.Parallelism),
		"LOG_LEVEL=warn", "LOG_FORMAT=json",
	}
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting the worker: %w", err)
	}
	if started != nil {
		started(cmd.Process.Pid)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	s.onClose(func() error {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		return nil
	})
	s.WorkerURL = "http://" + addr
	if err := waitReady(ctx, s.WorkerURL+"/readyz", exited); err != nil {
		return fmt.Errorf("worker: %w", err)
	}
	return nil
}

// run starts a service on a loopback port and waits for its /readyz.
func (s *Stack) run(ctx context.Context, name string, fn func(context.Context, net.Listener) error) (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("%s: listening: %w", name, err)
	}
	base := "http://" + ln.Addr().String()
	exited := make(chan struct{})
	s.wg.Go(func() {
		defer close(exited)
		if err := fn(s.ctx, ln); err != nil {
			s.mu.Lock()
			s.errs = append(s.errs, fmt.Errorf("%s: %w", name, err))
			s.mu.Unlock()
		}
	})
	if err := waitReady(ctx, base+"/readyz", exited); err != nil {
		return "", fmt.Errorf("%s: %w%s", name, err, s.failure())
	}
	return base, nil
}

func (s *Stack) failure() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.errs) == 0 {
		return ""
	}
	return " (" + errors.Join(s.errs...).Error() + ")"
}

// waitReady polls url until it answers 200, the service exits, or a minute passes.
func waitReady(ctx context.Context, url string, exited <-chan struct{}) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{Proxy: nil}}
	defer client.CloseIdleConnections()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := client.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("%s: %s", url, resp.Status)
		}
		select {
		case <-exited:
			return errors.New("exited before it was ready")
		case <-ctx.Done():
			return fmt.Errorf("not ready: %w", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Close stops the services, drops the scratch database, stops NATS and any private Postgres,
// and returns the first error a service failed with.
func (s *Stack) Close() error {
	s.cancel()
	s.wg.Wait()
	var errs []error
	for i := len(s.cleanups) - 1; i >= 0; i-- {
		if err := s.cleanups[i](); err != nil {
			errs = append(errs, err)
		}
	}
	s.cleanups = nil
	s.mu.Lock()
	errs = append(s.errs, errs...)
	s.mu.Unlock()
	return errors.Join(errs...)
}

// postgresServer returns a URL of the server's postgres database: o's server, else the local one,
// else a private cluster.
func (s *Stack) postgresServer(ctx context.Context, given, clusterDir string) (string, error) {
	if given != "" {
		return withDatabase(given, "postgres")
	}
	local, _ := withDatabase(postgres.DefaultURL, "postgres")
	pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if conn, err := pgx.Connect(pctx, local); err == nil {
		_ = conn.Close(pctx)
		return local, nil
	}
	s.logger.Info("no Postgres at the default URL: starting a private cluster", "dir", clusterDir)
	// As root, the cluster runs as the postgres user, who must reach it.
	if err := os.MkdirAll(filepath.Dir(clusterDir), 0o755); err != nil {
		return "", err
	}
	if err := os.Chmod(filepath.Dir(clusterDir), 0o755); err != nil {
		return "", err
	}
	c, err := pgcluster.Start(ctx, pgcluster.Options{DataDir: clusterDir})
	if err != nil {
		return "", fmt.Errorf("%w; or set DATABASE_URL to a Postgres server", err)
	}
	s.cleanups = append(s.cleanups, c.Stop)
	return c.URL("postgres"), nil
}

// scratchDatabase creates and migrates a database of its own, dropped by Close.
func (s *Stack) scratchDatabase(ctx context.Context, admin string) (string, error) {
	name := "clerksync_loadgen_" + strconv.FormatInt(time.Now().UnixNano(), 36)
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		return "", fmt.Errorf("connecting to postgres: %w", err)
	}
	defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }()
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", fmt.Errorf("creating the scratch database: %w", err)
	}
	s.cleanups = append(s.cleanups, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, admin)
		if err != nil {
			return fmt.Errorf("dropping the scratch database %s: %w", name, err)
		}
		defer func() { _ = conn.Close(ctx) }()
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			return fmt.Errorf("dropping the scratch database %s: %w", name, err)
		}
		return nil
	})
	dbURL, err := withDatabase(admin, name)
	if err != nil {
		return "", err
	}
	pool, err := postgres.Open(ctx, dbURL)
	if err != nil {
		return "", err
	}
	defer pool.Close()
	if err := postgres.Migrate(ctx, pool, s.logger.With("component", "migrate")); err != nil {
		return "", err
	}
	return dbURL, nil
}

// withDatabase returns the Postgres URL u naming database name instead.
func withDatabase(u, name string) (string, error) {
	parsed, err := url.Parse(u)
	if err != nil || (parsed.Scheme != "postgres" && parsed.Scheme != "postgresql") {
		return "", errors.New("database url: want a postgres:// URL")
	}
	parsed.Path = "/" + name
	parsed.RawPath = ""
	return parsed.String(), nil
}

// StartNATS starts an embedded NATS server with JetStream, its store in dir. syncAlways is what
// clerksync requires of every server (natsembed); false is NATS's default (flush every 2
// minutes), to measure what sync_interval: always costs.
func StartNATS(dir string, syncAlways bool) (*server.Server, error) {
	if syncAlways {
		return natsembed.Start(natsembed.Options{StoreDir: dir, Name: "clerksync-loadgen"})
	}
	s, err := server.NewServer(&server.Options{
		ServerName:             "clerksync-loadgen-default-sync",
		Host:                   "127.0.0.1",
		Port:                   server.RANDOM_PORT,
		JetStream:              true,
		StoreDir:               dir,
		NoSigs:                 true,
		NoLog:                  true,
		DisableJetStreamBanner: true,
		MaxPayload:             1 << 20,
	})
	if err != nil {
		return nil, fmt.Errorf("starting nats: %w", err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return nil, errors.New("starting nats: not ready within 10s")
	}
	return s, nil
}

// onClose runs fn when the stack closes, before what the stack started itself is stopped.
func (s *Stack) onClose(fn func() error) { s.cleanups = append(s.cleanups, fn) }
