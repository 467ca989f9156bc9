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
