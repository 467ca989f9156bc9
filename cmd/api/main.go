// Command api answers the frontend's reads (GET /auth/me) for callers with a Clerk session
// token. It only wires configuration and logging to internal/api, where the work is.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/clerksync/clerksync/internal/api"
	"github.com/clerksync/clerksync/internal/service"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "api:", err)
		os.Exit(1)
	}
}

const about = `api answers the frontend's reads (GET /auth/me) for callers with a Clerk session token (an
Authorization: Bearer header or the __session cookie), verified against the instance's keys before
the database is touched. It is configured from the environment.`

func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	if done, err := service.HelpOrVersion(args, stdout, "api", about, &api.Config{}, &service.Logging{}); done || err != nil {
		return err
	}
	if len(args) > 0 {
		return fmt.Errorf("unexpected arguments %q: api is configured from the environment (api --help lists it)", args)
	}
	logging, err := service.ParseEnv[service.Logging](getenv)
	if err != nil {
		return err
	}
	cfg, err := service.ParseEnv[api.Config](getenv)
	if err != nil {
		return err
	}
	logger, err := service.NewLogger(stdout, logging)
	if err != nil {
		return err
	}
	slog.SetDefault(logger)
	return api.Run(ctx, cfg, logger, nil)
}
