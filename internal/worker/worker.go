// Package worker folds the Clerk event stream into Postgres: users, their subscriptions and usage
// rows, organizations and their memberships. It reads clerk.user.>, clerk.organization.> and
// clerk.organizationMembership.> with a durable pull consumer, applies each batch in one transaction
// (recording every svix-id in processed_events in the same transaction), and acknowledges only
// after the commit, so every event takes effect exactly once and the final rows depend only on the
// set of events. It also replays the stream (worker replay) and retries dead letters.
//
// It must not decide what a Clerk payload means (package clerk does), must not write SQL outside
// queries/, and must never dead-letter a message because Postgres is down: an outage pauses it.
package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/clerksync/clerksync/internal/clerkapi"
	"github.com/clerksync/clerksync/internal/event"
	"github.com/clerksync/clerksync/internal/postgres"
	"github.com/clerksync/clerksync/internal/postgres/dbsqlc"
	"github.com/clerksync/clerksync/internal/service"
)

// Config is the worker's configuration, from the environment.
type Config struct {
	NATSURL     string `env:"NATS_URL" envDefault:"nats://127.0.0.1:4222"`
	DatabaseURL string `env:"DATABASE_URL" envDefault:"postgres://postgres@127.0.0.1:5432/clerksync?sslmode=disable"`
	Addr        string `env:"WORKER_ADDR" envDefault:":8082"`
	// Consumer is the durable consumer's name; workers sharing it share the work.
	Consumer  string `env:"WORKER_CONSUMER" envDefault:"clerk-users"`
	BatchSize int    `env:"WORKER_BATCH_SIZE" envDefault:"256" want:"an integer from 1 to 10000"`
	// Parallelism is how many batches the worker applies at once, each in its own transaction on
	// its own connection, with users partitioned between them.
	Parallelism int `env:"WORKER_PARALLELISM" envDefault:"4" want:"an integer from 1 to 64"`
	// MaxAttempts is how many deliveries a message that fails with Postgres reachable gets before
	// it is parked in dead_letters.
	MaxAttempts int `env:"WORKER_MAX_ATTEMPTS" envDefault:"20" want:"an integer, at least 1"`
	// AckWait is how long JetStream waits for an acknowledgement before delivering again.
	AckWait time.Duration `env:"WORKER_ACK_WAIT" envDefault:"30s"`
	// FetchWait is how long an idle worker waits for a message before asking again.
	FetchWait time.Duration `env:"WORKER_FETCH_WAIT" envDefault:"1s"`
	// RetryDelay is the first NakWithDelay back-off; it doubles with each delivery up to
	// RetryMaxDelay.
	RetryDelay    time.Duration `env:"WORKER_RETRY_DELAY" envDefault:"1s"`
	RetryMaxDelay time.Duration `env:"WORKER_RETRY_MAX_DELAY" envDefault:"5m"`
	// Stream configures the stream when the worker starts before ingest has created it.
	Stream event.StreamConfig

	// The Clerk Backend API, for worker reconcile and the periodic sweep.
	ClerkAPIURL    string             `env:"CLERK_API_URL" envDefault:"https://api.clerk.com"`
	ClerkSecretKey clerkapi.SecretKey `env:"CLERK_SECRET_KEY"`
	// ClerkAPIRate is the most Backend API requests per second, with bursts of as many (0: 10).
	ClerkAPIRate float64 `env:"CLERK_API_RATE" envDefault:"10"`
	// ReconcileInterval, when set, makes the long-running worker sweep that often (0: never).
	ReconcileInterval time.Duration `env:"RECONCILE_INTERVAL" envDefault:"0"`

	// NoMigrate skips the migrations at start (the --no-migrate flag; not an environment variable).
	NoMigrate bool
}

func (c Config) validate() error {
	switch {
	case c.BatchSize < 1 || c.BatchSize > 10000:
		return fmt.Errorf("config: WORKER_BATCH_SIZE \"%d\": want an integer from 1 to 10000", c.BatchSize)
	case c.Parallelism < 1 || c.Parallelism > 64:
		return fmt.Errorf("config: WORKER_PARALLELISM \"%d\": want an integer from 1 to 64", c.Parallelism)
	case c.MaxAttempts < 1:
		return fmt.Errorf("config: WORKER_MAX_ATTEMPTS \"%d\": want an integer, at least 1", c.MaxAttempts)
	case c.AckWait < time.Second:
		return fmt.Errorf("config: WORKER_ACK_WAIT %s: want at least 1s", c.AckWait)
	case c.FetchWait < 10*time.Millisecond:
		return fmt.Errorf("config: WORKER_FETCH_WAIT %s: want at least 10ms", c.FetchWait)
	case c.RetryDelay <= 0 || c.RetryMaxDelay < c.RetryDelay:
		return errors.New("config: WORKER_RETRY_DELAY must be positive and at most WORKER_RETRY_MAX_DELAY")
	case c.Consumer == "":
		return errors.New("config: WORKER_CONSUMER must not be empty")
	case c.ClerkAPIRate < 0:
		return fmt.Errorf("config: CLERK_API_RATE %v: want a positive number of requests per second", c.ClerkAPIRate)
	case c.ReconcileInterval < 0:
		return fmt.Errorf("config: RECONCILE_INTERVAL %s: want a positive duration, or 0 for never", c.ReconcileInterval)
	case c.ReconcileInterval > 0 && c.ClerkSecretKey == "":
		return errors.New("config: RECONCILE_INTERVAL is set but CLERK_SECRET_KEY is not: the sweep reads Clerk's Backend API with it")
	}
	return nil
}

// Run runs the worker until ctx ends: migrations (unless cfg.NoMigrate), then the durable consumer,
// the MaxDeliver advisory watcher and /healthz, /readyz, /metrics on ln (or cfg.Addr when ln is
// nil). It starts whether or not Postgres and NATS answer yet: /healthz answers at once, /readyz
// fails until both do, and it connects as soon as they come. When ctx ends it fetches nothing
// more, applies, commits and settles what it has fetched, and returns nil; during a Postgres
// outage what has not committed yet is left unacknowledged, for JetStream to deliver again after
// AckWait.
func Run(ctx context.Context, cfg Config, logger *slog.Logger, ln net.Listener) error {
	if err := cfg.validate(); err != nil {
		return err
	}
	ln, err := service.Listen(ln, cfg.Addr)
	if err != nil {
		return err
	}
	// Until the dependencies answer, the ops endpoints say the worker is starting.
	h := &swappable{}
	h.set(startingHandler(logger))
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return service.Serve(gctx, service.NewServer(h, logger), ln, logger) })
	g.Go(func() error { return run(gctx, cfg, logger, h) })
	err = g.Wait()
	logger.Info("worker stopped")
	return err
}

// run connects to Postgres (migrating it) and NATS, waiting for each as long as it is out of
// reach, then serves the real ops endpoints through h and consumes until ctx ends.
func run(ctx context.Context, cfg Config, logger *slog.Logger, h *swappable) error {
	// A connection per lane, and one for dead letters, probes and advisories.
	pool, err := untilUp(ctx, logger, "postgres", func() (*pgxpool.Pool, error) {
		if !cfg.NoMigrate {
			// A fresh Postgres has no clerksync database: the worker that migrates creates it.
			if err := postgres.CreateDatabaseIfMissing(ctx, cfg.DatabaseURL, logger); err != nil {
				return nil, err
			}
		}
		pool, err := postgres.OpenConns(ctx, cfg.DatabaseURL, cfg.Parallelism+1)
		if err != nil {
			return nil, err
		}
		if !cfg.NoMigrate {
			if err := postgres.Migrate(ctx, pool, logger); err != nil {
				pool.Close()
				return nil, err
			}
		}
		return pool, nil
	}, postgres.IsUnavailable)
	if pool == nil || err != nil {
		return err
	}
	defer pool.Close()
	nc, js, err := connectNATS(ctx, cfg, logger)
	if err != nil {
		return err
	}
	// Acks are published without waiting: flush them before the connection goes.
	defer func() {
		_ = nc.FlushTimeout(5 * time.Second)
		nc.Close()
	}()
	// Until NATS answers, or JetStream has the stream, creating the consumer fails: every failure
	// is waited out (and logged), since the worker can do nothing without it.
	cons, err := untilUp(ctx, logger, "nats", func() (jetstream.Consumer, error) {
		return ensureConsumer(ctx, js, cfg)
	}, func(error) bool { return true })
	if cons == nil || err != nil {
		return err
	}

	reg := service.NewRegistry()
	reg.MustRegister(event.ServerSupportedGauge(nc, "worker"))
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "clerksync_worker_dead_letters_pending",
		Help: "Dead letters waiting for an operator (retried_at unset), read from Postgres at each scrape: the same number for every worker.",
	}, func() float64 { return pendingDeadLetters(pool) }))
	event.WarnIfOldServer(nc, logger)
	c := newConsumer(cfg, logger, pool, js, cons, newMetrics(reg))
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "clerksync_worker_consumer_pending",
		Help: "Messages in the stream the durable consumer has not yet been delivered.",
	}, c.pending))

	mux := http.NewServeMux()
	service.HandleOps(mux, reg, logger, map[string]service.Probe{
		"postgres": func(ctx context.Context) error { return postgres.Ping(ctx, pool) },
		"nats": func(context.Context) error {
			if !nc.IsConnected() {
				return errors.New("not connected")
			}
			return nil
		},
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		service.WriteError(w, http.StatusNotFound, "not_found", "no such route")
	})

	advisories := make(chan *nats.Msg, 1024)
	sub, err := nc.ChanSubscribe(maxDeliveriesSubject(cfg.Consumer), advisories)
	if err != nil {
		return fmt.Errorf("subscribing to max-deliveries advisories: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()

	h.set(mux)
	logger.Info("worker started", "consumer", cfg.Consumer, "batch_size", cfg.BatchSize, "parallelism", cfg.Parallelism, "max_attempts", cfg.MaxAttempts)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return c.run(gctx) })
	g.Go(func() error { return c.watchMaxDeliveries(gctx, advisories) })
	if cfg.ReconcileInterval > 0 {
		g.Go(func() error { return reconcileEvery(gctx, cfg, js, reg, logger) })
	}
	return g.Wait()
}

// untilUp calls open until it succeeds, fails for a reason waiting does not mend (an error
// transient does not accept), or ctx ends (then the zero T and nil). While what it needs is out
// of reach it logs a warning, the first time and then once a minute, and waits with back-off.
func untilUp[T any](ctx context.Context, logger *slog.Logger, what string, open func() (T, error), transient func(error) bool) (T, error) {
	var zero T
	wait, lastLog := 250*time.Millisecond, time.Time{}
	for {
		v, err := open()
		switch {
		case err == nil:
			if !lastLog.IsZero() {
				logger.Info(what + " is up")
			}
			return v, nil
		case ctx.Err() != nil:
			return zero, nil
		case !transient(err):
			return zero, err
		}
		if time.Since(lastLog) >= time.Minute {
			logger.Warn("waiting for "+what+": /readyz fails until it answers", "err", err)
			lastLog = time.Now()
		}
		sleep(ctx, wait)
		wait = min(2*wait, 10*time.Second)
	}
}

// swappable is an http.Handler whose handler can be replaced while it serves.
type swappable struct{ h atomic.Pointer[http.Handler] }

func (s *swappable) set(h http.Handler)                               { s.h.Store(&h) }
func (s *swappable) ServeHTTP(w http.ResponseWriter, r *http.Request) { (*s.h.Load()).ServeHTTP(w, r) }

// startingHandler serves the ops endpoints while the worker waits for its dependencies: alive,
// not ready.
func startingHandler(logger *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	service.HandleOps(mux, service.NewRegistry(), logger, map[string]service.Probe{
		"dependencies": func(context.Context) error { return errors.New("starting: waiting for Postgres and NATS") },
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		service.WriteError(w, http.StatusNotFound, "not_found", "no such route")
	})
	return mux
}

// Migrate applies the embedded migrations and returns (worker migrate).
func Migrate(ctx context.Context, cfg Config, logger *slog.Logger) error {
	if err := postgres.CreateDatabaseIfMissing(ctx, cfg.DatabaseURL, logger); err != nil {
		return err
	}
	pool, err := postgres.Open(ctx, cfg.DatabaseURL)
	if err != nil {
		return err
	}
	defer pool.Close()
	return postgres.Migrate(ctx, pool, logger)
}

func connectNATS(ctx context.Context, cfg Config, logger *slog.Logger) (*nats.Conn, jetstream.JetStream, error) {
	log := logger.With("component", "nats")
	nc, err := nats.Connect(cfg.NATSURL,
		nats.Name("clerksync-worker"),
		// NATS may not be up yet: the connection keeps trying, and run waits for the consumer.
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("reconnected", "url", nc.ConnectedUrlRedacted())
			event.WarnIfOldServer(nc, log)
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { log.Warn("nats error", "err", err) }),
	)
	if err != nil {
		return nil, nil, fmt.Errorf("connecting to nats: %w", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("opening jetstream: %w", err)
	}
	return nc, js, nil
}

// ensureConsumer creates or updates the durable consumer, and the stream with cfg.Stream when it is
// missing (ingest owns the stream's configuration: the worker never changes an existing stream).
func ensureConsumer(ctx context.Context, js jetstream.JetStream, cfg Config) (jetstream.Consumer, error) {
	stream, err := js.Stream(ctx, event.Stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		stream, err = event.EnsureStream(ctx, js, cfg.Stream)
	}
	if err != nil {
		return nil, fmt.Errorf("opening stream %s: %w", event.Stream, err)
	}
	cons, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:     cfg.Consumer,
		Description: "clerksync worker: clerk.user.>, clerk.organization.> and clerk.organizationMembership.> into Postgres",
		// A consumer from an older release filters clerk.user.> alone (FilterSubject): it is
		// updated in place and keeps its position, so organization events the stream took before
		// the upgrade are behind it; `worker replay --from-seq 1` folds them (the ledger skips
		// what is applied already).
		FilterSubjects: event.WorkerSubjects(),
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        cfg.AckWait,
		// The worker gives up by itself after MaxAttempts deliveries; JetStream's limit is only a
		// backstop for messages that never reach a verdict (a worker killed on them every time).
		// Reaching it raises the advisory that watchMaxDeliveries turns into a dead letter.
		MaxDeliver: 2 * cfg.MaxAttempts,
		// A worker holds up to 3 x BatchSize x Parallelism messages at once: a fetch being
		// dispatched, and for each lane a batch queued behind the one it applies (JetStream's
		// default of 1,000 stalls such fetches); room for four such workers.
		MaxAckPending: max(1000, 12*cfg.BatchSize*cfg.Parallelism),
	})
	if err != nil {
		return nil, fmt.Errorf("creating consumer %s: %w", cfg.Consumer, err)
	}
	return cons, nil
}

// pendingDeadLetters counts the dead letters waiting for an operator, or NaN when Postgres does
// not answer in time.
func pendingDeadLetters(pool *pgxpool.Pool) float64 {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	n, err := dbsqlc.New(pool).CountPendingDeadLetters(ctx)
	if err != nil {
		return math.NaN()
	}
	return float64(n)
}

// maxDeliveriesSubject is where JetStream announces a message of the consumer that reached
// MaxDeliver.
func maxDeliveriesSubject(consumer string) string {
	return "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES." + event.Stream + "." + consumer
}
