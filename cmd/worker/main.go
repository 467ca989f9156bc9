// Command worker folds the Clerk event stream into Postgres, replays it, and handles dead
// letters. It only wires flags, configuration and logging to internal/worker, where the work is.
//
//	worker [--no-migrate]                      run the durable consumer (also: worker run)
//	worker migrate                             apply the migrations and exit
//	worker replay --since RFC3339 | --from-seq N [--to-seq N] [--dry-run] [--reapply]
//	worker dead-letters list [--all] [--json]
//	worker dead-letters retry [ID]
//	worker reconcile [--dry-run] [--prune] [--kinds users,organizations,memberships]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/clerksync/clerksync/internal/service"
	"github.com/clerksync/clerksync/internal/worker"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		os.Exit(exitCode(err))
	}
}

// exitCode is 2 for a refusal the operator must look at (reconcile --prune would delete too
// much, or its sweep was incomplete), 1 for any other failure.
func exitCode(err error) int {
	if errors.Is(err, worker.ErrPruneRefused) {
		return 2
	}
	return 1
}

const usage = `usage:
  worker [run] [--no-migrate]      run the durable consumer
  worker migrate                   apply the migrations and exit
  worker replay --since RFC3339 | --from-seq N [--to-seq N] [--dry-run] [--reapply]
  worker dead-letters list [--all] [--json]
  worker dead-letters retry [ID]   re-apply one dead letter, or every pending one
  worker reconcile [--dry-run] [--prune] [--kinds users,organizations,memberships]
                                   snapshot every new or changed Clerk object into the stream
  worker --version                 the build: module version and VCS revision`

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 1 && (args[0] == "--version" || args[0] == "-version" || args[0] == "version") {
		_, err := fmt.Fprintln(stdout, service.Version("worker"))
		return err
	}
	logging, err := service.ParseEnv[service.Logging](getenv)
	if err != nil {
		return err
	}
	cfg, err := service.ParseEnv[worker.Config](getenv)
	if err != nil {
		return err
	}
	logger, err := service.NewLogger(stdout, logging)
	if err != nil {
		return err
	}
	slog.SetDefault(logger)
	if err := dispatch(ctx, cfg, args, logger, stdout, stderr, strings.EqualFold(logging.Format, "json")); !errors.Is(err, errHelp) {
		return err
	}
	return nil
}

func dispatch(ctx context.Context, cfg worker.Config, args []string, logger *slog.Logger, stdout, stderr io.Writer, jsonLogs bool) error {
	cmd := "run"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "run":
		fs := newFlagSet("worker")
		noMigrate := fs.Bool("no-migrate", false, "do not apply migrations at start")
		if err := parse(fs, args, stdout); err != nil {
			return err
		}
		cfg.NoMigrate = *noMigrate
		return worker.Run(ctx, cfg, logger, nil)
	case "migrate":
		if err := parse(newFlagSet("migrate"), args, stdout); err != nil {
			return err
		}
		return worker.Migrate(ctx, cfg, logger)
	case "replay":
		return replay(ctx, cfg, args, logger, stdout)
	case "dead-letters":
		return deadLetters(ctx, cfg, args, logger, stdout, jsonLogs)
	case "reconcile":
		return reconcile(ctx, cfg, args, logger, stdout, stderr)
	case "help":
		_, err := fmt.Fprintln(stdout, usage)
		return err
	default:
		return fmt.Errorf("unknown command %q\n%s", cmd, usage)
	}
}

func replay(ctx context.Context, cfg worker.Config, args []string, logger *slog.Logger, stdout io.Writer) error {
	fs := newFlagSet("replay")
	since := fs.String("since", "", "replay messages stored at or after this time (RFC 3339)")
	fromSeq := fs.Uint64("from-seq", 0, "replay from this stream sequence")
	toSeq := fs.Uint64("to-seq", 0, "stop after this stream sequence (default: the end of the stream)")
	dryRun := fs.Bool("dry-run", false, "report what would apply without writing")
	reapply := fs.Bool("reapply", false, "ignore processed_events and rewrite rows of equal version")
	if err := parse(fs, args, stdout); err != nil {
		return err
	}
	opts := worker.ReplayOptions{FromSeq: *fromSeq, ToSeq: *toSeq, DryRun: *dryRun, Reapply: *reapply}
	if *since != "" {
		t, err := time.Parse(time.RFC3339, *since)
		if err != nil {
			return fmt.Errorf("replay: --since %q: want RFC 3339, like 2025-01-02T15:04:05Z", *since)
		}
		opts.Since = t
	}
	_, err := worker.Replay(ctx, cfg, opts, logger)
	return err
}

// reconcile runs one sweep; progress and the summary go to stderr. Exit 0 only when the sweep
// completed (and, with --prune, pruned or had nothing to prune).
func reconcile(ctx context.Context, cfg worker.Config, args []string, logger *slog.Logger, stdout, stderr io.Writer) error {
	fs := newFlagSet("reconcile")
	dryRun := fs.Bool("dry-run", false, "read and compare, publish nothing")
	prune := fs.Bool("prune", false, "after a complete sweep, publish a delete for each live row Clerk no longer has (refused when that is more than half of them)")
	kinds := fs.String("kinds", strings.Join(worker.AllKinds, ","), "comma-separated kinds to sweep: users, organizations, memberships")
	if err := parse(fs, args, stdout); err != nil {
		return err
	}
	ks, err := worker.ParseKinds(*kinds)
	if err != nil {
		return fmt.Errorf("reconcile: %w", err)
	}
	if cfg.ClerkSecretKey == "" {
		return errors.New("reconcile: CLERK_SECRET_KEY is not set: set it to the secret key (sk_…) of the Clerk instance to read")
	}
	_, err = worker.Reconcile(ctx, cfg, worker.ReconcileOptions{DryRun: *dryRun, Prune: *prune, Kinds: ks, Progress: stderr}, logger)
	return err
}

func deadLetters(ctx context.Context, cfg worker.Config, args []string, logger *slog.Logger, stdout io.Writer, jsonLogs bool) error {
	if len(args) == 0 {
		return errors.New("dead-letters: want list or retry")
	}
	switch sub, args := args[0], args[1:]; sub {
	case "list":
		fs := newFlagSet("dead-letters list")
		all := fs.Bool("all", false, "include dead letters already retried")
		asJSON := fs.Bool("json", jsonLogs, "JSON lines instead of a table (default with LOG_FORMAT=json)")
		if err := parse(fs, args, stdout); err != nil {
			return err
		}
		dls, err := worker.ListDeadLetters(ctx, cfg, *all)
		if err != nil {
			return err
		}
		return worker.WriteDeadLetters(stdout, dls, *asJSON)
	case "retry":
		fs := newFlagSet("dead-letters retry")
		if err := parse(fs, args, stdout); err != nil {
			return err
		}
		var id int64
		switch fs.NArg() {
		case 0:
		case 1:
			n, err := strconv.ParseInt(fs.Arg(0), 10, 64)
			if err != nil || n < 1 {
				return fmt.Errorf("dead-letters retry: %q is not a dead letter id", fs.Arg(0))
			}
			id = n
		default:
			return errors.New("dead-letters retry: at most one id")
		}
		_, err := worker.RetryDeadLetters(ctx, cfg, id, logger)
		return err
	default:
		return fmt.Errorf("dead-letters: unknown command %q: want list or retry", sub)
	}
}

func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

// parse parses args; -h prints the flags and the usage to stdout and ends the command.
func parse(fs *flag.FlagSet, args []string, stdout io.Writer) error {
	err := fs.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		_, _ = fmt.Fprintln(stdout, usage)
		fs.SetOutput(stdout)
		fs.PrintDefaults()
		return errHelp
	}
	if err != nil {
		return fmt.Errorf("%s: %w", fs.Name(), err)
	}
	if fs.Name() != "dead-letters retry" && fs.NArg() > 0 {
		return fmt.Errorf("%s: unexpected arguments %q", fs.Name(), fs.Args())
	}
	return nil
}

// errHelp ends a command after -h without an error line.
var errHelp = errors.New("help shown")
