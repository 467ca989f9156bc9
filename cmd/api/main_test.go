package main

import (
	"io"
	"strings"
	"testing"
)

func TestRunRefusesBadConfiguration(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"no key source", nil, nil, "config: one of CLERK_JWKS_URL, CLERK_JWT_KEY, CLERK_PUBLISHABLE_KEY and CLERK_SECRET_KEY is required"},
		{"arguments", []string{"serve"}, nil, `unexpected arguments ["serve"]: api is configured from the environment`},
		{"bad duration", nil, map[string]string{"JWKS_CACHE_TTL": "soon"}, `config: JWKS_CACHE_TTL "soon": want a duration such as 500ms, 30s or 5m`},
		{"bad log format", nil, map[string]string{"LOG_FORMAT": "xml"}, `config: LOG_FORMAT "xml": want json or text`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := run(t.Context(), tt.args, func(k string) string { return tt.env[k] }, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("run = %v, want one line with %q", err, tt.want)
			}
		})
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
	for _, want := range []string{"Environment:", "CLERK_JWKS_URL", "LOG_LEVEL", "--version"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("--help lacks %q:\n%s", want, &out)
		}
	}
	out.Reset()
	if err := run(t.Context(), []string{"--version"}, func(string) string { return "" }, &out); err != nil || !strings.HasPrefix(out.String(), "api ") {
		t.Errorf("--version: %v, %q", err, &out)
	}
}
