package clerksync_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/clerksync/clerksync/internal/clerk"
)

// TestExamples: every payload in examples/ is a webhook ingest accepts, and examples/README.md
// describes each one.
func TestExamples(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob("examples/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("examples/*.json: %v, %d files", err, len(files))
	}
	readme, err := os.ReadFile("examples/README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		body, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		env, err := clerk.ParseEnvelope(body)
		if err != nil {
			t.Errorf("%s: ingest would refuse it: %v", f, err)
			continue
		}
		if want := env.Type + ".json"; filepath.Base(f) != want {
			t.Errorf("%s holds a %s event: name it %s", f, env.Type, want)
		}
		if !strings.Contains(string(readme), "`"+filepath.Base(f)+"`") {
			t.Errorf("examples/README.md does not describe %s", filepath.Base(f))
		}
	}
}
