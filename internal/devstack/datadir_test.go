package devstack

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/clerksync/clerksync/internal/pgcluster"
)

// TestPostgresDataDirFromAPrivateCheckout: as root, a checkout under a 0700 directory (root's
// home, mktemp -d) keeps its cluster where the postgres user can reach it, named after the
// checkout; a reachable checkout keeps it under .data.
func TestPostgresDataDirFromAPrivateCheckout(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("only root runs PostgreSQL as another user") // the non-root case is the reachable one below
	}
	private := t.TempDir() // 0700, owned by root
	if err := os.Chmod(private, 0o700); err != nil {
		t.Fatal(err)
	}
	a, err := postgresDataDir(filepath.Join(private, "a", ".data"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := postgresDataDir(filepath.Join(private, "b", ".data"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.HasPrefix(a, private) || a == b || !strings.Contains(a, "clerksync-dev-") {
		t.Errorf("data directories %q and %q: want one each, outside %s", a, b, private)
	}
	if err := pgcluster.Reachable(a); err != nil {
		t.Errorf("the postgres user cannot reach %s: %v", a, err)
	}
	again, _ := postgresDataDir(filepath.Join(private, "a", ".data"))
	if again != a {
		t.Errorf("the same checkout got %q, then %q", a, again)
	}
}

func TestPostgresDataDirReachable(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, d := range []string{dir, filepath.Dir(dir)} { // t.TempDir makes both 0700
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	got, err := postgresDataDir(filepath.Join(dir, ".data"))
	if err != nil || got != filepath.Join(dir, ".data", "postgres") {
		t.Errorf("postgresDataDir = %q, %v; want it under .data", got, err)
	}
}
