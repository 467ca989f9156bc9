// Command dev runs the whole clerksync stack in one process for development, and plays Clerk
// against it: `send` posts a signed webhook, `token` mints a session token. It only wires
// arguments and logging to internal/devstack, where the work is.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/clerksync/clerksync/internal/devstack"
	"github.com/clerksync/clerksync/internal/service"
)

const usage = `usage:
  go run ./cmd/dev [--data DIR] [--nats-port N] [--postgres-port N]
      run NATS, Postgres, ingest, worker and api until Ctrl-C
  go run ./cmd/dev send <event type> [--user ID] [--org ID] [--role R] [--file payload.json] [--data DIR]
      sign a sample Clerk event (or the file) with the dev secret and post it to ingest:
      user.created|updated|deleted, organization.created|updated|deleted,
      organizationMembership.created|updated|deleted (of --user in --org)
  go run ./cmd/dev token [--user ID] [--org ID] [--data DIR]
      print a session token for the user that the dev api accepts (--org: its active organization)
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "dev:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	cmd := ""
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "":
		return up(ctx, args, getenv, stdout)
	case "send":
		return send(ctx, args, stdout)
	case "token":
		return token(args, stdout)
	case "help":
		_, err := fmt.Fprint(stdout, usage)
		return err
	default:
		return fmt.Errorf("unknown command %q: want send or token (go run ./cmd/dev help)", cmd)
	}
}

func up(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	fs := flagSet("dev")
	dir := fs.String("data", ".data", "directory for the state, the NATS store and the Postgres cluster")
	natsPort := fs.Int("nats-port", devstack.NATSPort, "port of the embedded NATS server, when free (0: any)")
	pgPort := fs.Int("postgres-port", devstack.PostgresPort, "port of the private Postgres cluster, when free (0: any)")
	if rest, err := parse(fs, args, stdout); err != nil || rest == nil {
		return err
	} else if len(rest) > 0 {
		return fmt.Errorf("unexpected arguments %q (go run ./cmd/dev help)", rest)
	}
	logging, err := service.ParseEnv[service.Logging](getenv)
	if err != nil {
		return err
	}
	logger, err := service.NewLogger(stdout, logging)
	if err != nil {
		return err
	}
	slog.SetDefault(logger)
	return devstack.Up(ctx, devstack.Options{
		DataDir:      *dir,
		NATSPort:     *natsPort,
		PostgresPort: *pgPort,
		Getenv:       getenv,
		Stdout:       stdout,
		JSON:         strings.EqualFold(logging.Format, "json"),
	}, logger)
}

func send(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flagSet("send")
	var o devstack.SendOptions
	fs.StringVar(&o.DataDir, "data", ".data", "the dev stack's data directory")
	fs.StringVar(&o.UserID, "user", "", "the Clerk user id (default: new for user.created, else the last one sent)")
	fs.StringVar(&o.File, "file", "", "send this payload as it is")
	fs.StringVar(&o.OrgID, "org", "", "the Clerk organization id (default: new for organization.created, else the last one sent)")
	fs.StringVar(&o.Role, "role", "", "a membership's role (default org:admin on create, org:member on update)")
	rest, err := parse(fs, args, stdout)
	if err != nil || rest == nil {
		return err
	}
	switch {
	case len(rest) == 1:
		o.Type = rest[0]
	case len(rest) > 1 || o.File == "":
		return errors.New("send takes one event type, e.g. send user.created (go run ./cmd/dev help)")
	}
	sent, err := devstack.Send(ctx, o, time.Now())
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintf(stdout, "svix-id   %s\ntype      %s\n", sent.MessageID, sent.Type); err != nil {
		return err
	}
	if sent.UserID != "" {
		if _, err := fmt.Fprintf(stdout, "user      %s\n", sent.UserID); err != nil {
			return err
		}
	}
	if sent.OrgID != "" {
		if _, err := fmt.Fprintf(stdout, "org       %s\n", sent.OrgID); err != nil {
			return err
		}
	}
	if _, err := fmt.Fprintf(stdout, "response  %d %s\n%s\n", sent.Response.StatusCode,
		http.StatusText(sent.Response.StatusCode), strings.TrimSpace(string(sent.Response.Body))); err != nil {
		return err
	}
	if sent.Response.StatusCode != http.StatusOK {
		return fmt.Errorf("ingest answered %d", sent.Response.StatusCode)
	}
	return nil
}

func token(args []string, stdout io.Writer) error {
	fs := flagSet("token")
	dir := fs.String("data", ".data", "the dev stack's data directory")
	user := fs.String("user", "", "the Clerk user id (default: the last one sent)")
	org := fs.String("org", "", "make this organization the session's active one (a v2 token's o claim)")
	if rest, err := parse(fs, args, stdout); err != nil || rest == nil {
		return err
	} else if len(rest) > 0 {
		return fmt.Errorf("unexpected arguments %q (go run ./cmd/dev help)", rest)
	}
	tok, _, err := devstack.Token(*dir, *user, *org, time.Now())
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, tok)
	return err
}

func flagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

// parse parses flags wherever they are among the arguments (send user.created --user U) and
// returns the others. After -h it prints the usage and returns nil, nil.
func parse(fs *flag.FlagSet, args []string, stdout io.Writer) ([]string, error) {
	rest := []string{}
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				_, err := fmt.Fprint(stdout, usage)
				return nil, err
			}
			return nil, fmt.Errorf("%w (go run ./cmd/dev help)", err)
		}
		if fs.NArg() == 0 {
			return rest, nil
		}
		rest = append(rest, fs.Arg(0))
		args = fs.Args()[1:]
	}
}
