package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/clerksync/clerksync/internal/postgres/postgrestest"
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
		{"-h prints the flags", []string{"replay", "-h"}, withDB, "", "-from-seq"},
		{"unknown command", []string{"frobnicate"}, withDB, `unknown command "frobnicate"`, ""},
		{"unknown flag", []string{"--frobnicate"}, withDB, "flag provided but not defined", ""},
		{"bad configuration", nil, env(map[string]string{"WORKER_BATCH_SIZE": "many"}), "config:", ""},
		{"out of range configuration", nil, env(map[string]string{"WORKER_BATCH_SIZE": "0", "DATABASE_URL": dbURL}), "WORKER_BATCH_SIZE 0", ""},
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
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var out bytes.Buffer
			err := run(context.Background(), tt.args, tt.getenv, &out)
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
