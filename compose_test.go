package clerksync_test

// No Docker engine runs where the tests run, so this test reads docker-compose.yml the way
// Compose does (compose-go: interpolation, merge keys, validation) and the Dockerfile as text, and
// checks what the deployment relies on: the five services, their environment, healthchecks,
// start order, and a NATS server that fsyncs every message.

import (
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/caarlos0/env/v11"
	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats-server/v2/server"

	"github.com/clerksync/clerksync/internal/api"
	"github.com/clerksync/clerksync/internal/ingest"
	"github.com/clerksync/clerksync/internal/service"
	"github.com/clerksync/clerksync/internal/worker"
)

const (
	composeSecret   = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	composePassword = "s3cret-pg"
)

func loadCompose(t *testing.T, environment map[string]string) (*types.Project, error) {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return loader.LoadWithContext(t.Context(), types.ConfigDetails{
		WorkingDir:  wd,
		ConfigFiles: []types.ConfigFile{{Filename: filepath.Join(wd, "docker-compose.yml")}},
		Environment: environment,
	})
}

func TestCompose(t *testing.T) {
	t.Parallel()
	p, err := loadCompose(t, map[string]string{
		"CLERK_WEBHOOK_SECRET": composeSecret,
		"CLERK_JWKS_URL":       "https://clerk.example.com/.well-known/jwks.json",
		"POSTGRES_PASSWORD":    composePassword,
	})
	if err != nil {
		t.Fatalf("loading docker-compose.yml: %v", err)
	}
	if diff := cmp.Diff([]string{"api", "ingest", "nats", "postgres", "worker"}, slices.Sorted(maps.Keys(p.Services))); diff != "" {
		t.Fatalf("services (-want +got)\n%s", diff)
	}

	t.Run("environment", func(t *testing.T) {
		t.Parallel()
		const dbURL = "postgres://postgres:" + composePassword + "@postgres:5432/clerksync?sslmode=disable"
		want := map[string]map[string]string{
			"ingest": {"NATS_URL": "nats://nats:4222", "INGEST_ADDR": ":8080", "CLERK_WEBHOOK_SECRET": composeSecret, "LOG_FORMAT": "json", "STREAM_REPLICAS": "1"},
			"worker": {"NATS_URL": "nats://nats:4222", "DATABASE_URL": dbURL, "WORKER_ADDR": ":8082", "LOG_FORMAT": "json", "STREAM_REPLICAS": "1"},
			"api":    {"DATABASE_URL": dbURL, "API_ADDR": ":8081", "CLERK_JWKS_URL": "https://clerk.example.com/.well-known/jwks.json", "LOG_FORMAT": "json"},
		}
		for name, vars := range want {
			got := environment(p.Services[name])
			for k, v := range vars {
				if got[k] != v {
					t.Errorf("%s: %s = %q, want %q", name, k, got[k], v)
				}
			}
		}
		// Every variable a service is given is one it reads: a typo would be silently ignored.
		known := map[string][]string{
			"ingest": append(envKeys[ingest.Config](t), envKeys[service.Logging](t)...),
			"worker": append(envKeys[worker.Config](t), envKeys[service.Logging](t)...),
			"api":    append(envKeys[api.Config](t), envKeys[service.Logging](t)...),
		}
		for name, keys := range known {
			for k := range environment(p.Services[name]) {
				if !slices.Contains(keys, k) {
					t.Errorf("%s is given %s, which it does not read", name, k)
				}
			}
		}
		// The services' environments are valid configurations, and every worker variable that
		// tunes it is passed through.
		if _, err := service.ParseEnv[ingest.Config](func(k string) string { return environment(p.Services["ingest"])[k] }); err != nil {
			t.Errorf("ingest's environment: %v", err)
		}
		if _, err := service.ParseEnv[worker.Config](func(k string) string { return environment(p.Services["worker"])[k] }); err != nil {
			t.Errorf("worker's environment: %v", err)
		}
		for _, k := range []string{"WORKER_PARALLELISM", "WORKER_ACK_WAIT", "WORKER_FETCH_WAIT", "WORKER_RETRY_DELAY",
			"WORKER_RETRY_MAX_DELAY", "CLERK_API_URL", "CLERK_SECRET_KEY", "CLERK_API_RATE", "RECONCILE_INTERVAL"} {
			if _, ok := environment(p.Services["worker"])[k]; !ok {
				t.Errorf("worker is not given %s", k)
			}
		}
	})

	t.Run("ports", func(t *testing.T) {
		t.Parallel()
		// Clerk's webhooks and the frontend reach ingest and the api; the worker's /metrics and
		// probes are for this host only; Postgres and NATS are not published at all.
		want := map[string][]string{
			"ingest":   {":8080:8080"},
			"api":      {":8081:8081"},
			"worker":   {"127.0.0.1:8082:8082"},
			"postgres": nil,
			"nats":     nil,
		}
		for name, ports := range want {
			var got []string
			for _, pc := range p.Services[name].Ports {
				got = append(got, pc.HostIP+":"+pc.Published+":"+strconv.Itoa(int(pc.Target)))
			}
			if diff := cmp.Diff(ports, got); diff != "" {
				t.Errorf("%s publishes (-want +got)\n%s", name, diff)
			}
		}
	})

	t.Run("dockerignore", func(t *testing.T) {
		t.Parallel()
		b, err := os.ReadFile(".dockerignore")
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Fields(string(b))
		for _, want := range []string{".git", ".data", ".cache"} {
			if !slices.Contains(lines, want) {
				t.Errorf(".dockerignore lacks %s", want)
			}
		}
	})

	t.Run("healthchecks", func(t *testing.T) {
		t.Parallel()
		want := map[string]string{
			"postgres": "pg_isready",
			"nats":     "http://127.0.0.1:8222/healthz",
			"ingest":   "http://127.0.0.1:8080/readyz",
			"worker":   "http://127.0.0.1:8082/readyz",
			"api":      "http://127.0.0.1:8081/readyz",
		}
		for name, probe := range want {
			hc := p.Services[name].HealthCheck
			if hc == nil || hc.Disable || len(hc.Test) < 2 || hc.Test[0] != "CMD" {
				t.Errorf("%s: healthcheck %+v, want an exec-form CMD", name, hc)
				continue
			}
			if !slices.Contains(hc.Test, probe) {
				t.Errorf("%s: healthcheck %q does not probe %s", name, hc.Test, probe)
			}
			if hc.Interval == nil || hc.Retries == nil {
				t.Errorf("%s: healthcheck without interval or retries", name)
			}
		}
	})

	t.Run("depends_on", func(t *testing.T) {
		t.Parallel()
		want := map[string][]string{
			"postgres": nil,
			"nats":     nil,
			"ingest":   {"nats"},
			"worker":   {"nats", "postgres"},
			"api":      {"postgres", "worker"}, // the worker migrates the schema
		}
		for name, deps := range want {
			got := p.Services[name].DependsOn
			if diff := cmp.Diff(deps, slices.Sorted(maps.Keys(got))); diff != "" {
				t.Errorf("%s depends on (-want +got)\n%s", name, diff)
			}
			for dep, d := range got {
				if d.Condition != types.ServiceConditionHealthy {
					t.Errorf("%s waits for %s to be %q, want %q", name, dep, d.Condition, types.ServiceConditionHealthy)
				}
			}
		}
	})

	t.Run("images", func(t *testing.T) {
		t.Parallel()
		if img := p.Services["postgres"].Image; img != "postgres:16" {
			t.Errorf("postgres image %q, want postgres:16", img)
		}
		dockerfile, err := os.ReadFile("Dockerfile")
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{"ingest", "worker", "api"} {
			s := p.Services[name]
			if s.Build == nil || s.Build.Target != name {
				t.Errorf("%s: build %+v, want the Dockerfile's %q target", name, s.Build, name)
				continue
			}
			if !regexp.MustCompile(`(?m)^FROM runtime AS ` + name + `$`).Match(dockerfile) {
				t.Errorf("Dockerfile has no %q stage on the runtime image", name)
			}
			if s.User != "" {
				t.Errorf("%s runs as %q; the image's non-root user is meant", name, s.User)
			}
			if !s.ReadOnly {
				t.Errorf("%s: root filesystem not read-only", name)
			}
		}
		for _, want := range []string{"CGO_ENABLED=0", "FROM gcr.io/distroless/static-debian12:nonroot AS runtime", "USER nonroot:nonroot"} {
			if !strings.Contains(string(dockerfile), want) {
				t.Errorf("Dockerfile lacks %q", want)
			}
		}
	})

	t.Run("nats", func(t *testing.T) {
		t.Parallel()
		nats := p.Services["nats"]
		m := regexp.MustCompile(`^nats:(\d+)\.(\d+)\.(\d+)(-alpine)?$`).FindStringSubmatch(nats.Image)
		if m == nil || version(m[1:4]) < version([]string{"2", "12", "6"}) {
			t.Errorf("nats image %q, want a pinned nats:2.12.6 or later", nats.Image)
		}
		// The config file Compose mounts is the one the command names, and nats-server reads it
		// as JetStream, on the data volume, with sync_interval: always.
		if len(nats.Configs) != 1 {
			t.Fatalf("nats configs %+v, want one", nats.Configs)
		}
		ref := nats.Configs[0]
		if diff := cmp.Diff([]string{"nats-server", "--config", ref.Target}, []string(nats.Command)); diff != "" {
			t.Errorf("nats command (-want +got)\n%s", diff)
		}
		path := filepath.Join(t.TempDir(), "nats.conf")
		if err := os.WriteFile(path, []byte(p.Configs[ref.Source].Content), 0o600); err != nil {
			t.Fatal(err)
		}
		opts, err := server.ProcessConfigFile(path)
		if err != nil {
			t.Fatalf("nats-server rejects the compose config: %v", err)
		}
		if !opts.JetStream || !opts.SyncAlways {
			t.Errorf("nats: jetstream %v, sync always %v; want both", opts.JetStream, opts.SyncAlways)
		}
		if !slices.ContainsFunc(nats.Volumes, func(v types.ServiceVolumeConfig) bool {
			return v.Type == types.VolumeTypeVolume && v.Target == opts.StoreDir
		}) {
			t.Errorf("nats store_dir %q is not on a named volume", opts.StoreDir)
		}
		// ingest refuses to start unless max_payload holds its default body limit plus 16 KiB of
		// headers.
		if opts.MaxPayload < 256<<10+16<<10 {
			t.Errorf("nats max_payload %d is too small for ingest's default body limit", opts.MaxPayload)
		}
		if opts.HTTPPort != 8222 {
			t.Errorf("nats monitoring port %d, want 8222 (the healthcheck's)", opts.HTTPPort)
		}
	})
}

// TestComposeNeedsSecrets: without CLERK_WEBHOOK_SECRET or POSTGRES_PASSWORD, Compose stops with a
// line naming the one missing (no silent default password).
func TestComposeNeedsSecrets(t *testing.T) {
	t.Parallel()
	for _, missing := range []string{"CLERK_WEBHOOK_SECRET", "POSTGRES_PASSWORD"} {
		environment := map[string]string{"CLERK_WEBHOOK_SECRET": composeSecret, "POSTGRES_PASSWORD": composePassword}
		delete(environment, missing)
		_, err := loadCompose(t, environment)
		if err == nil || !strings.Contains(err.Error(), missing) {
			t.Errorf("loading without %s: %v, want an error naming it", missing, err)
		}
	}
}

func environment(s types.ServiceConfig) map[string]string {
	out := map[string]string{}
	for k, v := range s.Environment {
		if v != nil {
			out[k] = *v
		}
	}
	return out
}

// envKeys returns the environment variables a config struct reads.
func envKeys[T any](t *testing.T) []string {
	t.Helper()
	var cfg T
	params, err := env.GetFieldParams(&cfg)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, p := range params {
		keys = append(keys, p.Key)
	}
	return keys
}

// version turns ["2","12","6"] into a number that orders like the version.
func version(parts []string) int {
	n := 0
	for _, p := range parts {
		v, _ := strconv.Atoi(p)
		n = n*1000 + v
	}
	return n
}
