package loadgen

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Result is what one stage measured.
type Result struct {
	Stage   string `json:"stage"`
	Clients int    `json:"clients,omitempty"`
	// Count is how many operations completed (requests answered, messages acknowledged, events
	// applied), whatever their outcome.
	Count   int           `json:"count"`
	Elapsed time.Duration `json:"-"`
	// Rate is Count per second of Elapsed.
	Rate    float64  `json:"rate_per_s"`
	Latency *Summary `json:"latency,omitempty"`
	// Statuses counts outcomes: HTTP statuses ("200"), "ok" for a PubAck or a committed batch,
	// "error" for no answer at all.
	Statuses map[string]int `json:"statuses,omitempty"`
	// Error is the first error seen, if any.
	Error string `json:"error,omitempty"`
	// Lag is webhook 2xx → row visible, for the end-to-end stages.
	Lag *Summary `json:"lag,omitempty"`
	// Note says what the numbers count, or what was left out.
	Note string `json:"note,omitempty"`
	// CPU is the CPU time each process spent per operation during the stage, where measured.
	CPU *perEvent `json:"cpu_per_event,omitempty"`
	// PeakRSS is the peak resident set of the process under test, in bytes, where measured.
	PeakRSS int64 `json:"peak_rss_bytes,omitempty"`

	latencies []time.Duration // sorted: what Latency summarises, kept to merge rounds
}

// mergeRounds adds up rounds of one stage: counts, time and outcomes, and the latencies of
// all of them.
func mergeRounds(rounds []Result) Result {
	if len(rounds) == 0 {
		return Result{}
	}
	m := rounds[0]
	m.Statuses = maps.Clone(m.Statuses)
	m.latencies = slices.Clone(m.latencies)
	for _, r := range rounds[1:] {
		m.Count += r.Count
		m.Elapsed += r.Elapsed
		for s, n := range r.Statuses {
			m.Statuses[s] += n
		}
		m.latencies = append(m.latencies, r.latencies...)
		if m.Error == "" {
			m.Error = r.Error
		}
	}
	if m.Elapsed > 0 {
		m.Rate = float64(m.Count) / m.Elapsed.Seconds()
	}
	s := Summarize(m.latencies)
	m.Latency = &s
	if len(rounds) > 1 {
		m.Note = fmt.Sprintf("%d rounds alternating with the baseline, each: %s", len(rounds), m.Note)
	}
	return m
}

// MarshalJSON adds the elapsed time in seconds.
func (r Result) MarshalJSON() ([]byte, error) {
	type plain Result
	return json.Marshal(struct {
		plain
		ElapsedSeconds float64 `json:"elapsed_s"`
	}{plain(r), r.Elapsed.Seconds()})
}

// OK counts the successful outcomes: 2xx answers and "ok".
func (r Result) OK() int {
	n := 0
	for s, c := range r.Statuses {
		if s == "ok" || len(s) == 3 && s[0] == '2' {
			n += c
		}
	}
	return n
}

// Attempts counts the outcomes of every kind.
func (r Result) Attempts() int {
	n := 0
	for _, c := range r.Statuses {
		n += c
	}
	return n
}

// Failed reports whether anything did not succeed.
func (r Result) Failed() bool { return r.OK() != r.Attempts() || r.Error != "" }

// load says how to drive a stage: how many clients, and either a number of jobs or a duration,
// optionally paced at a rate.
type load struct {
	Clients int
	// Jobs is the number of jobs; with Duration set, 0 means as many as fit in it. With neither,
	// there is nothing to do.
	Jobs     int
	Duration time.Duration
	// Rate paces the jobs (open loop) at that many per second; 0 runs each client flat out
	// (closed loop). When paced, a job's latency counts from when it was due, so a stall shows
	// in the percentiles instead of silently lowering the offered rate.
	Rate     float64
	Progress *Progress
}

// job runs job i and returns its outcome ("200", "ok", …) or an error when there was no answer.
type job func(ctx context.Context, client, i int) (string, error)

// drive runs l's jobs on l.Clients goroutines and measures them.
func drive(ctx context.Context, stage string, l load, do job) Result {
	clients := max(l.Clients, 1)
	if l.Jobs <= 0 && l.Duration <= 0 {
		return Result{Stage: stage, Clients: clients, Latency: &Summary{}, Statuses: map[string]int{}}
	}
	var (
		next     atomic.Int64
		lat      Latencies
		mu       sync.Mutex
		statuses = map[string]int{}
		firstErr error
		wg       sync.WaitGroup
	)
	start := time.Now()
	var deadline time.Time
	if l.Duration > 0 {
		deadline = start.Add(l.Duration)
	}
	var last atomic.Int64 // UnixNano of the last job's end
	for c := range clients {
		wg.Go(func() {
			var sample Sample
			own := map[string]int{}
			var ownErr error
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if l.Jobs > 0 && i >= l.Jobs {
					break
				}
				began := time.Now()
				if l.Rate > 0 {
					due := start.Add(time.Duration(float64(i) / l.Rate * float64(time.Second)))
					if !deadline.IsZero() && due.After(deadline) {
						break
					}
					if wait := time.Until(due); wait > 0 {
						if !sleep(ctx, wait) {
							break
						}
					}
					began = due
				} else if !deadline.IsZero() && began.After(deadline) {
					break
				}
				status, err := do(ctx, c, i)
				end := time.Now()
				if err != nil {
					if ctx.Err() != nil {
						break // cut short, not a failure of the system under test
					}
					status = "error"
					if ownErr == nil {
						ownErr = err
					}
				}
				sample = append(sample, end.Sub(began))
				own[status]++
				storeMax(&last, end.UnixNano())
				l.Progress.add(1)
			}
			lat.Merge(sample)
			mu.Lock()
			for s, n := range own {
				statuses[s] += n
			}
			if firstErr == nil {
				firstErr = ownErr
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	r := Result{Stage: stage, Clients: clients, Statuses: maps.Clone(statuses)}
	r.latencies = lat.sorted()
	s := Summarize(r.latencies)
	r.Latency = &s
	r.Count = s.Count
	if end := last.Load(); end > 0 {
		r.Elapsed = time.Unix(0, end).Sub(start)
	}
	if r.Elapsed > 0 {
		r.Rate = float64(r.Count) / r.Elapsed.Seconds()
	}
	if firstErr != nil {
		r.Error = firstErr.Error()
	}
	if ctx.Err() != nil && r.Error == "" {
		r.Error = fmt.Sprintf("cut short: %v", context.Cause(ctx))
	}
	return r
}

func storeMax(v *atomic.Int64, n int64) {
	for {
		old := v.Load()
		if n <= old || v.CompareAndSwap(old, n) {
			return
		}
	}
}

// sleep waits d or until ctx ends; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
