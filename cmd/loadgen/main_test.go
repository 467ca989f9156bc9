package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func TestRunRefusesWhatItCannotDo(t *testing.T) {
	t.Parallel()
	noEnv := func(string) string { return "" }
	for _, tc := range []struct {
		args []string
		want string // in the error; "" for none
	}{
		{[]string{"help"}, ""},
		{[]string{"ingest", "-h"}, ""},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"ingest"}, "no webhook secret"},
		{[]string{"e2e", "-n", "1"}, "no webhook secret"},
		{[]string{"all", "-c", "32,x"}, `-c: "x" is not a positive integer`},
		{[]string{"all", "-upsert-p", "0"}, `-upsert-p: "0" is not a positive integer`},
		{[]string{"baseline", "extra"}, `unexpected arguments ["extra"]`},
		{[]string{"api", "-database-url", "postgres://postgres@127.0.0.1:1/x?connect_timeout=1"}, "connecting to postgres"},
	} {
		var stdout, stderr bytes.Buffer
		err := run(context.Background(), tc.args, noEnv, &stdout, &stderr)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%q: %v", tc.args, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%q: error %v, want one containing %q", tc.args, err, tc.want)
		}
	}
}

// TestHelpNeverPrintsTheSecret: -h lists flag defaults; the webhook secret from the environment
// is not one of them.
func TestHelpNeverPrintsTheSecret(t *testing.T) {
	t.Parallel()
	const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	getenv := func(k string) string {
		if k == "CLERK_WEBHOOK_SECRET" {
			return secret
		}
		return ""
	}
	for _, cmd := range []string{"ingest", "e2e"} {
		var stdout, stderr bytes.Buffer
		if err := run(context.Background(), []string{cmd, "-h"}, getenv, &stdout, &stderr); err != nil {
			t.Fatalf("%s -h: %v", cmd, err)
		}
		out := stdout.String() + stderr.String()
		if !strings.Contains(out, "-secret") {
			t.Errorf("%s -h does not list -secret:\n%s", cmd, out)
		}
		if strings.Contains(out, secret) || strings.Contains(out, secret[len("whsec_"):]) {
			t.Errorf("%s -h prints the webhook secret:\n%s", cmd, out)
		}
	}
}
