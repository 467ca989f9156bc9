// Package pgcluster runs a private PostgreSQL server from the server binaries installed on the
// machine, for the dev stack and for tests when no server is provided. It initialises a data
// directory once (trust auth, UTF8, C locale), starts the postmaster as a child process on a
// loopback port with its unix socket inside the data directory, and stops it cleanly. Running as
// root, it runs initdb and the server as an unprivileged system user (postgres), since both
// refuse to run as root. It must not be used to run a production database: authentication is
// trust, and it binds to loopback only.
package pgcluster

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// Superuser is the database superuser of every cluster this package initialises.
const Superuser = "postgres"

// ErrNoBinaries means no PostgreSQL server binaries (initdb and postgres) were found.
var ErrNoBinaries = errors.New("no PostgreSQL server binaries (initdb, postgres) on PATH or in /usr/lib/postgresql/*/bin: install them (Debian/Ubuntu: apt-get install postgresql; Fedora: dnf install postgresql-server; macOS: brew install postgresql)")

// Options configures Start.
type Options struct {
	// DataDir holds the cluster; it is created and initialised when missing or empty, and
	// reused when it already holds a cluster. Required.
	DataDir string
	// Port is the loopback port to listen on when it is free; when it is 0 or taken, any free
	// port is used.
	Port int
	// User is the system user that runs initdb and the server when this process is root
	// (default "postgres"). Ignored otherwise: the server then runs as the current user.
	User string
	// BinDir holds initdb and postgres; found with FindBinaries when empty.
	BinDir string
	// Ephemeral trades durability for speed (no fsync), for throwaway clusters in tests.
	Ephemeral bool
	// StartTimeout bounds initdb plus start-up (default 2 minutes).
	StartTimeout time.Duration
}

// Cluster is a running server. Stop it when done; it is also sent SIGINT (a fast shutdown)
// by the kernel if the process that started it dies first (Linux).
type Cluster struct {
	dataDir string
	port    int
	cmd     *exec.Cmd
	logPath string

	done     chan struct{} // closed once the postmaster has exited and been reaped
	waitErr  error         // the postmaster's exit status, set before done is closed
	stopOnce sync.Once
	stopErr  error
}

// Start initialises o.DataDir if needed, starts the server and waits until it accepts
// connections. ctx bounds the start-up only, not the server's lifetime.
func Start(ctx context.Context, o Options) (*Cluster, error) {
	if o.DataDir == "" {
		return nil, errors.New("pgcluster: DataDir is required")
	}
	timeout := o.StartTimeout
	if timeout <= 0 {
		timeout = 2 * time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	dataDir, err := filepath.Abs(o.DataDir)
	if err != nil {
		return nil, fmt.Errorf("pgcluster: %w", err)
	}
	bin := o.BinDir
	if bin == "" {
		if bin, err = FindBinaries(); err != nil {
			return nil, fmt.Errorf("pgcluster: %w", err)
		}
	}
	cred, err := credential(o.User)
	if err != nil {
		return nil, fmt.Errorf("pgcluster: %w", err)
	}
	if err := prepareDir(dataDir, cred, cmp.Or(o.User, "postgres")); err != nil {
		return nil, fmt.Errorf("pgcluster: %w", err)
	}
	if err := ensureInitialised(ctx, bin, dataDir, cred, o.Ephemeral); err != nil {
		return nil, fmt.Errorf("pgcluster: %w", err)
	}

	// A free port may be taken by someone else between our check and the server's bind: then
	// try another one.
	preferred := o.Port
	for attempt := 1; ; attempt++ {
		port, err := pickPort(preferred)
		if err != nil {
			return nil, fmt.Errorf("pgcluster: %w", err)
		}
		c, err := start(ctx, bin, dataDir, port, cred, o.Ephemeral)
		if err == nil {
			return c, nil
		}
		if !errors.Is(err, errAddrInUse) || attempt == 3 {
			return nil, fmt.Errorf("pgcluster: %w", err)
		}
		preferred = 0
	}
}

// Port is the loopback TCP port the server listens on.
func (c *Cluster) Port() int { return c.port }

// PID is the postmaster's process id.
func (c *Cluster) PID() int { return c.cmd.Process.Pid }

// DataDir is the absolute path of the data directory.
func (c *Cluster) DataDir() string { return c.dataDir }

// LogPath is the server's log file (rewritten at every start).
func (c *Cluster) LogPath() string { return c.logPath }

// Done is closed when the server has exited, whether stopped or not.
func (c *Cluster) Done() <-chan struct{} { return c.done }

// URL is a connection URL for database as the superuser, over TCP on loopback.
func (c *Cluster) URL(database string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.User(Superuser),
		Host:     net.JoinHostPort("127.0.0.1", strconv.Itoa(c.port)),
		Path:     "/" + database,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// EnsureDatabase creates database name unless it exists.
func (c *Cluster) EnsureDatabase(ctx context.Context, name string) error {
	conn, err := pgx.Connect(ctx, c.URL("postgres"))
	if err != nil {
		return fmt.Errorf("pgcluster: connecting: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		return fmt.Errorf("pgcluster: looking up database %s: %w", name, err)
	}
	if exists {
		return nil
	}
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return fmt.Errorf("pgcluster: creating database %s: %w", name, err)
	}
	return nil
}

// Stop shuts the server down the way `pg_ctl stop -m fast` does (SIGINT: sessions are ended,
// a checkpoint is written) and waits until the postmaster, and with it every backend, has
// exited. When it has not within a minute it is escalated to an immediate shutdown, then
// killed. Safe to call more than once.
func (c *Cluster) Stop() error {
	c.stopOnce.Do(func() { c.stopErr = c.stop() })
	return c.stopErr
}

func (c *Cluster) stop() error {
	for _, step := range []struct {
		sig  syscall.Signal
		wait time.Duration
	}{
		{syscall.SIGINT, time.Minute},
		{syscall.SIGQUIT, 10 * time.Second},
		{syscall.SIGKILL, 10 * time.Second},
	} {
		select {
		case <-c.done:
			return c.exitErr()
		default:
		}
		if err := c.cmd.Process.Signal(step.sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
			return fmt.Errorf("pgcluster: signalling postmaster: %w", err)
		}
		select {
		case <-c.done:
			if step.sig != syscall.SIGINT {
				return fmt.Errorf("pgcluster: postmaster ignored a fast shutdown and was stopped with %v (see %s)", step.sig, c.logPath)
			}
			return c.exitErr()
		case <-time.After(step.wait):
		}
	}
	return fmt.Errorf("pgcluster: postmaster %d did not exit after SIGKILL", c.PID())
}

func (c *Cluster) exitErr() error {
	if c.waitErr != nil {
		return fmt.Errorf("pgcluster: postmaster exited: %w (see %s)", c.waitErr, c.logPath)
	}
	return nil
}

// FindBinaries returns the directory holding initdb and postgres: the first directory on PATH
// that has both, else the newest of the usual package locations (Debian's
// /usr/lib/postgresql/<version>/bin, RHEL's /usr/pgsql-<version>/bin, /usr/local/pgsql/bin).
func FindBinaries() (string, error) {
	return findBinaries(os.Getenv("PATH"), []string{"/usr/lib/postgresql/*/bin", "/usr/pgsql-*/bin", "/usr/local/pgsql/bin"})
}

func findBinaries(path string, patterns []string) (string, error) {
	var candidates []string
	for _, dir := range filepath.SplitList(path) {
		if dir != "" {
			candidates = append(candidates, dir)
		}
	}
	for _, pattern := range patterns {
		matches, _ := filepath.Glob(pattern)
		slices.SortFunc(matches, func(a, b string) int { return compareVersions(b, a) }) // newest first
		candidates = append(candidates, matches...)
	}
	for _, dir := range candidates {
		if isExecutable(filepath.Join(dir, "initdb")) && isExecutable(filepath.Join(dir, "postgres")) {
			return dir, nil
		}
	}
	return "", ErrNoBinaries
}

// compareVersions orders paths that differ in version numbers numerically (16 after 9.6).
func compareVersions(a, b string) int {
	for a != "" && b != "" {
		da, db := leadingDigits(a), leadingDigits(b)
		if da != "" && db != "" {
			na, _ := strconv.Atoi(da)
			nb, _ := strconv.Atoi(db)
			if na != nb {
				return na - nb
			}
			a, b = a[len(da):], b[len(db):]
			continue
		}
		if a[0] != b[0] {
			return int(a[0]) - int(b[0])
		}
		a, b = a[1:], b[1:]
	}
	return len(a) - len(b)
}

func leadingDigits(s string) string {
	i := 0
	for i < len(s) && '0' <= s[i] && s[i] <= '9' {
		i++
	}
	return s[:i]
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// credential returns who the server runs as: nil for the current user, or name (default
// postgres) when this process is root, since initdb and postgres refuse to run as root.
func credential(name string) (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	name = cmp.Or(name, "postgres")
	u, err := user.Lookup(name)
	if err != nil {
		return nil, fmt.Errorf("running as root, PostgreSQL needs an unprivileged system user to run as, and there is no user %q (create one: useradd --system %s, or run as a normal user)", name, name)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil || uid == 0 {
		return nil, fmt.Errorf("user %q cannot run PostgreSQL: it must be an unprivileged user", name)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}, nil
}

// Reachable says whether the user the server would run as (postgres, when this process is root)
// can reach dataDir through the directories that exist on its way: nil when it can, or when the
// server runs as this process's user. The error says which directory stops it.
func Reachable(dataDir string) error {
	cred, err := credential("")
	if err != nil || cred == nil {
		return err
	}
	abs, err := filepath.Abs(dataDir)
	if err != nil {
		return err
	}
	dir := filepath.Dir(abs)
	for { // the first ancestor that exists: the rest would be created searchable
		if _, err := os.Stat(dir); err == nil || dir == filepath.Dir(dir) {
			break
		}
		dir = filepath.Dir(dir)
	}
	return checkReach(abs, dir, cred, "postgres")
}

// prepareDir creates the data directory's parent, and checks that the user the server runs as
// can reach the data directory through it.
func prepareDir(dataDir string, cred *syscall.Credential, userName string) error {
	if err := os.MkdirAll(filepath.Dir(dataDir), 0o755); err != nil {
		return fmt.Errorf("creating the data directory's parent: %w", err)
	}
	if cred == nil {
		return nil
	}
	return checkReach(dataDir, filepath.Dir(dataDir), cred, userName)
}

// checkReach checks that cred can search every directory from dir up to the root.
func checkReach(dataDir, dir string, cred *syscall.Credential, userName string) error {
	for ; ; dir = filepath.Dir(dir) {
		fi, err := os.Stat(dir)
		if err != nil {
			return err
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && !searchable(fi.Mode(), st, cred) {
			return fmt.Errorf("PostgreSQL runs as user %s, which cannot reach %s: %s (mode %04o) is not searchable by it; use a data directory elsewhere or chmod o+x %s", userName, dataDir, dir, fi.Mode().Perm(), dir)
		}
		if dir == filepath.Dir(dir) {
			return nil
		}
	}
}

func searchable(mode fs.FileMode, st *syscall.Stat_t, cred *syscall.Credential) bool {
	switch {
	case st.Uid == cred.Uid:
		return mode&0o100 != 0
	case st.Gid == cred.Gid:
		return mode&0o010 != 0
	default:
		return mode&0o001 != 0
	}
}

// ensureInitialised runs initdb unless dataDir already holds a cluster, of the same major
// version as the binaries. initdb writes into a scratch directory renamed into place, so an
// interrupted initdb never leaves a half-made cluster behind.
func ensureInitialised(ctx context.Context, bin, dataDir string, cred *syscall.Credential, ephemeral bool) error {
	major, err := serverMajor(ctx, bin)
	if err != nil {
		return err
	}
	if b, err := os.ReadFile(filepath.Join(dataDir, "PG_VERSION")); err == nil {
		if have := strings.TrimSpace(string(b)); have != major {
			return fmt.Errorf("%s holds a PostgreSQL %s cluster but the binaries in %s are PostgreSQL %s: install %s's server or remove the directory", dataDir, have, bin, major, have)
		}
		return nil
	}
	if entries, err := os.ReadDir(dataDir); err == nil && len(entries) > 0 {
		return fmt.Errorf("%s is neither empty nor a PostgreSQL data directory", dataDir)
	}

	scratch := dataDir + ".initdb"
	if err := os.RemoveAll(scratch); err != nil {
		return err
	}
	if err := os.Mkdir(scratch, 0o700); err != nil {
		return fmt.Errorf("creating %s: %w", scratch, err)
	}
	if cred != nil {
		if err := os.Chown(scratch, int(cred.Uid), int(cred.Gid)); err != nil {
			return fmt.Errorf("handing %s to uid %d: %w", scratch, cred.Uid, err)
		}
	}
	args := []string{"-D", scratch, "-U", Superuser, "--auth=trust", "--encoding=UTF8", "--locale=C"}
	if ephemeral {
		args = append(args, "--no-sync")
	}
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "initdb"), args...)
	cmd.Dir = "/"
	cmd.Env = serverEnv()
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := cmd.CombinedOutput(); err != nil {
		_ = os.RemoveAll(scratch)
		return fmt.Errorf("initdb: %w: %s", err, lastLine(out))
	}
	// rename(2) replaces an empty directory.
	if err := os.Rename(scratch, dataDir); err != nil {
		return fmt.Errorf("moving the new cluster into place: %w", err)
	}
	return nil
}

var versionRE = regexp.MustCompile(`\(PostgreSQL\) (\d+)(\.\d+)?`)

// serverMajor returns the binaries' major version as PG_VERSION spells it ("15", or "9.6").
func serverMajor(ctx context.Context, bin string) (string, error) {
	out, err := exec.CommandContext(ctx, filepath.Join(bin, "postgres"), "--version").Output()
	if err != nil {
		return "", fmt.Errorf("running %s --version: %w", filepath.Join(bin, "postgres"), err)
	}
	m := versionRE.FindSubmatch(out)
	if m == nil {
		return "", fmt.Errorf("unexpected postgres --version output %q", strings.TrimSpace(string(out)))
	}
	if n, _ := strconv.Atoi(string(m[1])); n < 10 {
		return string(m[1]) + string(m[2]), nil
	}
	return string(m[1]), nil
}

// serverEnv is this process's environment without libpq's PG* variables, which would
// otherwise override what we pass.
func serverEnv() []string {
	return slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "PG") })
}

// pickPort returns preferred when it is free on loopback, else a free port.
func pickPort(preferred int) (int, error) {
	if preferred > 0 {
		if ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(preferred))); err == nil {
			ln.Close()
			return preferred, nil
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

var errAddrInUse = errors.New("port taken")

// maxSocketPath is the room a unix socket path has (sun_path less its terminator).
const maxSocketPath = 107

func start(ctx context.Context, bin, dataDir string, port int, cred *syscall.Credential, ephemeral bool) (*Cluster, error) {
	logPath := filepath.Join(dataDir, "server.log")
	logFile, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening the server log: %w", err)
	}
	defer logFile.Close() //nolint:errcheck // only our copy of the descriptor; the child holds its own

	socketDir := dataDir
	if len(socketDir)+len("/.s.PGSQL.65535") > maxSocketPath {
		socketDir = "" // TCP only: the path would not fit in a unix socket address
	}
	args := []string{
		"-D", dataDir,
		"-c", "listen_addresses=127.0.0.1",
		"-c", "port=" + strconv.Itoa(port),
		"-c", "unix_socket_directories=" + socketDir,
		"-c", "logging_collector=off",
	}
	if ephemeral {
		args = append(args, "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off")
	}
	cmd := exec.Command(filepath.Join(bin, "postgres"), args...)
	cmd.Dir = dataDir
	cmd.Env = serverEnv()
	cmd.Stdout, cmd.Stderr = logFile, logFile // never our pipes: `go test` would wait on them
	cmd.SysProcAttr = sysProcAttr(cred)

	c := &Cluster{dataDir: dataDir, port: port, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		// The kernel sends the parent-death signal when the *thread* that started the child
		// exits (go.dev/issue/27505): keep this goroutine on its thread for the child's life.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		c.waitErr = cmd.Wait()
		close(c.done)
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("starting postgres: %w", err)
	}
	if err := c.waitReady(ctx); err != nil {
		_ = c.Stop()
		return nil, err
	}
	return c, nil
}

// waitReady polls until the server accepts a connection, it exits, or ctx ends.
func (c *Cluster) waitReady(ctx context.Context) error {
	for {
		connCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
		conn, err := pgx.Connect(connCtx, c.URL("postgres"))
		cancel()
		if err == nil {
			conn.Close(context.Background())
			return nil
		}
		select {
		case <-c.done:
			msg := c.logError()
			if strings.Contains(msg, "could not bind") || strings.Contains(msg, "in use") {
				return fmt.Errorf("%w: %s", errAddrInUse, msg)
			}
			return fmt.Errorf("postgres exited during start-up: %s (see %s)", msg, c.logPath)
		case <-ctx.Done():
			return fmt.Errorf("postgres did not accept connections in time: %w (see %s)", err, c.logPath)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// logError returns the first FATAL or PANIC message of the server log, else its last line.
func (c *Cluster) logError() string {
	b, err := os.ReadFile(c.logPath)
	if err != nil {
		return "no server log"
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		for _, level := range []string{"FATAL:", "PANIC:"} {
			if i := strings.Index(line, level); i >= 0 {
				return strings.Join(strings.Fields(line[i:]), " ")
			}
		}
	}
	return lastLine(b)
}

func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}
