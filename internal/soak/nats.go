package soak

import (
	"context"
	"fmt"

	"github.com/clerksync/clerksync/internal/natsembed"
)

// natsServerName stays the same across restarts: JetStream ties its store to it.
const natsServerName = "clerksync-soak"

// ServeNATS runs the embedded NATS server (JetStream, sync_interval: always) on 127.0.0.1:port
// with its store in storeDir until ctx ends. The soak runs it as a child process of its own
// binary (`soak nats`), so that a fault can SIGKILL it and a restart recovers the store from
// disk — the machine's nats-server may be older than the contract allows.
func ServeNATS(ctx context.Context, storeDir string, port int) error {
	s, err := natsembed.Start(natsembed.Options{StoreDir: storeDir, Port: port, Name: natsServerName})
	if err != nil {
		return fmt.Errorf("soak: nats: %w", err)
	}
	<-ctx.Done()
	s.Shutdown()
	s.WaitForShutdown()
	return nil
}
