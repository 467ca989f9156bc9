package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/clerksync/clerksync/internal/api/apitest"
	"github.com/clerksync/clerksync/internal/postgres/dbsqlc"
	"github.com/clerksync/clerksync/internal/postgres/postgrestest"
	"github.com/clerksync/clerksync/internal/service"
	"github.com/clerksync/clerksync/internal/session/sessiontest"
)

// TestAttackTableBinary sends every row of the api's hostile-token table (apitest, the rows
// internal/api's TestAttackTable runs in-process) to the built api binary over real HTTP, with
// the configuration production runs with and the impostor synced, and checks each answer:
// status, JSON error code and challenge. The attacker's server is never fetched, the process's output holds no token, and
// SIGTERM stops it with exit status 0.
func TestAttackTableBinary(t *testing.T) {
	t.Parallel()
	built := buildAPI(t) // meanwhile, the database and the issuer
	dbURL := postgrestest.NewDatabase(t)
	iss := sessiontest.NewIssuer(t)
	api := startAPI(t, built(), map[string]string{
		"DATABASE_URL":             dbURL,
		"CLERK_JWKS_URL":           iss.JWKSURL(),
		"CLERK_ISSUER":             sessiontest.IssuerURL,
		"CLERK_AUTHORIZED_PARTIES": sessiontest.AuthorizedParty,
		"JWT_LEEWAY":               apitest.Leeway.String(), // the default, stated: the rows rely on it
		"LOG_FORMAT":               "json",
		"LOG_LEVEL":                "debug", // the most the api ever logs, for the leak check
	})

	// The impostor is synced, so that a row answered as the impostor would get 200, not 404.
	client := &http.Client{Timeout: 10 * time.Second}
	t.Cleanup(client.CloseIdleConnections)
	syncUser(t, dbURL, apitest.Impostor)
	impostor := http.Header{"Authorization": {"Bearer " + iss.Token(apitest.Impostor)}}
	if resp := api.get(t, client, "/auth/me", impostor); resp.status != http.StatusOK {
		t.Fatalf("the impostor's own token: %d %q, want 200", resp.status, resp.code)
	}

	// A request whose header is over the server's limit never reaches the handler: net/http
	// answers 431 itself.
	maxHeader := service.NewServer(nil, slog.New(slog.DiscardHandler)).MaxHeaderBytes
	// Built only now, with the process's clock running: see apitest.Attacks.
	table := apitest.Attacks(t, iss, time.Now)

	var handled401 int
	t.Run("rows", func(t *testing.T) {
		for _, a := range table.Attacks {
			tooLarge := headerSize(a.Header()) > maxHeader
			if a.Refused() && !tooLarge {
				handled401++
			}
			t.Run(a.Name, func(t *testing.T) {
				t.Parallel()
				resp := api.get(t, client, "/auth/me", a.Header())
				if t.Failed() {
					return
				}
				if tooLarge {
					if resp.status != http.StatusRequestHeaderFieldsTooLarge {
						t.Errorf("status = %d, want 431 from net/http (%d header bytes, limit %d)", resp.status, headerSize(a.Header()), maxHeader)
					}
					return
				}
				if resp.status != a.Status || resp.code != a.Code || resp.message == "" {
					t.Errorf("answer = %d %q (%q), want %d %q with a message; sent %s after the table was minted",
						resp.status, resp.code, resp.message, a.Status, a.Code, time.Since(table.Minted).Round(time.Millisecond))
				}
				if got := resp.header.Values("WWW-Authenticate"); a.Challenge == "" && len(got) != 0 ||
					a.Challenge != "" && (len(got) != 1 || got[0] != a.Challenge) {
					t.Errorf("WWW-Authenticate = %q, want %q", got, a.Challenge)
				}
				if !a.Refused() && resp.header.Get("Retry-After") != "1" {
					t.Errorf("Retry-After = %q, want 1", resp.header.Get("Retry-After"))
				}
			})
		}
	})

	// The positive control: a valid token reaches the database (which has no row for the user),
	// so a process refusing everything fails here.
	control := http.Header{"Authorization": {"Bearer " + iss.Token("user_2control")}}
	if resp := api.get(t, client, "/auth/me", control); resp.status != http.StatusNotFound || resp.code != "user_not_synced" {
		t.Errorf("valid token: %d %q, want 404 user_not_synced", resp.status, resp.code)
	}

	// Every refusal came from the handler, once.
	metrics := api.get(t, client, "/metrics", nil)
	want := fmt.Sprintf(`clerksync_api_requests_total{method="GET",route="/auth/me",status="401"} %d`, handled401)
	if !strings.Contains(string(metrics.body), want+"\n") {
		t.Errorf("/metrics lacks %s", want)
	}
	if n := table.Attacker.Hits(); n != 0 {
		t.Errorf("the attacker's server was fetched %d times", n)
	}
	// One fetch at start, at most one more for the unknown kids.
	if n := iss.Fetches(); n > 2 {
		t.Errorf("our JWKS was fetched %d times", n)
	}

	code, err := api.stop(15 * time.Second)
	if err != nil || code != 0 {
		t.Errorf("after SIGTERM: exit status %d, %v; want 0 within 15s", code, err)
	}
	stdout, stderr := api.stdout.String(), api.stderr.String()
	if leaks := table.Leaks(stdout + stderr); len(leaks) > 0 {
		t.Errorf("the process's output holds token material of %q", leaks)
	}
	if stderr != "" {
		t.Errorf("stderr is not empty:\n%s", stderr)
	}
	// With LOG_FORMAT=json every line is JSON; and the refusals were logged (by reason).
	sc := bufio.NewScanner(strings.NewReader(stdout))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if !json.Valid(sc.Bytes()) {
			t.Errorf("stdout line is not JSON: %.200s", sc.Text())
		}
	}
	if err := sc.Err(); err != nil {
		t.Errorf("reading stdout: %v", err)
	}
	if !strings.Contains(stdout, `"auth_failure":"signature"`) {
		t.Errorf("stdout lacks the refusals' log lines:\n%.2000s", stdout)
	}
	if t.Failed() {
		t.Logf("api output:\n%.8000s", stdout)
	}
}

// syncUser writes the Clerk user clerkID into the api's database as the worker would.
func syncUser(t *testing.T, databaseURL, clerkID string) {
	t.Helper()
	pool, err := pgxpool.New(t.Context(), databaseURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	apitest.SyncUser(t, t.Context(), dbsqlc.New(pool), clerkID)
}

// headerSize is how many bytes h takes on the wire, as net/http counts toward MaxHeaderBytes.
func headerSize(h http.Header) int {
	n := 0
	for k, vs := range h {
		for _, v := range vs {
			n += len(k) + len(": ") + len(v) + len("\r\n")
		}
	}
	return n
}

// buildAPI starts compiling cmd/api into a temporary directory, with the race detector when the
// test binary has it (so it watches the process too), and returns a function that waits for the
// build and returns the binary's path. The go command's environment, GOFLAGS included, is the
// test's.
func buildAPI(t *testing.T) (wait func() string) {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "api")
	args := []string{"build", "-o", bin}
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, s := range info.Settings {
			if s.Key == "-race" && s.Value == "true" {
				args = append(args, "-race")
			}
		}
	}
	var out bytes.Buffer
	cmd := exec.CommandContext(t.Context(), "go", append(args, "github.com/clerksync/clerksync/cmd/api")...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	var err error
	waitOnce := func() error { once.Do(func() { err = cmd.Wait() }); return err }
	// Should the test end before it waits (a failed setup), its context ends and kills the build.
	t.Cleanup(func() { _ = waitOnce() })
	return func() string {
		t.Helper()
		if err := waitOnce(); err != nil {
			t.Fatalf("go %s: %v\n%s", strings.Join(cmd.Args[1:], " "), err, &out)
		}
		return bin
	}
}

// apiProcess is the api binary running on a loopback port.
type apiProcess struct {
	url            string
	cmd            *exec.Cmd
	stdout, stderr apitest.LockedBuffer
	exited         chan struct{} // closed once the process has exited and waitErr is set
	waitErr        error
}

// startAPI runs bin with env plus API_ADDR on a free loopback port, and waits until /readyz
// answers 200. Of the test's own environment only what libpq-style connections read (PG*, HOME
// for ~/.pgpass) is passed on, so a developer's API or LOG variables cannot change the run. The
// process is killed at the end of the test if it is still running then.
func startAPI(t *testing.T, bin string, env map[string]string) *apiProcess {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	p := &apiProcess{url: "http://" + addr, exited: make(chan struct{})}
	p.cmd = exec.Command(bin)
	p.cmd.Env = []string{"API_ADDR=" + addr}
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PG") || strings.HasPrefix(kv, "HOME=") {
			p.cmd.Env = append(p.cmd.Env, kv)
		}
	}
	for k, v := range env {
		p.cmd.Env = append(p.cmd.Env, k+"="+v)
	}
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	// Should the test binary die, the kernel kills the api too. (It signals when the thread that
	// started the child exits; Go ends a thread only when a goroutine locked to it by
	// runtime.LockOSThread returns, which nothing in this test binary does.)
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.waitErr = p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
	})

	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-p.exited:
			t.Fatalf("the api exited before it was ready: %v\nstdout:\n%s\nstderr:\n%s", p.waitErr, &p.stdout, &p.stderr)
		default:
		}
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, p.url+"/readyz", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the api was not ready within 10s (last: %v)\nstdout:\n%s", err, &p.stdout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// answer is a response, its error code and message when it has the contract's error shape.
type answer struct {
	status        int
	header        http.Header
	body          []byte
	code, message string
}

// get sends GET path with header and reads the answer. A JSON error body must have exactly the
// contract's shape.
func (p *apiProcess) get(t *testing.T, client *http.Client, path string, header http.Header) answer {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, p.url+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Errorf("GET %s: %v", path, err)
		return answer{}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Errorf("GET %s: reading the body: %v", path, err)
	}
	a := answer{status: resp.StatusCode, header: resp.Header, body: body}
	if resp.Header.Get("Content-Type") == "application/json" && resp.StatusCode >= 400 {
		var e service.ErrorBody
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&e); err != nil {
			t.Errorf("GET %s: body %q is not the error shape: %v", path, body, err)
		}
		a.code, a.message = e.Error.Code, e.Error.Message
	}
	return a
}

// stop sends SIGTERM and waits at most within for the process to exit, returning its exit status.
func (p *apiProcess) stop(within time.Duration) (int, error) {
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return -1, err
	}
	select {
	case <-p.exited:
	case <-time.After(within):
		return -1, errors.New("still running " + within.String() + " after SIGTERM")
	}
	var exit *exec.ExitError
	switch {
	case p.waitErr == nil:
		return 0, nil
	case errors.As(p.waitErr, &exit):
		return exit.ExitCode(), nil
	default:
		return -1, p.waitErr
	}
}
