package service_test

import (
	"testing"
	"time"

	"github.com/clerksync/clerksync/internal/service"
)

type nested struct {
	Timeout time.Duration `env:"NESTED_TIMEOUT" envDefault:"1s"`
}

type config struct {
	Secret string `env:"SOME_SECRET,required"`
	Size   int64  `env:"SOME_SIZE" envDefault:"1"`
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
		{"bad int", map[string]string{"SOME_SECRET": "x", "SOME_SIZE": "lots"}, `config: SOME_SIZE: strconv.ParseInt: parsing "lots": invalid syntax`},
		{"bad duration, nested", map[string]string{"SOME_SECRET": "x", "NESTED_TIMEOUT": "5"}, `config: NESTED_TIMEOUT: unable to parse duration: time: missing unit in duration "5"`},
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
