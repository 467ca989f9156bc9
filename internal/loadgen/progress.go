package loadgen

import (
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// Progress is the one line a long run keeps up to date: the stage, how far it is and its rate.
// A nil *Progress ignores every call, so stages can report unconditionally.
type Progress struct {
	mu      sync.Mutex
	stage   string
	total   int64
	started time.Time
	done    atomic.Int64
}

// Stage starts a new stage of total steps (0: unknown).
func (p *Progress) Stage(name string, total int) {
	if p == nil {
		return
	}
	p.mu.Lock()
	p.stage, p.total, p.started = name, int64(total), time.Now()
	p.done.Store(0)
	p.mu.Unlock()
}

func (p *Progress) add(n int64) {
	if p != nil {
		p.done.Add(n)
	}
}

// set records absolute progress, for stages that poll a count.
func (p *Progress) set(n int64) {
	if p != nil {
		p.done.Store(n)
	}
}

// Line is the progress line, without a newline.
func (p *Progress) Line() string {
	p.mu.Lock()
	stage, total, started := p.stage, p.total, p.started
	p.mu.Unlock()
	if stage == "" {
		return ""
	}
	done := p.done.Load()
	elapsed := time.Since(started)
	rate := 0.0
	if s := elapsed.Seconds(); s > 0 {
		rate = float64(done) / s
	}
	of := ""
	if total > 0 {
		of = fmt.Sprintf("/%d", total)
	}
	return fmt.Sprintf("%s: %d%s in %.1fs (%.0f/s)", stage, done, of, elapsed.Seconds(), rate)
}

// Run writes the line to w every interval until ctx ends. On a terminal it rewrites one line in
// place; elsewhere (a log, CI) it appends a line, less often.
func (p *Progress) Run(ctx context.Context, w io.Writer, terminal bool) {
	every := 500 * time.Millisecond
	if !terminal {
		every = 5 * time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			if terminal {
				_, _ = fmt.Fprint(w, "\r\033[K") // best effort, like the line itself
			}
			return
		case <-t.C:
			line := p.Line()
			if line == "" {
				continue
			}
			// A progress line that cannot be written is no reason to stop measuring.
			if terminal {
				_, _ = fmt.Fprintf(w, "\r\033[K%s", line)
			} else {
				_, _ = fmt.Fprintln(w, line)
			}
		}
	}
}
