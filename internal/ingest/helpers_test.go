package ingest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	svix "github.com/svix/svix-webhooks/go"

	"github.com/clerksync/clerksync/internal/event"
	"github.com/clerksync/clerksync/internal/event/eventtest"
	"github.com/clerksync/clerksync/internal/service"
)

// Secrets the tests play Clerk with. testSecret is the one of Svix's known-answer vector.
const (
	testSecret    = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	rotatedSecret = "whsec_Y2xlcmtzeW5jLXRlc3Qtc2VjcmV0LXJvdGF0ZWQtbmV3IQ=="
	unknownSecret = "whsec_Y2xlcmtzeW5jLXRlc3QtdW5rbm93bi1zZWNyZXQtMDAw"
)

// testNow is the handler's clock in the tests that do not go through Run.
var testNow = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

type options struct {
	secrets        []string
	maxBody        int64
	publishTimeout time.Duration
	now            time.Time
	proxied        bool
}

func withSecrets(s ...string) func(*options) { return func(o *options) { o.secrets = s } }
func withMaxBody(n int64) func(*options)     { return func(o *options) { o.maxBody = n } }
func withPublishTimeout(d time.Duration) func(*options) {
	return func(o *options) { o.publishTimeout = d }
}
func withNow(t time.Time) func(*options) { return func(o *options) { o.now = t } }

// withProxy puts a blackhole between ingest and NATS, to play a partition.
func withProxy() func(*options) { return func(o *options) { o.proxied = true } }

// fixture is ingest's handler on an httptest server, publishing to its own embedded NATS server
// through a connection made exactly as Run makes it.
type fixture struct {
	nats    *eventtest.Server
	proxy   *blackhole       // with withProxy
	stream  jetstream.Stream // read side, on a separate connection
	url     string
	handler http.Handler
	wh      *webhooks
	logs    *syncBuffer
	reg     *prometheus.Registry
	opts    options

	mu     sync.Mutex
	secret []string // signatures and bodies sent, which the logs must never hold
}

func setup(t testing.TB, opts ...func(*options)) *fixture {
	t.Helper()
	o := options{
		secrets:        []string{testSecret},
		maxBody:        256 << 10,
		publishTimeout: 5 * time.Second,
		now:            testNow,
	}
	for _, opt := range opts {
		opt(&o)
	}
	srv := eventtest.NewServer(t)
	_, readJS := eventtest.Connect(t, srv.URL()) // ensures the stream
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	stream, err := readJS.Stream(ctx, event.Stream)
	if err != nil {
		t.Fatal(err)
	}

	logs := &syncBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	natsURL := srv.URL()
	var proxy *blackhole
	if o.proxied {
		proxy = newBlackhole(t, natsURL)
		natsURL = proxy.url()
	}
	nc, err := connect(natsURL, logger, make(chan struct{}, 1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	v, err := newVerifier(o.secrets)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	wh := &webhooks{
		js:             js,
		verifier:       v,
		maxBody:        o.maxBody,
		publishTimeout: o.publishTimeout,
		now:            func() time.Time { return o.now },
		logger:         logger,
		metrics:        newMetrics(reg, len(o.secrets)),
	}
	h := newHandler(wh, reg, probes(nc, js))
	hs := httptest.NewServer(h)
	t.Cleanup(hs.Close)

	f := &fixture{nats: srv, proxy: proxy, stream: stream, url: hs.URL, handler: h, wh: wh, logs: logs, reg: reg, opts: o}
	// Whatever the test did, the logs hold no secret, signature or body.
	t.Cleanup(func() {
		out := logs.String()
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, s := range append(f.secret, o.secrets...) {
			if strings.Contains(out, s) {
				t.Errorf("logs hold a secret, signature or body: %.40q…", s)
			}
		}
	})
	return f
}

// remember notes a string the logs must never hold.
func (f *fixture) remember(s string) {
	if len(s) < 8 { // too short to be told apart from ordinary log text
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.secret = append(f.secret, s)
}

// signature signs (id, ts, body) as Svix does with secret.
func signature(t testing.TB, secret, id string, ts time.Time, body []byte) string {
	t.Helper()
	wh, err := svix.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := wh.Sign(id, ts, body)
	if err != nil {
		t.Fatal(err)
	}
	return sig
}

// newID returns a fresh svix-id.
func newID() string { return "msg_" + rand.Text() }

// request returns a POST of body to path, signed with the fixture's first secret at its clock,
// with a fresh svix-id.
func (f *fixture) request(t testing.TB, path string, body []byte) *http.Request {
	t.Helper()
	return f.signedRequest(t, path, f.opts.secrets[0], newID(), f.opts.now, body)
}

func (f *fixture) signedRequest(t testing.TB, path, secret, id string, ts time.Time, body []byte) *http.Request {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, f.url+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	sig := signature(t, secret, id, ts, body)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Svix-Id", id)
	req.Header.Set("Svix-Timestamp", strconv.FormatInt(ts.Unix(), 10))
	req.Header.Set("Svix-Signature", sig)
	f.remember(sig)
	f.remember(strings.TrimPrefix(sig, "v1,"))
	f.remember(string(body))
	return req
}

// answer is a response, decoded.
type answer struct {
	status int
	header http.Header
	ack    ack    // a 200's body
	code   string // an error's code
}

// send sends req and decodes the answer strictly: a 200 is exactly {"id","duplicate"}, anything
// else the contract's error body.
func send(t testing.TB, req *http.Request) answer {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return decode(t, resp.StatusCode, resp.Header, b)
}

func decode(t testing.TB, status int, header http.Header, b []byte) answer {
	t.Helper()
	a := answer{status: status, header: header}
	if ct := header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("status %d: Content-Type %q, want application/json; body %q", status, ct, b)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if status == http.StatusOK {
		if err := dec.Decode(&a.ack); err != nil {
			t.Fatalf("status 200: body %q: %v", b, err)
		}
		return a
	}
	var eb service.ErrorBody
	if err := dec.Decode(&eb); err != nil || eb.Error.Code == "" || eb.Error.Message == "" {
		t.Fatalf("status %d: body %q is not the error shape (%v)", status, b, err)
	}
	a.code = eb.Error.Code
	return a
}

// msgs returns how many messages the stream holds, waiting out a reconnect of the read side.
func (f *fixture) msgs(t testing.TB) uint64 {
	t.Helper()
	var lastErr error
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		info, err := f.stream.Info(ctx)
		cancel()
		if err == nil {
			return info.State.Msgs
		}
		lastErr = err
	}
	t.Fatalf("stream info: %v", lastErr)
	return 0
}

// stored returns the stream's message with sequence seq.
func (f *fixture) stored(t testing.TB, seq uint64) *jetstream.RawStreamMsg {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	m, err := f.stream.GetMsg(ctx, seq)
	if err != nil {
		t.Fatalf("stream message %d: %v", seq, err)
	}
	return m
}

// counter returns the value of the counter name with exactly labels, 0 when absent.
func counter(t testing.TB, reg prometheus.Gatherer, name string, labels map[string]string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, fam := range families {
		if fam.GetName() != name {
			continue
		}
	metrics:
		for _, m := range fam.GetMetric() {
			if len(m.GetLabel()) != len(labels) {
				continue
			}
			for _, l := range m.GetLabel() {
				if labels[l.GetName()] != l.GetValue() {
					continue metrics
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

func readFile(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// syncBuffer is a bytes.Buffer safe for the logger's concurrent writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// blackhole is a TCP proxy that can stop passing bytes without closing anything, as a network
// partition does: the connection looks alive, and no answer ever comes back.
type blackhole struct {
	ln       net.Listener
	upstream string

	mu     sync.Mutex
	cond   *sync.Cond
	frozen bool
	conns  []net.Conn
}

func newBlackhole(t testing.TB, upstream string) *blackhole {
	t.Helper()
	u, err := url.Parse(upstream)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &blackhole{ln: ln, upstream: u.Host}
	b.cond = sync.NewCond(&b.mu)
	var wg sync.WaitGroup
	t.Cleanup(func() {
		_ = ln.Close()
		b.cut()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			client, err := ln.Accept()
			if err != nil {
				return
			}
			server, err := net.Dial("tcp", b.upstream) //nolint:noctx // a loopback dial in the proxy's accept loop, which ends when its listener closes
			if err != nil {
				_ = client.Close()
				continue
			}
			b.mu.Lock()
			b.conns = append(b.conns, client, server)
			b.mu.Unlock()
			wg.Go(func() { b.pipe(server, client) })
			wg.Go(func() { b.pipe(client, server) })
		}
	})
	return b
}

func (b *blackhole) url() string { return "nats://" + b.ln.Addr().String() }

func (b *blackhole) pipe(dst, src net.Conn) {
	defer func() { _ = dst.Close(); _ = src.Close() }()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			b.mu.Lock()
			for b.frozen {
				b.cond.Wait()
			}
			b.mu.Unlock()
			if _, err := dst.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// freeze stops every byte, both ways.
func (b *blackhole) freeze() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.frozen = true
}

// cut ends the partition by closing every connection, so what was held back is lost, and lets
// new connections through.
func (b *blackhole) cut() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range b.conns {
		_ = c.Close()
	}
	b.conns = nil
	b.frozen = false
	b.cond.Broadcast()
}
