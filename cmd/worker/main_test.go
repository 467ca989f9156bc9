package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/clerksync/clerksync/internal/clerkapi/clerkapitest"
	"github.com/clerksync/clerksync/internal/event/eventtest"
	"github.com/clerksync/clerksync/internal/postgres/postgrestest"
	"github.com/clerksync/clerksync/internal/worker"
)

func TestRun(t *testing.T) {
	t.Parallel()
	dbURL := postgrestest.NewDatabase(t)
	env := func(vars map[string]string) func(string) string {
		return func(k string) string { return vars[k] }
	}
	withDB := env(map[string]string{"DATABASE_URL": dbURL, "LOG_LEVEL": "warn"})
	tests := []struct {
		name    string
		args    []string
		getenv  func(string) string
		wantErr string // "" for success
		wantOut string
	}{
		{"help", []string{"help"}, withDB, "", "worker replay --since"},
		{"version, even with a bad configuration", []string{"--version"}, env(map[string]string{"WORKER_BATCH_SIZE": "many"}), "", "worker "},
		{"-h prints the flags", []string{"replay", "-h"}, withDB, "", "-from-seq"},
		{"unknown command", []string{"frobnicate"}, withDB, `unknown command "frobnicate"`, ""},
		{"unknown flag", []string{"--frobnicate"}, withDB, "flag provided but not defined", ""},
		{"bad configuration", nil, env(map[string]string{"WORKER_BATCH_SIZE": "many"}), `config: WORKER_BATCH_SIZE "many": want an integer from 1 to 10000`, ""},
		{"bad duration", nil, env(map[string]string{"WORKER_ACK_WAIT": "30"}), `config: WORKER_ACK_WAIT "30": want a duration such as 500ms, 30s or 5m`, ""},
		{"out of range configuration", nil, env(map[string]string{"WORKER_BATCH_SIZE": "0", "DATABASE_URL": dbURL}), `config: WORKER_BATCH_SIZE "0": want an integer from 1 to 10000`, ""},
		{"bad log format", nil, env(map[string]string{"LOG_FORMAT": "xml"}), "LOG_FORMAT", ""},
		{"migrate", []string{"migrate"}, withDB, "", ""},
		{"replay needs a start", []string{"replay"}, withDB, "exactly one of --since and --from-seq", ""},
		{"replay --since must be RFC 3339", []string{"replay", "--since", "yesterday"}, withDB, "want RFC 3339", ""},
		{"dead-letters needs a command", []string{"dead-letters"}, withDB, "want list or retry", ""},
		{"dead-letters list", []string{"dead-letters", "list"}, withDB, "", "(no dead letters)"},
		{"dead-letters list --json", []string{"dead-letters", "list", "--json"}, withDB, "", ""},
		{"dead-letters retry with nothing pending", []string{"dead-letters", "retry"}, withDB, "", ""},
		{"dead-letters retry a bad id", []string{"dead-letters", "retry", "x"}, withDB, "not a dead letter id", ""},
		{"dead-letters retry a missing id", []string{"dead-letters", "retry", "42"}, withDB, "dead letter 42 does not exist", ""},
		{"reconcile needs the key", []string{"reconcile"}, withDB, "CLERK_SECRET_KEY is not set", ""},
		{"reconcile of an unknown kind", []string{"reconcile", "--kinds", "groups"}, withDB, `unknown kind`, ""},
		{"reconcile -h", []string{"reconcile", "-h"}, withDB, "", "-prune"},
		{"RECONCILE_INTERVAL needs the key", nil, env(map[string]string{"DATABASE_URL": dbURL, "RECONCILE_INTERVAL": "1h"}), "CLERK_SECRET_KEY", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var out bytes.Buffer
			err := run(context.Background(), tt.args, tt.getenv, &out, &out)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("run(%q): %v", tt.args, err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("run(%q) = %v, want an error containing %q", tt.args, err, tt.wantErr)
			}
			if !strings.Contains(out.String(), tt.wantOut) {
				t.Errorf("output %q does not contain %q", out.String(), tt.wantOut)
			}
		})
	}
}

// TestReconcile runs worker reconcile through run against a fake Backend API: progress and the
// summary on stderr, exit 0 after a complete sweep, 2 when --prune refuses; the key shows
// nowhere.
func TestReconcile(t *testing.T) {
	t.Parallel()
	const key = "sk_test_cmdWORKERreconcileNEVERshown"
	api := clerkapitest.New(t, key)
	for i := range 3 {
		if err := api.Put(clerkapitest.NewUser(fmt.Sprintf("user_%d", i), 1700000000000+int64(i), 1700000000000, "A")); err != nil {
			t.Fatal(err)
		}
	}
	vars := map[string]string{
		"DATABASE_URL": postgrestest.NewDatabase(t), "NATS_URL": eventtest.NewServer(t).URL(),
		"CLERK_API_URL": api.URL, "CLERK_SECRET_KEY": key, "CLERK_API_RATE": "100", "LOG_FORMAT": "json",
	}
	getenv := func(k string) string { return vars[k] }
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"reconcile", "--dry-run", "--prune"}, getenv, &stdout, &stderr); err != nil {
		t.Fatalf("reconcile --dry-run: %v\n%s", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "reconcile users: complete: seen 3, published 3, unchanged 0, missing 0, pruned 0") {
		t.Errorf("stderr: %s", stderr.String())
	}
	if err := run(context.Background(), []string{"reconcile"}, getenv, &stdout, &stderr); err != nil {
		t.Fatalf("reconcile: %v", err)
	}

	vars["CLERK_SECRET_KEY"] = "sk_test_wrong"
	err := run(context.Background(), []string{"reconcile", "--prune"}, getenv, &stdout, &stderr)
	if !errors.Is(err, worker.ErrPruneRefused) || exitCode(err) != 2 || !strings.Contains(err.Error(), "CLERK_SECRET_KEY") {
		t.Errorf("reconcile --prune with a refused key: %v (exit %d)", err, exitCode(err))
	}
	err = run(context.Background(), []string{"reconcile"}, getenv, &stdout, &stderr)
	if err == nil || exitCode(err) != 1 || !strings.Contains(err.Error(), "CLERK_SECRET_KEY") {
		t.Errorf("reconcile with a refused key: %v (exit %d)", err, exitCode(err))
	}
	for _, out := range []string{stdout.String(), stderr.String()} {
		if strings.Contains(out, key) || strings.Contains(out, "sk_test_wrong") {
			t.Errorf("a key shows in the output:\n%s", out)
		}
	}
}
