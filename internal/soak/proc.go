package soak

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// proc runs one service binary the way a process supervisor (systemd, Kubernetes) does:
// whenever it exits — killed by a fault, or failing at start because a dependency is down — it
// is started again at once, until the soak ends.
type proc struct {
	name string
	path string
	args []string
	env  []string
	log  *os.File // stdout and stderr of every incarnation

	mu   sync.Mutex
	pid  int
	done chan struct{} // closed when the current incarnation has exited

	starts, kills, exits atomic.Int64
}

// supervise keeps p running until ctx ends, then stops it with SIGTERM (a graceful shutdown)
// and waits for it.
func (p *proc) supervise(ctx context.Context) error {
	// The kernel sends the parent-death signal when the thread that started the child exits
	// (go.dev/issue/27505): keep this goroutine on its thread while children run.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	for {
		cmd := exec.Command(p.path, p.args...)
		cmd.Env = p.env
		cmd.Stdout, cmd.Stderr = p.log, p.log
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("starting %s: %w", p.name, err)
		}
		p.starts.Add(1)
		done := make(chan struct{})
		p.mu.Lock()
		p.pid, p.done = cmd.Process.Pid, done
		p.mu.Unlock()
		waited := make(chan error, 1)
		go func() { waited <- cmd.Wait(); close(done) }()

		select {
		case <-waited:
			p.exits.Add(1)
		case <-ctx.Done():
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case err := <-waited:
				var exit *exec.ExitError
				if err != nil && !errors.As(err, &exit) {
					return fmt.Errorf("%s: %w", p.name, err)
				}
				if err != nil {
					return fmt.Errorf("%s did not shut down cleanly: %w", p.name, err)
				}
				return nil
			case <-time.After(20 * time.Second):
				_ = cmd.Process.Kill()
				<-waited
				return fmt.Errorf("%s did not stop within 20s of SIGTERM", p.name)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(100 * time.Millisecond): // a failing start does not spin
		}
	}
}

// kill sends SIGKILL to the running incarnation and waits until it has exited; supervise
// starts the next one.
func (p *proc) kill() {
	p.mu.Lock()
	pid, done := p.pid, p.done
	p.mu.Unlock()
	if done == nil {
		return
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err == nil {
		p.kills.Add(1)
	}
	<-done
}
