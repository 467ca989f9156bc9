// Command soak is the crash soak (`make soak`): it builds and runs ingest and worker against a
// NATS server and a private Postgres, sends signed webhooks while it kills them, and prints one
// summary line; it exits 1 when a promise broke. The work is in internal/soak.
//
//	soak [-webhooks N] [-users N] [-duration D] [-worker-kill MIN-MAX] ...
//	soak nats -store DIR -port N     the NATS server the soak runs as a child process
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/clerksync/clerksync/internal/soak"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "soak:", err)
		}
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "nats" {
		fs := flag.NewFlagSet("soak nats", flag.ContinueOnError)
		fs.SetOutput(stderr)
		store := fs.String("store", "", "JetStream store directory (required)")
		port := fs.Int("port", 0, "loopback port (required)")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if *store == "" || *port == 0 {
			return errors.New("nats: -store and -port are required")
		}
		return soak.ServeNATS(ctx, *store, *port)
	}

	cfg := soak.DefaultConfig()
	fs := flag.NewFlagSet("soak", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&cfg.Webhooks, "webhooks", cfg.Webhooks, "about this many webhooks, resends included")
	fs.IntVar(&cfg.Users, "users", cfg.Users, "users in the history (0: webhooks/10)")
	fs.Uint64Var(&cfg.Seed, "seed", cfg.Seed, "the history's seed")
	fs.DurationVar(&cfg.Duration, "duration", cfg.Duration, "spread the webhooks over this time")
	fs.IntVar(&cfg.Senders, "senders", cfg.Senders, "concurrent deliveries")
	fs.DurationVar(&cfg.Drain, "drain", cfg.Drain, "how long to wait for the worker to catch up at the end")
	fs.StringVar(&cfg.WorkDir, "dir", "", "keep binaries, stores and logs here (default: a temporary directory, removed after a pass)")
	for _, f := range []struct {
		name  string
		fault *soak.Fault
	}{
		{"worker-kill", &cfg.KillWorker},
		{"ingest-kill", &cfg.KillIngest},
		{"nats-kill", &cfg.KillNATS},
		{"postgres-crash", &cfg.CrashPostgres},
	} {
		fs.Var(faultFlag{f.fault}, f.name, "fault interval MIN-MAX (e.g. 5s-10s; 0 turns it off)")
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg.Progress = stderr
	res, err := soak.Run(ctx, cfg)
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintln(stdout, res); err != nil {
		return err
	}
	return res.Err()
}

// faultFlag parses "MIN-MAX" (or one duration, or 0 for off).
type faultFlag struct{ f *soak.Fault }

func (v faultFlag) String() string {
	if v.f == nil || v.f.Max == 0 {
		return "0"
	}
	return v.f.Min.String() + "-" + v.f.Max.String()
}

func (v faultFlag) Set(s string) error {
	lo, hi, found := strings.Cut(s, "-")
	if !found {
		hi = lo
	}
	min, err := time.ParseDuration(lo)
	if err != nil {
		return err
	}
	max, err := time.ParseDuration(hi)
	if err != nil {
		return err
	}
	if max < min {
		return fmt.Errorf("%s: the maximum is below the minimum", s)
	}
	v.f.Min, v.f.Max = min, max
	return nil
}
