package service_test

import (
	"bytes"
	"regexp"
	"strings"
	"testing"

	"github.com/caarlos0/env/v11"

	"github.com/clerksync/clerksync/internal/service"
)

// TestHelpOrVersion: --help lists every variable of the config structs with its default (or that
// it is required), needing no environment; --version names the program; other arguments are not
// taken.
func TestHelpOrVersion(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	done, err := service.HelpOrVersion([]string{"--help"}, &out, "prog", "prog does things.", &config{}, &service.Logging{})
	if !done || err != nil {
		t.Fatalf("--help: %v, %v", done, err)
	}
	for _, cfg := range []any{&config{}, &service.Logging{}} {
		params, err := env.GetFieldParams(cfg)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range params {
			if !strings.Contains(out.String(), "  "+p.Key+" ") {
				t.Errorf("--help lacks %s:\n%s", p.Key, &out)
			}
		}
	}
	for _, want := range []string{"prog does things.", `SOME_SECRET\s+\(required\)`, `SOME_SIZE\s+1\n`, `SOME_FLAG\s+\(unset\)`, "--version"} {
		if !regexp.MustCompile(want).MatchString(out.String()) {
			t.Errorf("--help lacks %q:\n%s", want, &out)
		}
	}
	out.Reset()
	if done, err := service.HelpOrVersion([]string{"--version"}, &out, "prog", ""); !done || err != nil || !strings.HasPrefix(out.String(), "prog ") {
		t.Errorf("--version: %v, %v, %q", done, err, &out)
	}
	for _, args := range [][]string{nil, {"serve"}, {"--help", "x"}} {
		if done, err := service.HelpOrVersion(args, &out, "prog", ""); done || err != nil {
			t.Errorf("%q taken as help or version: %v, %v", args, done, err)
		}
	}
}
