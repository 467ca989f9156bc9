package pgcluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// dataDir returns a data directory path inside a fresh temporary directory that the server's
// user can reach (testing makes temporary directories 0700, and as root the server runs as
// postgres).
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

func startCluster(t *testing.T, o Options) *Cluster {
	t.Helper()
	c, err := Start(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Stop() })
	return c
}

func TestStartStopRestartKeepsData(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := dataDir(t)

	// A preferred port that is taken gives way to a free one.
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	busyPort := busy.Addr().(*net.TCPAddr).Port

	c := startCluster(t, Options{DataDir: dir, Port: busyPort, Ephemeral: true})
	if c.Port() == busyPort {
		t.Fatalf("cluster took port %d, which was in use", busyPort)
	}
	if err := c.EnsureDatabase(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	if err := c.EnsureDatabase(ctx, "app"); err != nil {
		t.Fatalf("EnsureDatabase on an existing database: %v", err)
	}
	exec1(t, c.URL("app"), "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('still here')")
	if _, err := os.Stat(filepath.Join(c.DataDir(), ".s.PGSQL."+strconv.Itoa(c.Port()))); err != nil {
		t.Errorf("unix socket not in the data directory: %v", err)
	}

	pid := c.PID()
	if pids, err := ProcessesIn(dir); !errors.Is(err, errors.ErrUnsupported) && (err != nil || len(pids) < 2) {
		// The postmaster and its auxiliary processes: this is what must be gone after Stop.
		t.Fatalf("ProcessesIn(data dir) of a running cluster = %v, %v; want the postmaster and its children", pids, err)
	}
	if err := c.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := c.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	assertGone(t, pid, dir)

	// Restart on the same directory, asking for the port it had: it is free now.
	port := c.Port()
	c = startCluster(t, Options{DataDir: dir, Port: port, Ephemeral: true})
	if c.Port() != port {
		t.Errorf("restart took port %d, want the free preferred port %d", c.Port(), port)
	}
	var got string
	conn := connect(t, c.URL("app"))
	if err := conn.QueryRow(ctx, "SELECT v FROM kept").Scan(&got); err != nil || got != "still here" {
		t.Fatalf("after restart: %q, %v; want the row written before", got, err)
	}
	conn.Close(ctx)
	pid = c.PID()
	if err := c.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	assertGone(t, pid, dir)
}

func TestFindBinaries(t *testing.T) {
	t.Parallel()
	empty := t.TempDir()
	if _, err := findBinaries(empty, []string{filepath.Join(empty, "*")}); !errors.Is(err, ErrNoBinaries) {
		t.Fatalf("findBinaries with nothing installed: %v, want ErrNoBinaries", err)
	}
	if !strings.Contains(ErrNoBinaries.Error(), "apt-get install postgresql") {
		t.Errorf("ErrNoBinaries does not say what to install: %v", ErrNoBinaries)
	}

	// Package locations: the newest version wins, and PATH comes first.
	root := t.TempDir()
	for _, v := range []string{"9.6", "15", "16"} {
		fakeBinaries(t, filepath.Join(root, "lib", v, "bin"))
	}
	got, err := findBinaries("", []string{filepath.Join(root, "lib", "*", "bin")})
	if want := filepath.Join(root, "lib", "16", "bin"); err != nil || got != want {
		t.Errorf("findBinaries = %q, %v; want %q", got, err, want)
	}
	onPath := filepath.Join(root, "path")
	fakeBinaries(t, onPath)
	got, err = findBinaries(empty+string(filepath.ListSeparator)+onPath, []string{filepath.Join(root, "lib", "*", "bin")})
	if err != nil || got != onPath {
		t.Errorf("findBinaries = %q, %v; want %q from PATH", got, err, onPath)
	}
}

func TestStartRefusesForeignDirectory(t *testing.T) {
	t.Parallel()
	dir := dataDir(t)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Start(context.Background(), Options{DataDir: dir})
	if err == nil || !strings.Contains(err.Error(), "neither empty nor a PostgreSQL data directory") {
		t.Fatalf("Start on a directory with other files: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "notes.txt")); string(b) != "mine" {
		t.Fatal("Start touched a directory it refused")
	}
}

func TestStartRefusesOtherMajorVersion(t *testing.T) {
	t.Parallel()
	dir := dataDir(t)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "PG_VERSION"), []byte("9.4\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Start(context.Background(), Options{DataDir: dir})
	if err == nil || !strings.Contains(err.Error(), "holds a PostgreSQL 9.4 cluster") {
		t.Fatalf("Start on a 9.4 data directory: %v", err)
	}
}

func TestCredentialNeedsAnUnprivilegedUser(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		if cred, err := credential("nosuchuser"); cred != nil || err != nil {
			t.Fatalf("credential as a normal user = %v, %v; want nil, nil (run as ourselves)", cred, err)
		}
		return
	}
	if _, err := credential("clerksync-no-such-user"); err == nil || !strings.Contains(err.Error(), "useradd") {
		t.Fatalf("credential for a missing user: %v, want a hint to create one", err)
	}
	if _, err := credential("root"); err == nil {
		t.Fatal("credential(root) succeeded; the server must not run as root")
	}
}

func TestPrepareDirChecksReachability(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		return // only root switches users
	}
	cred, err := credential("")
	if err != nil {
		t.Fatal(err)
	}
	private := t.TempDir() // 0700, owned by root
	err = prepareDir(filepath.Join(private, "pg", "data"), cred, "postgres")
	if err == nil || !strings.Contains(err.Error(), "user postgres, which cannot reach") || !strings.Contains(err.Error(), "(mode 0700)") {
		t.Fatalf("prepareDir under a 0700 root directory: %v, want it to say the server cannot reach it", err)
	}
}

func fakeBinaries(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"initdb", "postgres"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	return conn
}

func exec1(t *testing.T, url, sql string) {
	t.Helper()
	conn := connect(t, url)
	defer conn.Close(context.Background())
	if _, err := conn.Exec(context.Background(), sql); err != nil {
		t.Fatal(err)
	}
}

// assertGone waits until the postmaster pid has exited (a zombie counts as exited: it is
// someone else's to reap) and no process works in dir.
func assertGone(t *testing.T, pid int, dir string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		pids, err := ProcessesIn(dir)
		if err != nil && !errors.Is(err, errors.ErrUnsupported) {
			t.Fatal(err)
		}
		if !running(pid) && len(pids) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("postmaster %d running: %v; processes in %s: %v", pid, running(pid), dir, pids)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func running(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return runtime.GOOS != "linux" // without /proc, a zombie looks alive
	}
	// The state follows the parenthesised command name.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}
