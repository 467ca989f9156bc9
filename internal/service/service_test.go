package service_test

import (
	"strings"
	"testing"
	"time"

	"github.com/clerksync/clerksync/internal/service"
)

type nested struct {
	Timeout time.Duration `env:"NESTED_TIMEOUT" envDefault:"1s"`
}

type config struct {
	Secret string  `env:"SOME_SECRET,required"`
	Size   int64   `env:"SOME_SIZE" envDefault:"1" want:"an integer from 1 to 100"`
	Flag   bool    `env:"SOME_FLAG"`
	Rate   float64 `env:"SOME_RATE"`
	Nested nested
}

// TestParseEnvNamesTheVariable: a missing or bad value is one line naming the variable, never
// the Go field.
func TestParseEnvNamesTheVariable(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		vars map[string]string
		want string
	}{
		{"missing", map[string]string{}, `config: required environment variable "SOME_SECRET" is not set`},
		{"bad int", map[string]string{"SOME_SECRET": "x", "SOME_SIZE": "lots"}, `config: SOME_SIZE "lots": want an integer from 1 to 100`},
		{"bad duration, nested", map[string]string{"SOME_SECRET": "x", "NESTED_TIMEOUT": "5"}, `config: NESTED_TIMEOUT "5": want a duration such as 500ms, 30s or 5m`},
		{"bad bool", map[string]string{"SOME_SECRET": "x", "SOME_FLAG": "yes please"}, `config: SOME_FLAG "yes please": want true or false`},
		{"bad float, long value cut", map[string]string{"SOME_SECRET": "x", "SOME_RATE": strings.Repeat("9", 50) + "x"}, `config: SOME_RATE "` + strings.Repeat("9", 40) + `…": want a number`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := service.ParseEnv[config](func(k string) string { return tt.vars[k] })
			if err == nil || err.Error() != tt.want {
				t.Errorf("ParseEnv: %v, want %q", err, tt.want)
			}
		})
	}
	cfg, err := service.ParseEnv[config](func(k string) string { return map[string]string{"SOME_SECRET": "x"}[k] })
	if err != nil || cfg.Size != 1 || cfg.Nested.Timeout != time.Second {
		t.Errorf("defaults: %+v, %v", cfg, err)
	}
}
