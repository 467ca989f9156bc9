package soak

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/clerksync/clerksync/internal/api"
	"github.com/clerksync/clerksync/internal/clerkgen"
	"github.com/clerksync/clerksync/internal/event/eventtest"
	"github.com/clerksync/clerksync/internal/ingest"
	"github.com/clerksync/clerksync/internal/postgres/postgrestest"
	"github.com/clerksync/clerksync/internal/service"
	"github.com/clerksync/clerksync/internal/session/sessiontest"
	"github.com/clerksync/clerksync/internal/worker"
)

// TestStartStopTenTimes starts each service through Run, waits until it is ready and stops it,
// ten times on the same address: every stop returns nil promptly and frees the port, and (with
// goleak in TestMain) leaves no goroutine behind.
func TestStartStopTenTimes(t *testing.T) {
	t.Parallel()
	natsURL := eventtest.NewServer(t).URL()
	dbURL := postgrestest.NewDatabase(t)
	key := sessiontest.NewKey(t)
	services := []struct {
		name string
		run  func(t *testing.T, ln net.Listener) (stop func() error)
	}{
		{"ingest", starter(ingest.Run, map[string]string{"NATS_URL": natsURL, "CLERK_WEBHOOK_SECRET": clerkgen.NewSecret()})},
		{"worker", starter(worker.Run, map[string]string{"NATS_URL": natsURL, "DATABASE_URL": dbURL, "WORKER_FETCH_WAIT": "200ms"})},
		{"api", starter(api.Run, map[string]string{"DATABASE_URL": dbURL, "CLERK_JWT_KEY": sessiontest.PublicKeyPEM(t, key.Public())})},
	}
	for _, svc := range services {
		t.Run(svc.name, func(t *testing.T) {
			t.Parallel()
			addr := "127.0.0.1:0"
			for i := range 10 {
				ln, err := net.Listen("tcp", addr)
				if err != nil {
					t.Fatalf("start %d: the address of the last run is not free: %v", i+1, err)
				}
				addr = ln.Addr().String()
				stop := svc.run(t, ln)
				waitStatus(t, "http://"+addr+"/readyz", http.StatusOK)
				if err := stop(); err != nil {
					t.Fatalf("stop %d: %v", i+1, err)
				}
			}
		})
	}
}

// starter returns a function that runs a service on ln and a function that stops it and
// reports how Run returned.
func starter[C any](run func(context.Context, C, *slog.Logger, net.Listener) error, env map[string]string) func(*testing.T, net.Listener) func() error {
	return func(t *testing.T, ln net.Listener) func() error {
		t.Helper()
		cfg, err := service.ParseEnv[C](func(k string) string { return env[k] })
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.WithoutCancel(t.Context()))
		done := make(chan error, 1)
		go func() { done <- run(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), ln) }()
		return func() error {
			cancel()
			select {
			case err := <-done:
				return err
			case <-time.After(15 * time.Second):
				return fmt.Errorf("Run did not return within 15s of its context ending")
			}
		}
	}
}
