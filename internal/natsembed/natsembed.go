// Package natsembed starts an in-process NATS server with JetStream, configured as clerksync
// requires of every server it starts: file storage and sync_interval: always on a single node,
// because a PubAck is not an fsync otherwise. The dev stack and the tests use it; production
// deployments run nats-server itself.
package natsembed

import (
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Options says where the server keeps its store and which loopback port it takes (0: any free).
type Options struct {
	StoreDir string
	Host     string // default 127.0.0.1
	Port     int    // 0 picks a free port
	// Name is the server name; it must stay the same across restarts on one store.
	Name string
}

// Start starts a server and waits until it accepts connections.
func Start(o Options) (*server.Server, error) {
	if o.StoreDir == "" {
		return nil, errors.New("natsembed: StoreDir is required")
	}
	host := o.Host
	if host == "" {
		host = "127.0.0.1"
	}
	port := o.Port
	if port == 0 {
		port = server.RANDOM_PORT
	}
	name := o.Name
	if name == "" {
		name = "clerksync-embedded"
	}
	s, err := server.NewServer(&server.Options{
		ServerName:             name,
		Host:                   host,
		Port:                   port,
		JetStream:              true,
		StoreDir:               o.StoreDir,
		SyncAlways:             true,
		NoSigs:                 true,
		NoLog:                  true,
		DisableJetStreamBanner: true,
		MaxPayload:             1 << 20,
	})
	if err != nil {
		return nil, fmt.Errorf("natsembed: %w", err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return nil, errors.New("natsembed: server not ready within 10s")
	}
	return s, nil
}
