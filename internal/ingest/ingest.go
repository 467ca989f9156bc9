// Package ingest is clerksync's front door for Clerk: it reads a bounded webhook body, verifies
// the Svix signature over those raw bytes against every configured secret, checks the envelope,
// and appends the body, byte for byte, to the JetStream stream, answering 2xx only after the
// PubAck. It must not touch Postgres, decode or rewrite a body, or answer success for anything
// JetStream has not acknowledged.
package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/clerksync/clerksync/internal/event"
	"github.com/clerksync/clerksync/internal/service"
)

// Config is ingest's configuration, from the environment.
type Config struct {
	NATSURL        string        `env:"NATS_URL" envDefault:"nats://127.0.0.1:4222"`
	Addr           string        `env:"INGEST_ADDR" envDefault:":8080"`
	WebhookSecrets Secrets       `env:"CLERK_WEBHOOK_SECRET,required" envSeparator:","`
	MaxBodyBytes   int64         `env:"WEBHOOK_MAX_BODY_BYTES" envDefault:"262144"`
	PublishTimeout time.Duration `env:"PUBLISH_TIMEOUT" envDefault:"5s"`
	Stream         event.StreamConfig
}

// Secrets are the whsec_ webhook secrets. They print as a count, never their value, so logging a
// Config cannot leak them.
type Secrets []string

// String prints how many secrets there are, never their value.
func (s Secrets) String() string { return fmt.Sprintf("[%d secrets redacted]", len(s)) }

// GoString redacts %#v as String does.
func (s Secrets) GoString() string { return s.String() }

// LogValue redacts the secrets in slog output as String does.
func (s Secrets) LogValue() slog.Value { return slog.StringValue(s.String()) }

// MarshalText redacts the secrets in JSON and text encodings as String does.
func (s Secrets) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// ensureRetryMax caps the back-off between attempts to ensure the stream while NATS is away.
const ensureRetryMax = 5 * time.Second

// errNoRoom means the NATS server's max_payload cannot carry the largest webhook ingest accepts.
var errNoRoom = errors.New("nats max_payload too small")

// Run serves ingest on ln (or on cfg.Addr when ln is nil) until ctx ends, then shuts down
// gracefully and returns nil.
//
// NATS being down at start is not an error: ingest serves at once (webhooks get 503
// stream_unavailable, /readyz fails) and keeps connecting and ensuring the stream with back-off,
// logging each failure, until it succeeds or ctx ends. It ensures the stream again after every
// reconnect, in case the server came back without its store. A NATS max_payload too small for
// WEBHOOK_MAX_BODY_BYTES plus headers stops Run with an error: that is a configuration mistake,
// not an outage.
func Run(ctx context.Context, cfg Config, logger *slog.Logger, ln net.Listener) error {
	closeLn := func() {
		if ln != nil {
			_ = ln.Close()
		}
	}
	v, err := newVerifier(cfg.WebhookSecrets)
	if err != nil {
		closeLn()
		return fmt.Errorf("config: %w", err)
	}
	if cfg.MaxBodyBytes < 1 {
		closeLn()
		return fmt.Errorf("config: WEBHOOK_MAX_BODY_BYTES must be positive, got %d", cfg.MaxBodyBytes)
	}
	if cfg.PublishTimeout <= 0 {
		closeLn()
		return fmt.Errorf("config: PUBLISH_TIMEOUT must be positive, got %s", cfg.PublishTimeout)
	}

	reconnected := make(chan struct{}, 1)
	nc, err := connect(cfg.NATSURL, logger, reconnected)
	if err != nil {
		closeLn()
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		closeLn()
		return fmt.Errorf("jetstream: %w", err)
	}

	if ln, err = service.Listen(ln, cfg.Addr); err != nil {
		return err
	}
	reg := service.NewRegistry()
	reg.MustRegister(event.ServerSupportedGauge(nc, "ingest"))
	wh := &webhooks{
		js:             js,
		verifier:       v,
		maxBody:        cfg.MaxBodyBytes,
		publishTimeout: cfg.PublishTimeout,
		now:            time.Now,
		logger:         logger,
		metrics:        newMetrics(reg, len(cfg.WebhookSecrets)),
	}
	h := newHandler(wh, reg, probes(nc, js))

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return keepStream(gctx, nc, js, cfg, logger, reconnected) })
	g.Go(func() error { return wh.summarize(gctx, summaryInterval) })
	g.Go(func() error { return service.Serve(gctx, service.NewServer(h, logger), ln, logger) })
	return g.Wait()
}

// summaryInterval is how often ingest logs how many webhooks it stored (at info; each webhook is
// logged at debug).
const summaryInterval = time.Minute

// connect opens ingest's one NATS connection. It never gives up reconnecting, so ingest accepts
// webhooks again as soon as NATS is back, and it buffers nothing while disconnected: a publish
// then fails at once and the webhook gets a 503, instead of waiting on a message that may or may
// not be sent later.
func connect(url string, logger *slog.Logger, reconnected chan<- struct{}) (*nats.Conn, error) {
	logger = logger.With("component", "nats")
	signal := func() {
		select {
		case reconnected <- struct{}{}:
		default:
		}
	}
	nc, err := nats.Connect(url,
		nats.Name("clerksync-ingest"),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		nats.ReconnectBufSize(-1),
		// No signal on the first connect: keepStream's first ensureStream is already retrying
		// until the connection is up.
		nats.ConnectHandler(func(nc *nats.Conn) {
			logger.Info("connected", "url", nc.ConnectedUrlRedacted())
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			logger.Info("reconnected", "url", nc.ConnectedUrlRedacted())
			signal()
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				logger.Warn("disconnected", "err", err)
			}
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			logger.Error("nats error", "err", err)
		}),
	)
	if err != nil {
		return nil, fmt.Errorf("connecting to nats: %w", err)
	}
	return nc, nil
}

// probes are /readyz's checks: connected to NATS, and JetStream answering about the stream.
func probes(nc *nats.Conn, js jetstream.JetStream) map[string]service.Probe {
	return map[string]service.Probe{
		"nats": func(context.Context) error {
			if !nc.IsConnected() {
				return fmt.Errorf("nats connection %s", nc.Status())
			}
			return nil
		},
		"jetstream": func(ctx context.Context) error {
			if _, err := js.Stream(ctx, event.Stream); err != nil {
				return fmt.Errorf("stream %s: %w", event.Stream, err)
			}
			return nil
		},
	}
}

// keepStream ensures the stream now and again after every (re)connect, until ctx ends. It returns
// an error only when the server cannot carry ingest's largest webhook.
func keepStream(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, cfg Config, logger *slog.Logger, reconnected <-chan struct{}) error {
	for {
		if err := ensureStream(ctx, nc, js, cfg, logger); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-reconnected:
		}
	}
}

// ensureStream retries, with back-off, until the stream is ensured and the server's max payload
// checked, or ctx ends. Every failure but errNoRoom is retried: NATS may be down or still
// starting, and a cluster may refuse replicas until its peers are up.
func ensureStream(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, cfg Config, logger *slog.Logger) error {
	wait := 250 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := ensureOnce(ctx, nc, js, cfg)
		switch {
		case err == nil:
			logger.Info("stream ready", "stream", event.Stream, "replicas", max(cfg.Stream.Replicas, 1),
				"nats_max_payload", nc.MaxPayload(), "nats_server_version", nc.ConnectedServerVersion())
			event.WarnIfOldServer(nc, logger)
			return nil
		case errors.Is(err, errNoRoom):
			return err
		case ctx.Err() != nil:
			return nil
		}
		logger.Warn("stream not ready, retrying", "stream", event.Stream, "attempt", attempt, "retry_in", wait, "err", err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		wait = min(2*wait, ensureRetryMax)
	}
}

func ensureOnce(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, cfg Config) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := event.EnsureStream(ctx, js, cfg.Stream); err != nil {
		return err
	}
	return checkRoom(nc.MaxPayload(), cfg.MaxBodyBytes)
}

// checkRoom checks that a message of maxBody bytes plus headers fits the server's max_payload;
// nats.go would refuse a larger one, and every such webhook would be answered 503 forever.
func checkRoom(maxPayload, maxBody int64) error {
	if need := maxBody + headerRoom; maxPayload < need {
		return fmt.Errorf("%w: the server accepts messages up to %d bytes, but WEBHOOK_MAX_BODY_BYTES=%d plus %d bytes of headers needs %d: raise max_payload on the NATS server or lower WEBHOOK_MAX_BODY_BYTES",
			errNoRoom, maxPayload, maxBody, headerRoom, need)
	}
	return nil
}
