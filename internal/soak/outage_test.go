package soak

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/clerksync/clerksync/internal/clerkgen"
	"github.com/clerksync/clerksync/internal/event"
	"github.com/clerksync/clerksync/internal/event/eventtest"
	"github.com/clerksync/clerksync/internal/ingest"
	"github.com/clerksync/clerksync/internal/service"
	"github.com/clerksync/clerksync/internal/worker"
)

// The outage tests run ingest and the worker in this process (through Run, as the dev stack
// does) against a real NATS server and a private Postgres cluster, and take one of them away
// while webhooks keep coming.

// TestPostgresOutageUnderLoad: with Postgres down, ingest answers every webhook 2xx at the first
// attempt (it never touches Postgres); the worker's /readyz fails and it spends no delivery
// attempt; after recovery it drains: nothing lost, no dead letters, the projection right.
func TestPostgresOutageUnderLoad(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	nsrv := eventtest.NewServer(t)
	pg := startTestPostgres(t)
	secret := clerkgen.NewSecret()
	ingestURL := runService(t, ingest.Run, map[string]string{
		"NATS_URL": nsrv.URL(), "CLERK_WEBHOOK_SECRET": secret, "PUBLISH_TIMEOUT": "2s",
	})
	workerURL := runService(t, worker.Run, map[string]string{
		"NATS_URL": nsrv.URL(), "DATABASE_URL": pg.url(),
	})
	waitStatus(t, workerURL+"/readyz", http.StatusOK)

	seed := uint64(time.Now().UnixNano())
	t.Logf("history seed %d", seed)
	h := clerkgen.NewHistory(clerkgen.DefaultHistoryOptions(seed, 60))
	want, err := expected(h)
	if err != nil {
		t.Fatal(err)
	}
	third := len(h.Events) / 3
	accepted := map[string]bool{}
	sendOnce := func(events []clerkgen.Event) {
		t.Helper()
		for _, e := range events {
			resp, err := clerkgen.Post(ctx, nil, ingestURL+"/webhooks/clerk", secret, e.ID, e.Body())
			if err != nil || resp.StatusCode != http.StatusOK {
				t.Fatalf("webhook %s: %v %d %s, want 200 at the first attempt", e.ID, err, resp.StatusCode, resp.Body)
			}
			accepted[e.ID] = true
		}
	}

	sendOnce(h.Events[:third])
	if err := pg.down(); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, workerURL+"/readyz", http.StatusServiceUnavailable)
	sendOnce(h.Events[third : 2*third])
	if err := pg.up(ctx); err != nil {
		t.Fatal(err)
	}
	sendOnce(h.Events[2*third:])
	waitStatus(t, workerURL+"/readyz", http.StatusOK)

	_, js := eventtest.Connect(t, nsrv.URL())
	res := Result{}
	if err := measure(ctx, &res, Config{Drain: time.Minute}, nsrv.URL(), pg.url(), accepted, want, testWriter{t}); err != nil {
		t.Fatal(err)
	}
	if res.Lost != 0 || res.DeadLetters != 0 || res.Pending != 0 || res.AppliedTwice != 0 || res.StoredTwice != 0 {
		t.Errorf("after the outage: lost %d, dead letters %d, pending %d, applied twice %d, stored twice %d; want 0 each",
			res.Lost, res.DeadLetters, res.Pending, res.AppliedTwice, res.StoredTwice)
	}
	for table, n := range res.RowDiffs {
		if n != 0 {
			t.Errorf("%d %s rows differ from the history's final state", n, table)
		}
	}
	// No attempt spent: every message was delivered once, whatever the outage.
	cons, err := js.Consumer(ctx, event.Stream, "clerk-users")
	if err != nil {
		t.Fatal(err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Delivered.Consumer != uint64(res.StreamMsgs) {
		t.Errorf("%d deliveries of %d messages: attempts were spent during the outage", info.Delivered.Consumer, res.StreamMsgs)
	}
}

// TestNATSOutageAnswers503: while NATS is down every webhook is answered 503 stream_unavailable
// with Retry-After, and afterwards the stream holds exactly one message per distinct svix-id
// that was answered 2xx.
func TestNATSOutageAnswers503(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	nsrv := eventtest.NewServer(t)
	secret := clerkgen.NewSecret()
	ingestURL := runService(t, ingest.Run, map[string]string{
		"NATS_URL": nsrv.URL(), "CLERK_WEBHOOK_SECRET": secret, "PUBLISH_TIMEOUT": "1s",
	})
	waitStatus(t, ingestURL+"/readyz", http.StatusOK)

	seed := uint64(time.Now().UnixNano())
	t.Logf("history seed %d", seed)
	o := clerkgen.DefaultHistoryOptions(seed, 40)
	o.ResendRatio = 0.2
	h := clerkgen.NewHistory(o)
	third := len(h.Events) / 3
	var mu sync.Mutex
	accepted := map[string]bool{}
	// deliver sends events concurrently, as Svix does, retrying each until it is answered 2xx.
	deliver := func(events []clerkgen.Event) {
		t.Helper()
		var wg sync.WaitGroup
		for _, e := range events {
			wg.Go(func() {
				for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
					resp, err := clerkgen.Post(ctx, nil, ingestURL+"/webhooks/clerk", secret, e.ID, e.Body())
					if err == nil && resp.StatusCode == http.StatusOK {
						mu.Lock()
						accepted[e.ID] = true
						mu.Unlock()
						return
					}
				}
				t.Errorf("webhook %s never answered 200", e.ID)
			})
		}
		wg.Wait()
	}

	deliver(h.Events[:third])
	nsrv.Shutdown()
	var wg sync.WaitGroup
	for _, e := range h.Events[third : 2*third] {
		wg.Go(func() {
			resp, err := clerkgen.Post(ctx, nil, ingestURL+"/webhooks/clerk", secret, e.ID, e.Body())
			switch {
			case err != nil:
				t.Errorf("webhook %s during the outage: %v", e.ID, err)
			case resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" ||
				!strings.Contains(string(resp.Body), `"stream_unavailable"`):
				t.Errorf("webhook %s during the outage: %d Retry-After %q %s, want 503 stream_unavailable with Retry-After",
					e.ID, resp.StatusCode, resp.Header.Get("Retry-After"), resp.Body)
			}
		})
	}
	wg.Wait()
	nsrv.Start()
	deliver(h.Events[third:])

	_, js := eventtest.Connect(t, nsrv.URL())
	stream, err := js.Stream(ctx, event.Stream)
	if err != nil {
		t.Fatal(err)
	}
	distinct := map[string]bool{}
	for _, e := range h.Events {
		distinct[e.ID] = true
	}
	if got, want := int(stream.CachedInfo().State.Msgs), len(accepted); got != want || want != len(distinct) {
		t.Errorf("stream holds %d messages for %d distinct svix-ids answered 2xx (of %d sent), want them equal",
			got, want, len(distinct))
	}
	ids := map[string]bool{}
	for seq := uint64(1); seq <= stream.CachedInfo().State.LastSeq; seq++ {
		m, err := stream.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		id := m.Header.Get(event.HeaderMsgID)
		if ids[id] || !accepted[id] {
			t.Errorf("stream message %d: svix-id %s stored twice or never answered 2xx", seq, id)
		}
		ids[id] = true
	}
}

// runService runs a service's Run with a configuration from env (the contract's defaults for
// the rest) on a loopback port until the test ends, and returns its base URL.
func runService[C any](t *testing.T, run func(context.Context, C, *slog.Logger, net.Listener) error, env map[string]string) string {
	t.Helper()
	cfg, err := service.ParseEnv[C](func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(t.Context()))
	done := make(chan error, 1)
	go func() { done <- run(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Error("Run did not return within 20s of its context ending")
		}
	})
	return "http://" + ln.Addr().String()
}

// startTestPostgres starts a private cluster that the test can take down and bring back.
func startTestPostgres(t *testing.T) *postgres {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{dir, filepath.Dir(dir)} {
		if err := os.Chmod(d, 0o755); err != nil { // the server runs as postgres when we are root
			t.Fatal(err)
		}
	}
	pg, err := startPostgres(t.Context(), filepath.Join(dir, "pg"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pg.stop)
	return pg
}

// waitStatus polls url until it answers want.
func waitStatus(t *testing.T, url string, want int) {
	t.Helper()
	var last string
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		resp, err := http.Get(url) //nolint:noctx // a test probe
		if err != nil {
			last = err.Error()
			continue
		}
		_ = resp.Body.Close()
		if resp.StatusCode == want {
			return
		}
		last = resp.Status
	}
	t.Fatalf("%s never answered %d (last: %s)", url, want, last)
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
