package ingest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/clerksync/clerksync/internal/clerk"
	"github.com/clerksync/clerksync/internal/event"
	"github.com/clerksync/clerksync/internal/service"
)

// The webhook routes: the contract's and the alias existing Clerk dashboards point at.
const (
	routeWebhooks      = "/webhooks/clerk"
	routeWebhooksAlias = "/api/webhooks"
	routeUnmatched     = "unmatched" // the route label of a 404
)

const (
	// maxTypeLen bounds the event type, which is copied into the subject and a header; Clerk's
	// types are a few dozen bytes.
	maxTypeLen = 255
	// maxTraceparentLen bounds a forwarded traceparent (W3C's version 00 is 55 bytes); a longer or
	// non-ASCII one is dropped, not refused: tracing must never cost a webhook.
	maxTraceparentLen = 256
	// headerRoom is the most a message's headers take: the signature header (≤ 8 KiB), the id
	// twice (≤ 255 each), the type (≤ 255), the timestamp (≤ 20), Received-At, a traceparent (≤ 256),
	// their names and NATS's framing, with room to spare. Ingest checks at start that the
	// server's max_payload holds WEBHOOK_MAX_BODY_BYTES plus this.
	headerRoom = 16 << 10
)

// webhooks serves the webhook routes: limit, verify, validate, publish, and answer only after
// the PubAck.
type webhooks struct {
	js             jetstream.JetStream
	verifier       *verifier
	maxBody        int64
	publishTimeout time.Duration
	now            func() time.Time
	logger         *slog.Logger
	metrics        *metrics
	// stored and duplicates count the webhooks since the last summary line (summarize).
	stored, duplicates atomic.Int64
}

// ack is the answer to a stored webhook.
type ack struct {
	ID        string `json:"id"`
	Duplicate bool   `json:"duplicate"`
}

// newHandler returns ingest's routes: the webhooks, /healthz, /readyz, /metrics, and JSON 404s
// and 405s for everything else.
func newHandler(wh *webhooks, reg *prometheus.Registry, probes map[string]service.Probe) http.Handler {
	ops := http.NewServeMux()
	service.HandleOps(ops, reg, wh.logger, probes)

	mux := http.NewServeMux()
	mux.Handle(routeWebhooks, wh)
	mux.Handle(routeWebhooksAlias, wh)
	for _, path := range [...]string{"/healthz", "/readyz", "/metrics"} {
		mux.Handle(path, onlyGet(ops))
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		wh.refuse(w, r, routeUnmatched, errNotFound)
	})
	return mux
}

// onlyGet answers 405 in the contract's shape for anything but GET and HEAD (a bare ServeMux
// would answer in plain text).
func onlyGet(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			p := problemFor(errMethodNotAllowed)
			service.WriteError(w, p.status, p.code, p.message)
			return
		}
		h.ServeHTTP(w, r)
	})
}

func (wh *webhooks) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	route := r.Pattern
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		wh.refuse(w, r, route, errMethodNotAllowed)
		return
	}
	a, err := wh.accept(w, r)
	if err != nil {
		wh.refuse(w, r, route, err)
		return
	}
	if a.Duplicate {
		wh.metrics.duplicates.Inc()
	}
	wh.metrics.stored(route, a.Duplicate)
	service.WriteJSON(w, http.StatusOK, a)
}

// accept runs a webhook through every check, in the contract's order, and publishes it.
func (wh *webhooks) accept(w http.ResponseWriter, r *http.Request) (ack, error) {
	body, err := readBody(w, r, wh.maxBody)
	if err != nil {
		return ack{}, err
	}
	sh, err := readSignedHeaders(r.Header)
	if err != nil {
		return ack{}, err
	}
	now := wh.now()
	secret, err := wh.verifier.verify(sh, body, now)
	if err != nil {
		return ack{}, err
	}
	wh.metrics.secretMatched[secret].Inc()

	// Only now, with the bytes proven to come from Clerk, is the body parsed.
	env, err := clerk.ParseEnvelope(body)
	if err != nil {
		return ack{}, err
	}
	if len(env.Type) > maxTypeLen {
		return ack{}, fmt.Errorf("%w: type over %d bytes", clerk.ErrInvalidType, maxTypeLen)
	}
	subject, err := event.Subject(env.Type)
	if err != nil {
		return ack{}, err
	}

	// nats.Header is a plain map (no canonicalisation): this is what NewMsg and Header.Set
	// would build, with the map sized for every header and their values in one array.
	hdr := make(nats.Header, 7)
	values := make([]string, 0, 7)
	set := func(name, value string) {
		values = append(values, value)
		n := len(values)
		hdr[name] = values[n-1 : n : n]
	}
	set(event.HeaderMsgID, sh.id)
	set(event.HeaderSvixID, sh.id)
	// The canonical form of the timestamp: what the signature covers (the svix library signs the
	// parsed integer), and bounded, whatever leading zeros or sign the header had.
	set(event.HeaderSvixTimestamp, strconv.FormatInt(sh.ts.Unix(), 10))
	set(event.HeaderSvixSignature, sh.signature)
	set(event.HeaderEventType, env.Type)
	set(event.HeaderReceivedAt, now.UTC().Format(time.RFC3339Nano))
	if tp := r.Header.Get("Traceparent"); tp != "" && len(tp) <= maxTraceparentLen && printableASCII(tp) {
		set(event.HeaderTraceparent, tp)
	}
	msg := &nats.Msg{Subject: subject, Header: hdr, Data: body}

	pa, err := wh.publish(r.Context(), msg)
	if err != nil {
		return ack{}, err
	}
	if pa.Duplicate {
		wh.duplicates.Add(1)
	} else {
		wh.stored.Add(1)
	}
	// One line per webhook only at debug (an access log of 20,000 lines for 20,000 webhooks is
	// noise at info: summarize says how many every minute). LogAttrs: no interface boxing of the
	// attributes, which costs even when the level is disabled.
	wh.logger.LogAttrs(r.Context(), slog.LevelDebug, "webhook stored", slog.String("id", sh.id),
		slog.String("type", env.Type), slog.Uint64("stream_seq", pa.Sequence),
		slog.Bool("duplicate", pa.Duplicate), slog.Int("secret", secret))
	return ack{ID: sh.id, Duplicate: pa.Duplicate}, nil
}

// summarize logs, every interval until ctx ends, how many webhooks were stored in it (and how
// many were duplicates of stored ones), when there were any.
func (wh *webhooks) summarize(ctx context.Context, interval time.Duration) error {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		stored, duplicates := wh.stored.Swap(0), wh.duplicates.Swap(0)
		if stored+duplicates > 0 {
			wh.logger.Info("webhooks stored", "stored", stored, "duplicates", duplicates, "in", interval)
		}
	}
}

// readBody reads at most limit bytes of the body, whatever Content-Length says (or does not say,
// for a chunked body). It never undoes a Content-Encoding: the raw bytes are what Svix signed.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	if r.ContentLength > limit {
		return nil, fmt.Errorf("%w: Content-Length %d over %d", errPayloadTooLarge, r.ContentLength, limit)
	}
	var buf bytes.Buffer
	if r.ContentLength > 0 {
		buf.Grow(int(r.ContentLength) + bytes.MinRead)
	}
	// MaxBytesReader reads at most limit+1 bytes and has the server close the connection after
	// answering, rather than drain the rest.
	if _, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, limit)); err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return nil, fmt.Errorf("%w: over %d bytes", errPayloadTooLarge, limit)
		}
		return nil, fmt.Errorf("%w: %w", errUnreadableBody, err)
	}
	return buf.Bytes(), nil
}

// publish appends msg to the stream and waits for the PubAck, at most publishTimeout.
func (wh *webhooks) publish(ctx context.Context, msg *nats.Msg) (*jetstream.PubAck, error) {
	ctx, cancel := context.WithTimeout(ctx, wh.publishTimeout)
	defer cancel()
	start := time.Now()
	pa, err := wh.js.PublishMsg(ctx, msg)
	wh.metrics.observePublish(time.Since(start), err)
	if err != nil {
		return nil, fmt.Errorf("%w: publishing to %s: %w", errStreamUnavailable, msg.Subject, err)
	}
	return pa, nil
}

// refuse answers a refused request, counts it and logs why. The log holds the error, which never
// carries a secret, a signature or the body.
func (wh *webhooks) refuse(w http.ResponseWriter, r *http.Request, route string, err error) {
	p := problemFor(err)
	if p.status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", retryAfter)
	}
	wh.metrics.requests.WithLabelValues(route, strconv.Itoa(p.status), p.code).Inc()
	level := slog.LevelInfo
	if p.status >= http.StatusInternalServerError {
		level = slog.LevelError
	}
	wh.logger.Log(r.Context(), level, "request refused", "route", route, "method", r.Method,
		"status", p.status, "code", p.code, "err", err)
	service.WriteError(w, p.status, p.code, p.message)
}
