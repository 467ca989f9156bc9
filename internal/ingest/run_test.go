package ingest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/clerksync/clerksync/internal/event"
	"github.com/clerksync/clerksync/internal/event/eventtest"
	"github.com/clerksync/clerksync/internal/service"
)

// started is ingest running through Run on a :0 listener.
type started struct {
	url  string
	done chan error
	stop context.CancelFunc
	logs *syncBuffer
}

func start(t *testing.T, env map[string]string) *started {
	t.Helper()
	cfg, err := service.ParseEnv[Config](func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(t.Context())
	s := &started{url: "http://" + ln.Addr().String(), done: make(chan error, 1), stop: stop, logs: &syncBuffer{}}
	logger := slog.New(slog.NewJSONHandler(s.logs, nil))
	go func() { s.done <- Run(ctx, cfg, logger, ln) }()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("ingest's logs:\n%s", s.logs)
		}
		stop()
		select {
		case <-s.done:
		case <-time.After(20 * time.Second):
			t.Error("Run did not return after its context ended")
		}
	})
	return s
}

// get returns the status and body of GET path.
func (s *started) get(t *testing.T, path string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, s.url+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// waitReady polls /readyz until it answers 200.
func (s *started) waitReady(t *testing.T) {
	t.Helper()
	var status int
	var body string
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if status, body = s.get(t, "/readyz"); status == http.StatusOK {
			return
		}
	}
	t.Fatalf("/readyz never became ready: %d %s", status, body)
}

// post sends a webhook signed now with secret.
func (s *started) post(t *testing.T, secret string, body []byte) answer {
	t.Helper()
	id := newID()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, s.url+routeWebhooks, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	req.Header.Set("Svix-Id", id)
	req.Header.Set("Svix-Timestamp", strconv.FormatInt(now.Unix(), 10))
	req.Header.Set("Svix-Signature", signature(t, secret, id, now, body))
	a := send(t, req)
	if a.status == http.StatusOK && a.ack.ID != id {
		t.Fatalf("ack for %q, want %q", a.ack.ID, id)
	}
	return a
}

// TestRun goes end to end through Run: ready, a webhook from each secret of a rotation stored,
// the ops routes, metrics, and a graceful stop.
func TestRun(t *testing.T) {
	t.Parallel()
	srv := eventtest.NewServer(t)
	s := start(t, map[string]string{
		"NATS_URL":             srv.URL(),
		"CLERK_WEBHOOK_SECRET": rotatedSecret + " , " + testSecret,
		"PUBLISH_TIMEOUT":      "2s",
	})
	s.waitReady(t)

	body := readFile(t, "user.created.json")
	for _, secret := range []string{testSecret, testSecret, rotatedSecret} {
		if a := s.post(t, secret, body); a.status != http.StatusOK || a.ack.Duplicate {
			t.Fatalf("webhook: %d %s", a.status, a.code)
		}
	}
	_, js := eventtest.Connect(t, srv.URL())
	stream, err := js.Stream(t.Context(), event.Stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 3 {
		t.Errorf("stream holds %d messages, want 3", info.State.Msgs)
	}
	if d := info.Config.Duplicates; d != 10*time.Minute {
		t.Errorf("stream duplicate window %s, want the default 10m", d)
	}

	if status, body := s.get(t, "/healthz"); status != http.StatusOK {
		t.Errorf("/healthz: %d %s", status, body)
	}
	status, metrics := s.get(t, "/metrics")
	if status != http.StatusOK {
		t.Fatalf("/metrics: %d", status)
	}
	for _, want := range []string{
		`clerksync_ingest_secret_matches_total{secret="0"} 1`,
		`clerksync_ingest_secret_matches_total{secret="1"} 2`,
		`clerksync_ingest_requests_total{code="stored",route="/webhooks/clerk",status="200"} 3`,
		`clerksync_ingest_publish_duration_seconds_count{result="ok"} 3`,
		`clerksync_ingest_nats_server_supported 1`, // the embedded server is current
		`go_goroutines`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, s.url+"/healthz", nil)
	if err != nil {
		t.Fatal(err)
	}
	if a := send(t, req); a.status != http.StatusMethodNotAllowed || a.code != "method_not_allowed" {
		t.Errorf("POST /healthz: %d %q, want 405 method_not_allowed", a.status, a.code)
	}
	if status, _ := s.get(t, "/nope"); status != http.StatusNotFound {
		t.Errorf("GET /nope: %d, want 404", status)
	}

	s.stop()
	select {
	case err := <-s.done:
		if err != nil {
			t.Errorf("Run after a graceful stop: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
	s.done <- nil // for the cleanup

	// Every line is JSON, and none holds a secret or a signature.
	for line := range strings.Lines(s.logs.String()) {
		if !json.Valid([]byte(line)) {
			t.Errorf("log line is not JSON: %s", line)
		}
		for _, secret := range []string{testSecret, rotatedSecret, strings.TrimPrefix(testSecret, "whsec_")} {
			if strings.Contains(line, secret) {
				t.Errorf("log line holds a secret: %s", line)
			}
		}
	}
}

// TestRunWaitsForNATS: with NATS down at start, ingest serves at once, is not ready, answers 503;
// once NATS is up it creates the stream and accepts webhooks, without a restart.
func TestRunWaitsForNATS(t *testing.T) {
	t.Parallel()
	srv := eventtest.NewServer(t)
	srv.Shutdown()
	s := start(t, map[string]string{
		"NATS_URL":             srv.URL(),
		"CLERK_WEBHOOK_SECRET": testSecret,
	})
	body := readFile(t, "user.created.json")

	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, s.url+"/healthz", nil)
		if err != nil {
			t.Fatal(err)
		}
		if resp, err := http.DefaultClient.Do(req); err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("/healthz never answered while NATS was down")
		}
	}
	if status, body := s.get(t, "/readyz"); status != http.StatusServiceUnavailable {
		t.Errorf("/readyz with NATS down: %d %s, want 503", status, body)
	}
	if a := s.post(t, testSecret, body); a.status != http.StatusServiceUnavailable || a.code != "stream_unavailable" {
		t.Errorf("webhook with NATS down: %d %q, want 503 stream_unavailable", a.status, a.code)
	}

	srv.Start()
	s.waitReady(t)
	if a := s.post(t, testSecret, body); a.status != http.StatusOK {
		t.Errorf("webhook once NATS is up: %d %q, want 200", a.status, a.code)
	}
}

// TestRunRecreatesLostStream: when NATS comes back without its stream (a new, empty server),
// ingest ensures the stream again on reconnect.
func TestRunRecreatesLostStream(t *testing.T) {
	t.Parallel()
	srv := eventtest.NewServer(t)
	s := start(t, map[string]string{"NATS_URL": srv.URL(), "CLERK_WEBHOOK_SECRET": testSecret})
	s.waitReady(t)

	nc, js := eventtest.Connect(t, srv.URL())
	if err := js.DeleteStream(t.Context(), event.Stream); err != nil {
		t.Fatal(err)
	}
	nc.Close()
	srv.Shutdown()
	srv.Start()
	s.waitReady(t)
	if a := s.post(t, testSecret, readFile(t, "user.created.json")); a.status != http.StatusOK {
		t.Errorf("webhook after the stream was lost: %d %q, want 200", a.status, a.code)
	}
}

// TestRunRefusesSmallMaxPayload: a body limit the server cannot carry stops ingest with a clear
// error, once it has reached NATS.
func TestRunRefusesSmallMaxPayload(t *testing.T) {
	t.Parallel()
	srv := eventtest.NewServer(t)
	s := start(t, map[string]string{
		"NATS_URL":               srv.URL(),
		"CLERK_WEBHOOK_SECRET":   testSecret,
		"WEBHOOK_MAX_BODY_BYTES": strconv.Itoa(1 << 20), // natsembed's max_payload
	})
	select {
	case err := <-s.done:
		if !errors.Is(err, errNoRoom) || !strings.Contains(err.Error(), "WEBHOOK_MAX_BODY_BYTES=1048576") {
			t.Errorf("Run: %v, want the max_payload error naming WEBHOOK_MAX_BODY_BYTES", err)
		}
		s.done <- nil
	case <-time.After(20 * time.Second):
		t.Fatal("Run still running with a body limit over the server's max_payload")
	}
}

func TestConfig(t *testing.T) {
	t.Parallel()
	cfg, err := service.ParseEnv[Config](func(k string) string {
		return map[string]string{"CLERK_WEBHOOK_SECRET": testSecret + "," + rotatedSecret}[k]
	})
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		NATSURL:        "nats://127.0.0.1:4222",
		Addr:           ":8080",
		WebhookSecrets: Secrets{testSecret, rotatedSecret},
		MaxBodyBytes:   262144,
		PublishTimeout: 5 * time.Second,
		Stream:         event.StreamConfig{Replicas: 1, DuplicateWindow: 10 * time.Minute},
	}
	if diff := cmp.Diff(want, cfg); diff != "" {
		t.Errorf("defaults (-want +got)\n%s", diff)
	}

	// However a Config is printed or logged, the secrets stay out.
	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("config", "cfg", cfg, "secrets", cfg.WebhookSecrets)
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, out := range []string{fmt.Sprint(cfg), fmt.Sprintf("%+v", cfg), fmt.Sprintf("%#v", cfg), fmt.Sprintf("%v", cfg.WebhookSecrets), logged.String(), string(b)} {
		if strings.Contains(out, "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw") || strings.Contains(out, "Y2xlcmtzeW5j") {
			t.Errorf("a secret shows in %s", out)
		}
	}

	_, err = service.ParseEnv[Config](func(string) string { return "" })
	if err == nil || !strings.Contains(err.Error(), "CLERK_WEBHOOK_SECRET") {
		t.Errorf("without CLERK_WEBHOOK_SECRET: %v, want an error naming it", err)
	}
}

func TestRunRefusesBadConfig(t *testing.T) {
	t.Parallel()
	base := Config{NATSURL: "nats://127.0.0.1:1", Addr: "127.0.0.1:0", WebhookSecrets: Secrets{testSecret}, MaxBodyBytes: 1024, PublishTimeout: time.Second}
	tests := []struct {
		name   string
		change func(*Config)
		want   string
	}{
		{"secret not base64", func(c *Config) { c.WebhookSecrets = Secrets{"whsec_s3cr3t!value"} }, "config: CLERK_WEBHOOK_SECRET: secret 1 of 1 is not whsec_ followed by base64"},
		{"no body", func(c *Config) { c.MaxBodyBytes = 0 }, "config: WEBHOOK_MAX_BODY_BYTES must be positive, got 0"},
		{"no publish time", func(c *Config) { c.PublishTimeout = 0 }, "config: PUBLISH_TIMEOUT must be positive, got 0s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := base
			tt.change(&cfg)
			err := Run(t.Context(), cfg, slog.New(slog.DiscardHandler), nil)
			if err == nil || err.Error() != tt.want {
				t.Errorf("Run: %v, want %q", err, tt.want)
			}
		})
	}
}
