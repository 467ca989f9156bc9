// Package devstack runs the whole of clerksync in one process for a developer: an embedded NATS
// server, Postgres (DATABASE_URL, or a private cluster from the installed server binaries), the
// migrations, ingest, worker and api on their usual ports, and a JWKS endpoint standing in for
// the Clerk instance; and it plays Clerk against that stack (Send a signed webhook, mint a
// session Token). Its state (webhook secret, signing key, ports) lives in a data directory so a
// restart keeps data and keys. It is for development only: Postgres trusts every local
// connection and everything listens on loopback.
package devstack

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"golang.org/x/sync/errgroup"

	"github.com/clerksync/clerksync/internal/api"
	"github.com/clerksync/clerksync/internal/ingest"
	"github.com/clerksync/clerksync/internal/natsembed"
	"github.com/clerksync/clerksync/internal/pgcluster"
	"github.com/clerksync/clerksync/internal/postgres"
	"github.com/clerksync/clerksync/internal/service"
	"github.com/clerksync/clerksync/internal/worker"
)

// Usual ports of what the stack starts itself.
const (
	NATSPort     = 4222
	PostgresPort = 5432
)

// Database is the database the stack creates in its private cluster.
const Database = "clerksync"

// DefaultAuthorizedParty is the frontend origin dev tokens are minted for, and the api allows,
// unless CLERK_AUTHORIZED_PARTIES says otherwise.
const DefaultAuthorizedParty = "http://localhost:3000"

// Options configures Up.
type Options struct {
	// DataDir holds the state, the NATS store and the Postgres cluster (default ".data").
	DataDir string
	// NATSPort and PostgresPort are taken when free; 0, or taken, means any free port.
	NATSPort, PostgresPort int
	// Getenv reads the environment: NATS_URL and DATABASE_URL (use those instead of starting
	// NATS or Postgres), INGEST_ADDR, API_ADDR, WORKER_ADDR (default 127.0.0.1 and the usual
	// ports, or a free port when one is taken), and every variable of the three services.
	Getenv func(string) string
	// Stdout receives the banner; JSON says to write it as one JSON log line instead.
	Stdout io.Writer
	JSON   bool
}

// Up runs the stack until ctx ends, then stops everything it started, the Postgres cluster
// included, and returns nil. An error means a part failed to start or failed while running.
func Up(ctx context.Context, o Options, logger *slog.Logger) (err error) {
	dir := dataDir(o.DataDir)
	getenv := o.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	// 0755: as root the Postgres cluster runs as the postgres user, which must reach its data.
	// What is secret in it is 0600 or 0700.
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", dir, err)
	}
	unlock, err := lockDir(dir)
	if err != nil {
		return err
	}
	defer unlock()

	st, err := loadState(dir)
	if err != nil && !errors.Is(err, errNoState) {
		return err
	}
	if err := st.ensureSecrets(); err != nil {
		return err
	}
	st.ensureBackend(time.Now())

	natsURL, stopNATS, err := startNATS(dir, getenv("NATS_URL"), prefer(o.NATSPort, st.NATSPort), logger)
	if err != nil {
		return err
	}
	defer stopNATS()
	if getenv("NATS_URL") == "" {
		st.NATSPort = portOf(natsURL)
	}

	dbURL, pgData, stopPostgres, err := startPostgres(ctx, dir, getenv("DATABASE_URL"), prefer(o.PostgresPort, st.PostgresPort), logger)
	if err != nil {
		return err
	}
	defer func() {
		if stopErr := stopPostgres(); stopErr != nil && err == nil {
			err = stopErr
		}
	}()
	st.DatabaseURL = ""
	if getenv("DATABASE_URL") == "" {
		st.PostgresPort = portOf(dbURL)
		st.DatabaseURL = dbURL
	}
	if err := migrate(ctx, dbURL, logger); err != nil {
		return err
	}

	lns, err := listenAll(getenv, st.JWKSPort)
	if err != nil {
		return err
	}
	defer lns.close()
	st.IngestURL, st.APIURL, st.WorkerURL = httpURL(lns.ingest), httpURL(lns.api), httpURL(lns.worker)
	st.NATSURL = natsURL
	st.JWKSPort = lns.jwks.Addr().(*net.TCPAddr).Port
	st.Issuer = httpURL(lns.jwks)
	st.JWKSURL = st.Issuer + "/.well-known/jwks.json"
	parties := getenv("CLERK_AUTHORIZED_PARTIES")
	if parties == "" {
		parties = DefaultAuthorizedParty
	}
	st.AuthorizedParty = strings.TrimSpace(strings.Split(parties, ",")[0])
	if err := st.save(dir); err != nil {
		return err
	}

	// The services read the environment as they would in production, with what the dev stack
	// provides laid over it.
	secrets := st.WebhookSecret
	if own := getenv("CLERK_WEBHOOK_SECRET"); own != "" {
		secrets += "," + own // e.g. a real Clerk endpoint's, reaching the stack through a tunnel
	}
	env := overlay(getenv, map[string]string{
		"NATS_URL":                 natsURL,
		"DATABASE_URL":             dbURL,
		"CLERK_WEBHOOK_SECRET":     secrets,
		"CLERK_JWKS_URL":           st.JWKSURL,
		"CLERK_JWT_KEY":            "",
		"CLERK_ISSUER":             st.Issuer,
		"CLERK_AUTHORIZED_PARTIES": parties,
		"CORS_ALLOWED_ORIGINS":     or(getenv("CORS_ALLOWED_ORIGINS"), DefaultAuthorizedParty),
		// The dev Backend API: the api's just-in-time sync, and the worker's RECONCILE_INTERVAL.
		"CLERK_API_URL":    st.Issuer,
		"CLERK_SECRET_KEY": st.ClerkSecretKey,
	})
	ingestCfg, err := service.ParseEnv[ingest.Config](env)
	if err != nil {
		return fmt.Errorf("ingest %w", err)
	}
	workerCfg, err := service.ParseEnv[worker.Config](env)
	if err != nil {
		return fmt.Errorf("worker %w", err)
	}
	workerCfg.NoMigrate = true // done above
	apiCfg, err := service.ParseEnv[api.Config](env)
	if err != nil {
		return fmt.Errorf("api %w", err)
	}
	jwks, err := st.jwks()
	if err != nil {
		return err
	}

	backend := newBackendAPI(dir, st, logger.With("service", "clerk"))
	defer backend.fake.Close()

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		mux := http.NewServeMux()
		mux.HandleFunc("GET /.well-known/jwks.json", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(jwks)
		})
		mux.Handle("/v1/", backend)
		return service.Serve(gctx, service.NewServer(mux, logger), lns.jwks, logger.With("service", "clerk"))
	})
	// The JWKS listener is served from here on: the api may fetch it as it starts.
	g.Go(func() error {
		return named("worker", worker.Run(gctx, workerCfg, logger.With("service", "worker"), lns.worker))
	})
	g.Go(func() error {
		// Ingest starts once the worker has made the stream and its consumer: nats-server
		// 2.15.2 reads a stream's config unlocked while creating a consumer
		// (fileStore.ConsumerStore), which races the stream update ingest makes at start.
		if err := waitReady(gctx, st.WorkerURL); err != nil && gctx.Err() == nil {
			logger.Warn("the worker is not ready yet; starting ingest and api anyway", "err", err)
		}
		if gctx.Err() != nil {
			return nil
		}
		g.Go(func() error {
			return named("ingest", ingest.Run(gctx, ingestCfg, logger.With("service", "ingest"), lns.ingest))
		})
		g.Go(func() error {
			return named("api", api.Run(gctx, apiCfg, logger.With("service", "api"), lns.api))
		})
		if err := waitReady(gctx, st.IngestURL, st.APIURL); err != nil {
			if gctx.Err() == nil {
				logger.Warn("the stack is not ready yet", "err", err)
			}
			return nil
		}
		printBanner(o, dir, st, dbURL, pgData, getenv("DATABASE_URL") != "", logger)
		return nil
	})
	return g.Wait()
}

func named(svc string, err error) error {
	if err != nil {
		return fmt.Errorf("%s: %w", svc, err)
	}
	return nil
}

// prefer returns the port asked for when it is free, else the one used last time when it is
// free, else 0 (any).
func prefer(asked, last int) int {
	for _, p := range []int{asked, last} {
		if p > 0 && portFree(p) {
			return p
		}
	}
	return 0
}

func first(ids []string) string {
	if len(ids) == 0 {
		return "ID"
	}
	return ids[0]
}

func or(s, fallback string) string {
	if s == "" {
		return fallback
	}
	return s
}

// overlay reads vars first, then getenv; an empty value in vars hides the variable.
func overlay(getenv func(string) string, vars map[string]string) func(string) string {
	return func(key string) string {
		if v, ok := vars[key]; ok {
			return v
		}
		return getenv(key)
	}
}

// lockDir takes an exclusive lock on dir for as long as the stack runs: two stacks on one
// data directory would share a NATS store and a Postgres cluster.
func lockDir(dir string) (func(), error) {
	f, err := os.OpenFile(filepath.Join(dir, "dev.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("locking %s: %w", dir, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close() // only a lock; nothing was written
		return nil, fmt.Errorf("another dev stack is running on %s (stop it, or pass another --data directory)", dir)
	}
	return func() { _ = f.Close() }, nil
}

// startNATS returns url when set, else starts the embedded server with its store under dir.
func startNATS(dir, url string, port int, logger *slog.Logger) (string, func(), error) {
	if url != "" {
		logger.Info("using NATS from NATS_URL")
		return url, func() {}, nil
	}
	opts := natsembed.Options{StoreDir: filepath.Join(dir, "nats"), Name: "clerksync-dev", Port: port}
	srv, err := natsembed.Start(opts)
	if err != nil && opts.Port != 0 { // taken since we looked
		opts.Port = 0
		srv, err = natsembed.Start(opts)
	}
	if err != nil {
		return "", nil, fmt.Errorf("starting NATS: %w", err)
	}
	logger.Info("NATS started", "url", srv.ClientURL(), "store", opts.StoreDir)
	return srv.ClientURL(), func() { shutdownNATS(srv, logger) }, nil
}

func shutdownNATS(srv *server.Server, logger *slog.Logger) {
	srv.Shutdown()
	srv.WaitForShutdown()
	logger.Info("NATS stopped")
}

// startPostgres returns url when set, else starts the private cluster (under dir/postgres, see
// postgresDataDir) with the clerksync database created, and says where its data is.
func startPostgres(ctx context.Context, dir, url string, port int, logger *slog.Logger) (string, string, func() error, error) {
	if url != "" {
		logger.Info("using Postgres from DATABASE_URL")
		return url, "", func() error { return nil }, nil
	}
	dataDir, err := postgresDataDir(dir)
	if err != nil {
		return "", "", nil, err
	}
	if dataDir != filepath.Join(dir, "postgres") {
		logger.Warn("PostgreSQL's user cannot reach the data directory (a private checkout, as root): its cluster lives outside it",
			"data", dataDir)
	}
	logger.Info("starting a private Postgres cluster", "data", dataDir)
	c, err := pgcluster.Start(ctx, pgcluster.Options{DataDir: dataDir, Port: port})
	if err != nil {
		return "", "", nil, fmt.Errorf("%w; or set DATABASE_URL to a Postgres server", err)
	}
	if err := c.EnsureDatabase(ctx, Database); err != nil {
		_ = c.Stop()
		return "", "", nil, err
	}
	logger.Info("Postgres started", "port", c.Port(), "pid", c.PID(), "log", c.LogPath())
	return c.URL(Database), dataDir, func() error {
		if err := c.Stop(); err != nil {
			return err
		}
		logger.Info("Postgres stopped")
		return nil
	}, nil
}

// postgresDataDir is where the private cluster keeps its data: dir/postgres, unless the user
// PostgreSQL runs as (postgres, when the dev stack runs as root) cannot reach it — a checkout
// under a 0700 directory such as root's home. Then it is a directory of its own under /var/tmp,
// named after the checkout so that two checkouts never share one; nothing else is moved.
func postgresDataDir(dir string) (string, error) {
	preferred := filepath.Join(dir, "postgres")
	if pgcluster.Reachable(preferred) == nil {
		return preferred, nil
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256([]byte(abs))
	base := "/var/tmp"
	if fi, err := os.Stat(base); err != nil || !fi.IsDir() {
		base = os.TempDir()
	}
	alt := filepath.Join(base, "clerksync-dev-"+hex.EncodeToString(sum[:6]), "postgres")
	if err := pgcluster.Reachable(alt); err != nil {
		return "", fmt.Errorf("%w; and %s cannot be used either: set DATABASE_URL to a Postgres server", err, alt)
	}
	return alt, nil
}

func migrate(ctx context.Context, url string, logger *slog.Logger) error {
	pool, err := postgres.Open(ctx, url)
	if err != nil {
		return err
	}
	defer pool.Close()
	return postgres.Migrate(ctx, pool, logger.With("component", "migrate"))
}

type listeners struct{ ingest, api, worker, jwks net.Listener }

func (l listeners) close() {
	for _, ln := range []net.Listener{l.ingest, l.api, l.worker, l.jwks} {
		if ln != nil {
			_ = ln.Close() // already closed by a service that ran: harmless
		}
	}
}

// listenAll opens the services' listeners: the address in the environment when set, else the
// usual port on loopback, or a free one when it is taken.
func listenAll(getenv func(string) string, jwksPort int) (l listeners, err error) {
	defer func() {
		if err != nil {
			l.close()
		}
	}()
	for _, s := range []struct {
		ln     *net.Listener
		envVar string
		usual  string
	}{
		{&l.ingest, "INGEST_ADDR", "127.0.0.1:8080"},
		{&l.api, "API_ADDR", "127.0.0.1:8081"},
		{&l.worker, "WORKER_ADDR", "127.0.0.1:8082"},
		{&l.jwks, "", "127.0.0.1:" + strconv.Itoa(jwksPort)},
	} {
		if addr := getenv(s.envVar); s.envVar != "" && addr != "" {
			if *s.ln, err = net.Listen("tcp", addr); err != nil {
				return l, fmt.Errorf("%s: %w", s.envVar, err)
			}
			continue
		}
		if *s.ln, err = net.Listen("tcp", s.usual); err != nil {
			if *s.ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
				return l, fmt.Errorf("listening: %w", err)
			}
		}
	}
	return l, nil
}

func portFree(port int) bool {
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return false
	}
	ln.Close()
	return true
}

func portOf(rawURL string) int {
	i := strings.LastIndexByte(rawURL, ':')
	if i < 0 {
		return 0
	}
	end := strings.IndexAny(rawURL[i+1:], "/?")
	if end < 0 {
		end = len(rawURL) - i - 1
	}
	p, _ := strconv.Atoi(rawURL[i+1 : i+1+end])
	return p
}

// httpURL is a URL a client on this machine reaches ln at: a wildcard address becomes
// localhost.
func httpURL(ln net.Listener) string {
	addr := ln.Addr().(*net.TCPAddr)
	host := addr.IP.String()
	if addr.IP.IsUnspecified() {
		host = "localhost"
	}
	return "http://" + net.JoinHostPort(host, strconv.Itoa(addr.Port))
}

// waitReady polls each service's /readyz until all answer 200.
func waitReady(ctx context.Context, urls ...string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	client := &http.Client{Timeout: 2 * time.Second}
	for _, u := range urls {
		for {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, u+"/readyz", nil)
			if err != nil {
				return err
			}
			resp, err := client.Do(req)
			if err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
				err = fmt.Errorf("%s/readyz: %s", u, resp.Status)
			}
			select {
			case <-ctx.Done():
				return err
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	return nil
}

func printBanner(o Options, dir string, st State, dbURL, pgData string, external bool, logger *slog.Logger) {
	dataFlag := ""
	if dir != ".data" {
		dataFlag = " --data " + dir
	}
	send := "go run ./cmd/dev send user.created" + dataFlag
	token := "go run ./cmd/dev token" + dataFlag
	if o.JSON {
		// Logs never hold a secret: the webhook secret and the Backend API key are in the state
		// file (webhook_secret says how to read it).
		state := filepath.Join(dir, stateFile)
		postgresURL := dbURL
		if external {
			postgresURL = "from DATABASE_URL"
		}
		logger.Info("dev stack ready",
			"ingest", st.IngestURL+"/webhooks/clerk", "api", st.APIURL, "worker", st.WorkerURL,
			"nats", st.NATSURL, "postgres", postgresURL, "postgres_data", pgData,
			"webhook_secret", "$(jq -r .webhook_secret "+state+")",
			"jwks", st.JWKSURL, "backend_api", st.Issuer+"/v1/users",
			"state", state, "send", send, "token", token,
			"just_in_time", jitCommand(st, token),
			"reconcile", reconcileCommand(st, "$(jq -r .clerk_secret_key "+filepath.Join(dir, stateFile)+")"))
		return
	}
	w := o.Stdout
	if w == nil {
		return
	}
	pg := dbURL
	switch {
	case external:
		pg = "from DATABASE_URL"
	case pgData != filepath.Join(dir, "postgres"):
		pg += "  (its data in " + pgData + ": PostgreSQL's user cannot reach " + dir + ")"
	}
	_, _ = fmt.Fprintf(w, `
clerksync dev stack is up (data in %s; Ctrl-C stops it)

  ingest    %s/webhooks/clerk
  api       %s/auth/me
  worker    %s/metrics
  nats      %s
  postgres  %s
  jwks      %s
  clerk     %s/v1/users  (a fake Backend API: every user sent, and %d no webhook announced)

  webhook secret  %s

  send a signed sample event:  %s
  mint a session token:        %s
  read the user back:          curl -H "Authorization: Bearer $(%s)" %s/auth/me
  an organization:             %s
                               %s
                               %s --org <org id>

  a user only the Backend API has, synced just in time (200 on the first request):
    %s

  backfill the users only the Backend API has (then: %s --user %s):
    %s

`, dir, st.IngestURL, st.APIURL, st.WorkerURL, st.NATSURL, pg, st.JWKSURL, st.Issuer, len(st.BackendOnly),
		st.WebhookSecret, send, token, token, st.APIURL,
		"go run ./cmd/dev send organization.created"+dataFlag, "go run ./cmd/dev send organizationMembership.created"+dataFlag, token,
		jitCommand(st, token), token, first(st.BackendOnly), reconcileCommand(st, st.ClerkSecretKey))
}

// jitCommand is how to see just-in-time sync: /auth/me for the last user only the Backend API
// has (reconcile's example names the first).
func jitCommand(st State, token string) string {
	user := "ID"
	if len(st.BackendOnly) > 0 {
		user = st.BackendOnly[len(st.BackendOnly)-1]
	}
	return fmt.Sprintf(`curl -H "Authorization: Bearer $(%s --user %s)" %s/auth/me`, token, user, st.APIURL)
}
