//go:build unix && !linux

package pgcluster

import (
	"errors"
	"fmt"
	"syscall"
)

// sysProcAttr runs the postmaster as cred, in its own process group. Without Linux's
// parent-death signal, a server whose starter is killed outright keeps running until stopped.
func sysProcAttr(cred *syscall.Credential) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Credential: cred, Setpgid: true}
}

// ProcessesIn is only implemented on Linux: elsewhere it returns errors.ErrUnsupported.
func ProcessesIn(dir string) ([]int, error) {
	return nil, fmt.Errorf("pgcluster: ProcessesIn needs Linux's /proc: %w", errors.ErrUnsupported)
}
