package pgcluster

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// sysProcAttr runs the postmaster as cred, in its own process group (a terminal's Ctrl-C goes
// to us, and we stop the server after the services that use it), and has the kernel send it
// SIGINT, a fast shutdown, should the process that started it die without stopping it.
func sysProcAttr(cred *syscall.Credential) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Credential: cred, Setpgid: true, Pdeathsig: syscall.SIGINT}
}

// ProcessesIn returns the ids of the processes whose working directory is dir or below it. A
// postmaster and all its backends work in their data directory, so after Stop this is empty.
// It reads /proc, and sees other users' processes only when run as root.
func ProcessesIn(dir string) ([]int, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cwd, err := os.Readlink(filepath.Join("/proc", e.Name(), "cwd"))
		if err != nil {
			continue // gone, or not ours to look at
		}
		if cwd == dir || strings.HasPrefix(cwd, dir+"/") {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}
