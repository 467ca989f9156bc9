package pgcluster

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// TestPostmasterDiesWithItsStarter kills a process that started a cluster (this test binary,
// run again as a helper) and expects the postmaster to shut down on its own.
func TestPostmasterDiesWithItsStarter(t *testing.T) {
	t.Parallel()
	dir := dataDir(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperStartsCluster$")
	cmd.Env = append(os.Environ(), "PGCLUSTER_HELPER_DATADIR="+dir)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := 0
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if _, err := fmt.Sscanf(sc.Text(), "postmaster %d", &pid); err == nil {
			break
		}
	}
	if pid == 0 {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatal("helper did not report a postmaster")
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	assertGone(t, pid, dir)
}

// TestHelperStartsCluster is the helper process of TestPostmasterDiesWithItsStarter; run
// directly it does nothing.
func TestHelperStartsCluster(t *testing.T) { //nolint:paralleltest // the helper process of TestPostmasterDiesWithItsStarter, not a test of its own
	dir := os.Getenv("PGCLUSTER_HELPER_DATADIR")
	if dir == "" {
		return
	}
	c, err := Start(context.Background(), Options{DataDir: dir, Ephemeral: true})
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("postmaster %d\n", c.PID())
	select {} // until killed
}
