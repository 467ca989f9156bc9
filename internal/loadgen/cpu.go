package loadgen

import (
	"fmt"
	"os"
	"time"

	"github.com/prometheus/procfs"
)

// cpuTimes is CPU time (user + system) spent so far by the processes a stage involves, read
// from /proc: this process (the load generator, the embedded NATS server and whatever services
// run in it), every process named postgres (the server's backends and helpers), and the worker
// when it runs as a process of its own.
type cpuTimes struct {
	self, postgres, worker time.Duration
}

// sampleCPU reads the CPU times now; workerPID 0 means no worker process. Where /proc cannot be
// read, the times are zero and the stage reports none.
func sampleCPU(workerPID int) cpuTimes {
	var t cpuTimes
	fs, err := procfs.NewDefaultFS()
	if err != nil {
		return t
	}
	procs, err := fs.AllProcs()
	if err != nil {
		return t
	}
	for _, p := range procs {
		st, err := p.Stat()
		if err != nil {
			continue // exited meanwhile
		}
		cpu := ticks(st.UTime + st.STime)
		switch {
		case p.PID == os.Getpid():
			t.self = cpu
		case p.PID == workerPID:
			t.worker = cpu
		case st.Comm == "postgres":
			// A backend that exited (a pool closed) is gone from /proc: its time went to the
			// postmaster's children's times when it was reaped.
			t.postgres += cpu + ticks(uint(st.CUTime+st.CSTime)) //nolint:gosec // G115: children's ticks, never negative
		}
	}
	return t
}

// add adds the CPU spent between two samples to t.
func (t *cpuTimes) add(before, after cpuTimes) {
	t.self += after.self - before.self
	t.postgres += after.postgres - before.postgres
	t.worker += after.worker - before.worker
}

// ticks converts clock ticks of /proc/<pid>/stat (USER_HZ, 100 on Linux) to a duration.
func ticks(n uint) time.Duration {
	return time.Duration(n) * time.Second / 100 //nolint:gosec // G115: a process's ticks, far below 2^63
}

// perEvent is the CPU each process spent per event between two samples, in microseconds.
type perEvent struct {
	Self     float64 `json:"self_us"`
	Postgres float64 `json:"postgres_us"`
	Worker   float64 `json:"worker_us,omitempty"`
}

func cpuPerEvent(before, after cpuTimes, events int) *perEvent {
	if events <= 0 || after.self == 0 {
		return nil
	}
	us := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(events) }
	return &perEvent{Self: us(after.self - before.self), Postgres: us(after.postgres - before.postgres), Worker: us(after.worker - before.worker)}
}

func (p *perEvent) String() string {
	if p == nil {
		return ""
	}
	s := fmt.Sprintf("CPU per event: Postgres %.1f µs, this process %.1f µs", p.Postgres, p.Self)
	if p.Worker > 0 {
		s += fmt.Sprintf(", worker process %.1f µs", p.Worker)
	}
	return s
}
