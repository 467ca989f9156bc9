// Package eventtest runs a real NATS server with JetStream for tests: in-process through
// natsembed on a random loopback port with its store in t.TempDir(), or the server at
// TEST_NATS_URL when set. Only tests may import it.
package eventtest

import (
	"context"
	"net"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/clerksync/clerksync/internal/event"
	"github.com/clerksync/clerksync/internal/natsembed"
)

// Server is an embedded NATS server that a test can stop and start again on the same port and
// store, to play an outage.
type Server struct {
	t    testing.TB
	opts natsembed.Options
	srv  *server.Server
}

// NewServer starts an embedded JetStream server, shut down when the test ends.
func NewServer(t testing.TB) *Server {
	t.Helper()
	s := &Server{t: t, opts: natsembed.Options{StoreDir: t.TempDir()}}
	s.Start()
	// Keep the port it picked so a restart comes back at the same URL.
	_, port, _ := net.SplitHostPort(s.srv.Addr().String())
	s.opts.Port, _ = strconv.Atoi(port)
	t.Cleanup(s.Shutdown)
	return s
}

// URL is the client URL of the server.
func (s *Server) URL() string { return s.srv.ClientURL() }

// Start starts the server (again, after Shutdown) on the same port and store.
func (s *Server) Start() {
	s.t.Helper()
	var err error
	for range 50 { // the port may linger briefly after a shutdown
		if s.srv, err = natsembed.Start(s.opts); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.t.Fatalf("eventtest: starting nats: %v", err)
}

// Shutdown stops the server and waits until it is gone.
func (s *Server) Shutdown() {
	if s.srv != nil {
		s.srv.Shutdown()
		s.srv.WaitForShutdown()
	}
}

// URL returns a NATS URL for the test: TEST_NATS_URL when set, else a fresh embedded server.
func URL(t testing.TB) string {
	t.Helper()
	if u := os.Getenv("TEST_NATS_URL"); u != "" {
		return u
	}
	return NewServer(t).URL()
}

// Connect connects to url with the stream ensured, closing the connection when the test ends.
func Connect(t testing.TB, url string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatalf("eventtest: connecting: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("eventtest: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := event.EnsureStream(ctx, js, event.StreamConfig{}); err != nil {
		t.Fatalf("eventtest: %v", err)
	}
	return nc, js
}
