package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/clerksync/clerksync/internal/pgcluster"
	"github.com/clerksync/clerksync/internal/service"
	"github.com/clerksync/clerksync/internal/worker"
)

// TestDevStack runs the stack as `go run ./cmd/dev` does, with nothing pre-started: a webhook
// sent with `send` shows at /auth/me with a token from `token`; Ctrl-C leaves no process
// behind; a restart keeps the data, the webhook secret and the signing key.
func TestDevStack(t *testing.T) {
	t.Parallel()
	dir := dataDir(t)
	env := map[string]string{
		"LOG_FORMAT":  "json",
		"INGEST_ADDR": "127.0.0.1:0",
		"API_ADDR":    "127.0.0.1:0",
		"WORKER_ADDR": "127.0.0.1:0",
	}
	getenv := func(k string) string { return env[k] }
	upArgs := []string{"--data", dir, "--nats-port", "0", "--postgres-port", "0"}

	stack := startStack(t, upArgs, getenv)
	first := readState(t, dir)

	out := runCmd(t, getenv, "send", "user.created", "--data", dir)
	user := field(t, out, "user")
	if !strings.HasPrefix(user, "user_") || !strings.Contains(out, `"duplicate":false`) {
		t.Fatalf("send printed:\n%s", out)
	}
	token := strings.TrimSpace(runCmd(t, getenv, "token", "--data", dir))
	me := readMe(t, first.APIURL, token)
	if me["clerk_user_id"] != user || me["email"] == nil {
		t.Fatalf("/auth/me = %v, want user %s with an email", me, user)
	}

	// An update to the same user, named explicitly, lands too.
	runCmd(t, getenv, "send", "--user", user, "user.updated", "--data", dir)

	// The organization tour: an organization, the user's membership, a token with it active.
	out = runCmd(t, getenv, "send", "organization.created", "--data", dir)
	org := field(t, out, "org")
	out = runCmd(t, getenv, "send", "organizationMembership.created", "--user", user, "--org", org, "--data", dir)
	if field(t, out, "org") != org || field(t, out, "user") != user {
		t.Fatalf("send membership printed:\n%s", out)
	}
	orgToken := strings.TrimSpace(runCmd(t, getenv, "token", "--org", org, "--data", dir))
	deadline := time.Now().Add(30 * time.Second)
	for {
		me = readMe(t, first.APIURL, orgToken)
		if orgs, _ := me["organizations"].([]any); len(orgs) == 1 {
			if o := orgs[0].(map[string]any); o["clerk_org_id"] != org || o["role"] != "org:admin" || me["active_organization"] != org {
				t.Fatalf("/auth/me organizations %v, active %v; want %s as admin, active", orgs, me["active_organization"], org)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/auth/me = %v, want the organization %s within 30s", me, org)
		}
		time.Sleep(50 * time.Millisecond)
	}
	status, body := get(t, first.APIURL+"/organizations/"+org, orgToken)
	if status != http.StatusOK || !strings.Contains(body, `"clerk_user_id":"`+user+`"`) {
		t.Fatalf("GET /organizations/%s = %d %s", org, status, body)
	}

	if len(first.BackendOnly) < 2 || first.DatabaseURL == "" || first.ClerkKey == "" {
		t.Fatalf("the state has no dev Backend API: %+v", first)
	}
	// Just-in-time sync, as the banner shows it: a user only the Backend API has is answered 200
	// on the first request.
	jitUser := first.BackendOnly[len(first.BackendOnly)-1]
	if !strings.Contains(stack.out.String(), "--user "+jitUser+`)\" `+first.APIURL+"/auth/me") {
		t.Errorf("the banner does not show just-in-time sync for %s:\n%s", jitUser, stack.out.String())
	}
	jitToken := strings.TrimSpace(runCmd(t, getenv, "token", "--user", jitUser, "--data", dir))
	if status, me := getMe(t, first.APIURL, jitToken); status != http.StatusOK || me["clerk_user_id"] != jitUser || me["email"] == nil {
		t.Fatalf("first /auth/me of a user only the Backend API has: %d %v, want 200", status, me)
	}

	// worker reconcile against the dev Backend API, as the banner says, backfills the other users
	// no webhook announced; the user sent and the one synced just in time are not published again.
	wenv := map[string]string{"NATS_URL": first.NATSURL, "DATABASE_URL": first.DatabaseURL,
		"CLERK_API_URL": first.Issuer, "CLERK_SECRET_KEY": first.ClerkKey}
	wcfg, err := service.ParseEnv[worker.Config](func(k string) string { return wenv[k] })
	if err != nil {
		t.Fatal(err)
	}
	sums, err := worker.Reconcile(context.Background(), wcfg, worker.ReconcileOptions{}, slog.New(slog.DiscardHandler))
	if err != nil || sums[0].Seen != len(first.BackendOnly)+1 || sums[0].Published != len(first.BackendOnly)-1 {
		t.Fatalf("reconcile against the dev stack: %v %+v", err, sums)
	}
	backfilled := first.BackendOnly[0]
	token2 := strings.TrimSpace(runCmd(t, getenv, "token", "--user", backfilled, "--data", dir))
	if me := readMe(t, first.APIURL, token2); me["clerk_user_id"] != backfilled || me["email"] == nil {
		t.Fatalf("/auth/me of a backfilled user = %v", me)
	}

	stack.stop(t)
	if lines := stack.out.lines(); !allJSON(lines) {
		t.Errorf("LOG_FORMAT=json, but the stack wrote lines that are not JSON:\n%s", strings.Join(lines, "\n"))
	}
	if s := stack.out.String(); strings.Contains(s, first.WebhookSecret) || strings.Contains(s, "PRIVATE KEY") || strings.Contains(s, first.ClerkKey) {
		t.Error("the logs hold the webhook secret or the signing key")
	}

	// Restart: same secret and key, the data kept, and the token minted before still good.
	stack = startStack(t, upArgs, getenv)
	second := readState(t, dir)
	if second.WebhookSecret != first.WebhookSecret || second.SigningKey != first.SigningKey || second.Issuer != first.Issuer {
		t.Error("a restart changed the webhook secret, the signing key or the issuer")
	}
	if me := readMe(t, second.APIURL, token); me["clerk_user_id"] != user {
		t.Fatalf("after a restart /auth/me = %v, want user %s", me, user)
	}
	stack.stop(t)
}

func TestRunRefusesBadArguments(t *testing.T) {
	t.Parallel()
	empty := t.TempDir()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"launch"}, `unknown command "launch"`},
		{[]string{"send"}, "send takes one event type"},
		{[]string{"send", "user.created", "user.updated"}, "send takes one event type"},
		{[]string{"send", "--nope"}, "flag provided but not defined: -nope"},
		{[]string{"token", "extra"}, "unexpected arguments"},
		{[]string{"--data", empty, "extra"}, "unexpected arguments"},
		{[]string{"send", "user.created", "--data", empty}, "start the stack first"},
		{[]string{"token", "--data", empty}, "start the stack first"},
	} {
		err := run(context.Background(), tc.args, func(string) string { return "" }, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("run(%q) = %v, want an error containing %q", tc.args, err, tc.want)
		}
	}
	var out bytes.Buffer
	if err := run(context.Background(), []string{"help"}, os.Getenv, &out); err != nil || !strings.Contains(out.String(), "usage:") {
		t.Errorf("help: %v\n%s", err, out.String())
	}
}

type stack struct {
	out    *syncBuffer
	cancel context.CancelFunc
	done   chan error
	pgPID  int
	pgData string
}

// startStack runs the dev stack in the background and waits until it says it is ready.
func startStack(t *testing.T, args []string, getenv func(string) string) *stack {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &stack{out: &syncBuffer{}, cancel: cancel, done: make(chan error, 1)}
	go func() { s.done <- run(ctx, args, getenv, s.out) }()
	t.Cleanup(func() { s.cancel() })
	deadline := time.After(2 * time.Minute)
	for !strings.Contains(s.out.String(), `"msg":"dev stack ready"`) {
		select {
		case err := <-s.done:
			t.Fatalf("dev stack exited: %v\n%s", err, s.out.String())
		case <-deadline:
			t.Fatalf("dev stack not ready in time:\n%s", s.out.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
	// The ready line says where the cluster's data is.
	for line := range strings.Lines(s.out.String()) {
		var ready struct {
			Msg          string `json:"msg"`
			PostgresData string `json:"postgres_data"`
			Postgres     string `json:"postgres"`
		}
		if json.Unmarshal([]byte(line), &ready) == nil && ready.Msg == "dev stack ready" {
			if ready.PostgresData == "" || !strings.HasPrefix(ready.Postgres, "postgres://") {
				t.Fatalf("the ready line lacks postgres or postgres_data: %s", line)
			}
			s.pgData = ready.PostgresData
		}
	}
	b, err := os.ReadFile(filepath.Join(s.pgData, "postmaster.pid"))
	if err != nil {
		t.Fatal(err)
	}
	first, _, _ := strings.Cut(string(b), "\n")
	if s.pgPID, err = strconv.Atoi(first); err != nil {
		t.Fatal(err)
	}
	return s
}

// stop interrupts the stack as Ctrl-C does and checks that it exits cleanly with the Postgres
// cluster gone.
func (s *stack) stop(t *testing.T) {
	t.Helper()
	s.cancel()
	select {
	case err := <-s.done:
		if err != nil {
			t.Fatalf("dev stack stopped with %v\n%s", err, s.out.String())
		}
	case <-time.After(time.Minute):
		t.Fatalf("dev stack did not stop within a minute\n%s", s.out.String())
	}
	if err := syscall.Kill(s.pgPID, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("postmaster %d still exists after the stack stopped (kill: %v)", s.pgPID, err)
	}
	if pids, err := pgcluster.ProcessesIn(s.pgData); !errors.Is(err, errors.ErrUnsupported) && (err != nil || len(pids) > 0) {
		t.Errorf("processes left in the Postgres data directory: %v, %v", pids, err)
	}
}

type devState struct {
	WebhookSecret string   `json:"webhook_secret"`
	SigningKey    string   `json:"signing_key"`
	Issuer        string   `json:"issuer"`
	APIURL        string   `json:"api_url"`
	NATSURL       string   `json:"nats_url"`
	DatabaseURL   string   `json:"database_url"`
	ClerkKey      string   `json:"clerk_secret_key"`
	BackendOnly   []string `json:"backend_only_users"`
}

func readState(t *testing.T, dir string) devState {
	t.Helper()
	path := filepath.Join(dir, "dev.json")
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("%s has mode %v, want 0600: it holds secrets", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var st devState
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

func runCmd(t *testing.T, getenv func(string) string, args ...string) string {
	t.Helper()
	var out bytes.Buffer
	if err := run(context.Background(), args, getenv, &out); err != nil {
		t.Fatalf("dev %s: %v\n%s", strings.Join(args, " "), err, out.String())
	}
	return out.String()
}

// field returns the value printed after name on a line of out ("user      user_…").
func field(t *testing.T, out, name string) string {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 2 && f[0] == name {
			return f[1]
		}
	}
	t.Fatalf("no %s in:\n%s", name, out)
	return ""
}

// get answers a GET with a bearer token: status and body.
func get(t *testing.T, url, token string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// readMe polls /auth/me until the worker has applied the user (404 user_not_synced until then).
func readMe(t *testing.T, apiURL, token string) map[string]any {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, apiURL+"/auth/me", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			var me map[string]any
			if err := json.Unmarshal(body, &me); err != nil {
				t.Fatal(err)
			}
			return me
		}
		if resp.StatusCode != http.StatusNotFound || time.Now().After(deadline) {
			t.Fatalf("/auth/me: %d %s", resp.StatusCode, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// getMe sends one GET /auth/me and returns the status and, for a 200, the body.
func getMe(t *testing.T, apiURL, token string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, apiURL+"/auth/me", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var me map[string]any
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(body, &me); err != nil {
			t.Fatal(err)
		}
	}
	return resp.StatusCode, me
}

func allJSON(lines []string) bool {
	for _, l := range lines {
		if !json.Valid([]byte(l)) {
			return false
		}
	}
	return true
}

// TestDevStackFromAPrivateDirectory: as root, from a checkout under a 0700 directory (root's
// home, mktemp -d), the dev stack starts: its Postgres data lives where the postgres user can
// reach it, and the ready line says where.
func TestDevStackFromAPrivateDirectory(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("only root runs PostgreSQL as another user, so only root has the problem")
	}
	private := t.TempDir() // 0700
	dir := filepath.Join(private, "checkout", ".data")
	env := map[string]string{"LOG_FORMAT": "json", "INGEST_ADDR": "127.0.0.1:0", "API_ADDR": "127.0.0.1:0", "WORKER_ADDR": "127.0.0.1:0"}
	s := startStack(t, []string{"--data", dir, "--nats-port", "0", "--postgres-port", "0"}, func(k string) string { return env[k] })
	t.Cleanup(func() { _ = os.RemoveAll(filepath.Dir(s.pgData)) })
	if strings.HasPrefix(s.pgData, private) {
		t.Errorf("the cluster's data is in %s, which the postgres user cannot reach", s.pgData)
	}
	s.stop(t)
}

// dataDir returns a fresh data directory that, when the tests run as root, the postgres user
// can reach (testing makes temporary directories 0700).
func dataDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{dir, filepath.Dir(dir)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return filepath.Join(dir, "data")
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *syncBuffer) lines() []string {
	return strings.Split(strings.TrimSpace(b.String()), "\n")
}
