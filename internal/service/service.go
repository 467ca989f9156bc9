// Package service holds what every clerksync binary does the same way: reading its configuration
// from the environment, building its logger, serving HTTP with a graceful shutdown, the health and
// metrics endpoints, and the JSON error body. It knows nothing of webhooks, users or tokens.
package service

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/caarlos0/env/v11"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// ShutdownTimeout bounds how long in-flight work may take once a service is asked to stop; the
// contract gives a service 15 s to exit.
const ShutdownTimeout = 10 * time.Second

// Logging is the logging configuration every service shares.
type Logging struct {
	Format string `env:"LOG_FORMAT" envDefault:"text"`
	Level  string `env:"LOG_LEVEL" envDefault:"info"`
}

// ParseEnv fills a config struct (caarlos0/env tags) from getenv, so tests can inject an
// environment. A missing required variable or a bad value is one error line naming it.
func ParseEnv[T any](getenv func(string) string) (T, error) {
	var cfg T
	params, err := env.GetFieldParams(&cfg)
	if err != nil {
		return cfg, fmt.Errorf("config: %w", err)
	}
	vars := make(map[string]string, len(params))
	for _, p := range params {
		if v := getenv(p.Key); v != "" {
			vars[p.Key] = v
		}
	}
	if err := env.ParseWithOptions(&cfg, env.Options{Environment: vars}); err != nil {
		var agg env.AggregateError
		if errors.As(err, &agg) && len(agg.Errors) > 0 {
			err = agg.Errors[0]
		}
		// The library names the Go field of a bad value and the parser's complaint; the operator
		// knows the variable and wants to hear what is expected.
		if pe, ok := errors.AsType[env.ParseError](err); ok {
			if key, want := envKey(reflect.TypeFor[T](), pe.Name); key != "" {
				return cfg, fmt.Errorf("config: %s %s: want %s", key, quoteValue(vars[key]), cmp.Or(want, wantOf(pe.Type)))
			}
		}
		return cfg, fmt.Errorf("config: %w", err)
	}
	return cfg, nil
}

// envKey returns the variable of the field called name in t, or in the structs it nests, and
// what its `want` tag says a value must be ("" when it has none).
func envKey(t reflect.Type, name string) (key, want string) {
	for i := range t.NumField() {
		f := t.Field(i)
		if key, _, _ := strings.Cut(f.Tag.Get("env"), ","); f.Name == name && key != "" {
			return key, f.Tag.Get("want")
		}
		if f.Type.Kind() == reflect.Struct && f.IsExported() {
			if key, want := envKey(f.Type, name); key != "" {
				return key, want
			}
		}
	}
	return "", ""
}

// wantOf says what a value of type t looks like.
func wantOf(t reflect.Type) string {
	if t == reflect.TypeFor[time.Duration]() {
		return "a duration such as 500ms, 30s or 5m"
	}
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "an integer"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a whole number"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Bool:
		return "true or false"
	}
	return "a value of type " + t.String()
}

// quoteValue quotes a bad value for the error, cut short: only values that failed to parse as
// numbers, durations or booleans get here, never a secret (those are strings).
func quoteValue(v string) string {
	if r := []rune(v); len(r) > 40 {
		v = string(r[:40]) + "…"
	}
	return strconv.Quote(v)
}

// NewLogger builds the service's logger from LOG_FORMAT (json|text) and LOG_LEVEL
// (debug|info|warn|error).
func NewLogger(w io.Writer, cfg Logging) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.Level)); err != nil {
		return nil, fmt.Errorf("config: LOG_LEVEL %q: want debug, info, warn or error", cfg.Level)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch strings.ToLower(cfg.Format) {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text", "":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	default:
		return nil, fmt.Errorf("config: LOG_FORMAT %q: want json or text", cfg.Format)
	}
}

// StdLogger adapts logger for libraries that take a *log.Logger (net/http's ErrorLog), so
// their lines come out in the service's format too.
func StdLogger(logger *slog.Logger, component string) *log.Logger {
	return slog.NewLogLogger(logger.With("component", component).Handler(), slog.LevelWarn)
}

// Listen returns ln when it is not nil (tests and the dev stack pass their own, on :0), else a
// listener on addr.
func Listen(ln net.Listener, addr string) (net.Listener, error) {
	if ln != nil {
		return ln, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", addr, err)
	}
	return ln, nil
}

// Serve serves srv on ln until ctx ends, then stops taking connections and waits for in-flight
// requests for at most ShutdownTimeout.
//
// It logs "stopping" with the requests in flight when ctx ends, and "stopped" once they are done.
func Serve(ctx context.Context, srv *http.Server, ln net.Listener, logger *slog.Logger) error {
	// Connections serving a request right now: on HTTP/1.1, the requests in flight.
	var active atomic.Int64
	connState := srv.ConnState
	srv.ConnState = func(c net.Conn, state http.ConnState) {
		switch state {
		case http.StateActive:
			active.Add(1)
		case http.StateIdle, http.StateHijacked:
			active.Add(-1)
		case http.StateClosed:
			// A connection closed while active (a client gone mid-request) was never idle.
		}
		if connState != nil {
			connState(c, state)
		}
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	logger.Info("listening", "addr", ln.Addr().String())
	select {
	case err := <-errc:
		return fmt.Errorf("serving %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	start := time.Now()
	logger.Info("stopping: no new connections, finishing the requests in flight", "addr", ln.Addr().String(),
		"in_flight", max(active.Load(), 0), "within", ShutdownTimeout)
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("shutting down %s: %w", ln.Addr(), err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	logger.Info("stopped", "addr", ln.Addr().String(), "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// NewServer returns an http.Server with the timeouts that bound slow clients.
func NewServer(h http.Handler, logger *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          StdLogger(logger, "http"),
	}
}

// ErrorBody is every error response of the HTTP services: {"error":{"code":…,"message":…}}.
type ErrorBody struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail is the inside of ErrorBody.
type ErrorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// WriteError writes the JSON error body with status.
func WriteError(w http.ResponseWriter, status int, code, message string) {
	WriteJSON(w, status, ErrorBody{Error: ErrorDetail{Code: code, Message: message}})
}

// WriteJSON writes v as a JSON response with status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":{"code":"internal","message":"internal error"}}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// NewRegistry returns a Prometheus registry with the Go runtime and process collectors.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Probe reports whether a dependency is reachable.
type Probe func(ctx context.Context) error

// HandleOps registers /healthz (alive), /readyz (every probe passes) and /metrics on mux.
func HandleOps(mux *http.ServeMux, reg *prometheus.Registry, logger *slog.Logger, probes map[string]Probe) {
	mux.HandleFunc("GET /healthz", HealthzHandler)
	mux.Handle("GET /readyz", ReadyzHandler(logger, probes))
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
}

// HealthzHandler answers that the process is alive.
func HealthzHandler(w http.ResponseWriter, _ *http.Request) {
	WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// ReadyzHandler answers 200 when every probe passes, else 503 naming the failing ones.
func ReadyzHandler(logger *slog.Logger, probes map[string]Probe) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		checks := make(map[string]string, len(probes))
		ok := true
		for name, probe := range probes {
			if err := probe(ctx); err != nil {
				ok = false
				checks[name] = "unavailable"
				logger.Debug("readiness check failed", "dependency", name, "err", err)
				continue
			}
			checks[name] = "ok"
		}
		if !ok {
			WriteJSON(w, http.StatusServiceUnavailable, map[string]any{"status": "unavailable", "checks": checks})
			return
		}
		WriteJSON(w, http.StatusOK, map[string]any{"status": "ok", "checks": checks})
	})
}
