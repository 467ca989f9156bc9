package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clerksync/clerksync/internal/event/eventtest"
)

const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

func env(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

func TestRunRefuses(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		args    []string
		vars    map[string]string
		wantErr string
	}{
		{"arguments", []string{"serve"}, map[string]string{"CLERK_WEBHOOK_SECRET": secret}, `unexpected arguments ["serve"]`},
		{"no secret", nil, nil, "CLERK_WEBHOOK_SECRET"},
		{"bad secret", nil, map[string]string{"CLERK_WEBHOOK_SECRET": "whsec_!!"}, "CLERK_WEBHOOK_SECRET: secret 1 of 1 is not whsec_ followed by base64"},
		{"bad body limit", nil, map[string]string{"CLERK_WEBHOOK_SECRET": secret, "WEBHOOK_MAX_BODY_BYTES": "lots"}, "WEBHOOK_MAX_BODY_BYTES"},
		{"bad timeout", nil, map[string]string{"CLERK_WEBHOOK_SECRET": secret, "PUBLISH_TIMEOUT": "5"}, "PUBLISH_TIMEOUT"},
		{"bad log format", nil, map[string]string{"CLERK_WEBHOOK_SECRET": secret, "LOG_FORMAT": "xml"}, "LOG_FORMAT"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := run(t.Context(), tt.args, env(tt.vars), io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("run: %v, want an error with %q", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error spans several lines: %q", err)
			}
		})
	}
}

// TestRunServes runs the binary's wiring: JSON logs on stdout, ready once NATS is reached, a
// clean exit when the context ends.
func TestRunServes(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	r, w := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, nil, env(map[string]string{
			"NATS_URL":             eventtest.URL(t),
			"INGEST_ADDR":          "127.0.0.1:0",
			"CLERK_WEBHOOK_SECRET": secret,
			"LOG_FORMAT":           "json",
		}), w)
		_ = w.Close()
	}()

	// Every line is JSON; the "listening" one says where.
	addr := make(chan string, 1)
	var wg sync.WaitGroup
	var msgs []string
	wg.Go(func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			var line struct{ Msg, Addr string }
			if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
				t.Errorf("log line is not JSON: %s", sc.Bytes())
				continue
			}
			msgs = append(msgs, line.Msg)
			if line.Msg == "listening" {
				addr <- line.Addr
			}
		}
	})
	var url string
	select {
	case a := <-addr:
		url = "http://" + a
	case err := <-done:
		t.Fatalf("run: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("no listening line")
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		resp, err := http.Get(url + "/readyz") //nolint:noctx // a test probe
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz never ready (last: %v)", err)
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("run after the context ended: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("run did not return after the context ended")
	}
	wg.Wait()
	// A stop is logged: when it begins (with what is in flight) and when it is done.
	stopping := slices.IndexFunc(msgs, func(m string) bool { return strings.HasPrefix(m, "stopping") })
	if stopping < 0 || !slices.Contains(msgs[stopping:], "stopped") {
		t.Errorf("log lines %q: want a stopping line, then stopped", msgs)
	}
}

// TestHelpAndVersion: --help needs no environment and lists the variables; --version names the
// binary.
func TestHelpAndVersion(t *testing.T) {
	t.Parallel()
	var out strings.Builder
	if err := run(t.Context(), []string{"--help"}, func(string) string { return "" }, &out); err != nil {
		t.Fatalf("--help: %v", err)
	}
	for _, want := range []string{"Environment:", "CLERK_WEBHOOK_SECRET", "LOG_LEVEL", "--version"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("--help lacks %q:\n%s", want, &out)
		}
	}
	out.Reset()
	if err := run(t.Context(), []string{"--version"}, func(string) string { return "" }, &out); err != nil || !strings.HasPrefix(out.String(), "ingest ") {
		t.Errorf("--version: %v, %q", err, &out)
	}
}
