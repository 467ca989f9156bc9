// Command ingest receives Clerk's webhooks, verifies them and appends them to the JetStream
// stream. It only wires configuration and logging to internal/ingest, where the work is.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/clerksync/clerksync/internal/ingest"
	"github.com/clerksync/clerksync/internal/service"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "ingest:", err)
		os.Exit(1)
	}
}

const about = `ingest receives Clerk's webhooks (POST /webhooks/clerk, and /api/webhooks), verifies their Svix
signature against CLERK_WEBHOOK_SECRET and appends them, byte for byte, to the JetStream stream
CLERK; it answers 2xx only once JetStream has acknowledged the message. It is configured from the
environment.`

func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	if done, err := service.HelpOrVersion(args, stdout, "ingest", about, &ingest.Config{}, &service.Logging{}); done || err != nil {
		return err
	}
	if len(args) > 0 {
		return fmt.Errorf("unexpected arguments %q: ingest is configured from the environment (ingest --help lists it)", args)
	}
	logging, err := service.ParseEnv[service.Logging](getenv)
	if err != nil {
		return err
	}
	cfg, err := service.ParseEnv[ingest.Config](getenv)
	if err != nil {
		return err
	}
	logger, err := service.NewLogger(stdout, logging)
	if err != nil {
		return err
	}
	slog.SetDefault(logger)
	return ingest.Run(ctx, cfg, logger, nil)
}
