package loadgen

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"
)

// Report is what All measured.
type Report struct {
	Started time.Time `json:"started"`
	Machine Machine   `json:"machine"`
	Seed    uint64    `json:"seed,omitempty"`
	Stages  []Result  `json:"stages"`
	Targets []Target  `json:"targets"`
	// PeakRSS is the most memory this process (the load generator and, for all, the stack it
	// ran) held at once, in bytes; 0 where the system does not say.
	PeakRSS int64 `json:"peak_rss_bytes,omitempty"`
	// TargetPID and TargetPeakRSS are the process under test and its peak resident set size,
	// when the single-stage commands are told its pid.
	TargetPID     int   `json:"target_pid,omitempty"`
	TargetPeakRSS int64 `json:"target_peak_rss_bytes,omitempty"`
}

// Machine describes where the numbers come from.
type Machine struct {
	CPUs      int    `json:"cpus"`
	OS        string `json:"os"`
	Arch      string `json:"arch"`
	GoVersion string `json:"go_version"`
}

// Target is one of the goals, checked against a baseline of the same run.
type Target struct {
	Name     string  `json:"name"`
	Value    float64 `json:"value"`
	Unit     string  `json:"unit"`           // "×" for a ratio, "ms", "µs", "MiB"
	Goal     string  `json:"goal,omitempty"` // "" for a measurement to inform, not a goal
	Met      bool    `json:"met"`
	Measured string  `json:"measured"` // what the value was computed from
}

// targets checks the goals against the baselines measured in the same run.
func targets(stages []Result, o AllOptions) []Target {
	find := func(name string) (Result, bool) {
		for _, r := range stages {
			if r.Stage == name && r.Count > 0 {
				return r, true
			}
		}
		return Result{}, false
	}
	var ts []Target
	for _, policy := range []string{"sync always", "default sync"} {
		for _, c := range o.Clients {
			pub, ok1 := find(stageName("publish", policy, c))
			in, ok2 := find(stageName("ingest", policy, c))
			if !ok1 || !ok2 {
				continue
			}
			ratio := in.Rate / pub.Rate
			ts = append(ts, Target{
				Name: fmt.Sprintf("ingest ÷ raw publish, %s, c=%d", policy, c), Value: ratio, Unit: "×",
				Goal: "≥ 0.90×", Met: ratio >= 0.9,
				Measured: fmt.Sprintf("%s / %s req/s", count(in.Rate), count(pub.Rate)),
			})
			if b, ok := find(stageName(fmt.Sprintf("publish atomic batches of %d", o.Batch), policy, c)); ok {
				ts = append(ts, Target{
					Name: fmt.Sprintf("atomic batches of %d ÷ raw publish, %s, c=%d", o.Batch, policy, c), Value: b.Rate / pub.Rate, Unit: "×",
					Measured: fmt.Sprintf("%s / %s msg/s: what a group commit in ingest could reach", count(b.Rate), count(pub.Rate)),
				})
			}
			if bh, ok := find(stageName("bare handler", policy, c)); ok {
				ratio := in.Rate / bh.Rate
				ts = append(ts, Target{
					Name: fmt.Sprintf("ingest ÷ bare handler, %s, c=%d", policy, c), Value: ratio, Unit: "×",
					Goal: "≥ 0.90×", Met: ratio >= 0.9,
					Measured: fmt.Sprintf("%s / %s req/s", count(in.Rate), count(bh.Rate)),
				})
			}
			extra := in.Latency.P99 - pub.Latency.P99
			ts = append(ts, Target{
				Name: fmt.Sprintf("ingest p99 − raw p99, %s, c=%d", policy, c), Value: ms(extra), Unit: "ms",
				Goal: "≤ 2 ms", Met: extra <= 2*time.Millisecond,
				Measured: fmt.Sprintf("%s − %s", msString(in.Latency.P99), msString(pub.Latency.P99)),
			})
		}
	}
	if w, ok := find("worker drain"); ok {
		if f, ok := find("raw fold baseline p=" + strconv.Itoa(o.WorkerParallel)); ok {
			ratio := w.Rate / f.Rate
			ts = append(ts, Target{
				Name: fmt.Sprintf("worker ÷ raw fold, p=%d", o.WorkerParallel), Value: ratio, Unit: "×",
				Goal: "≥ 0.90×", Met: ratio >= 0.9,
				Measured: fmt.Sprintf("%s / %s events/s", count(w.Rate), count(f.Rate)),
			})
			if w.CPU != nil && f.CPU != nil {
				ratio := 0.0 // a stage too short for the clock ticks of /proc
				if f.CPU.Postgres > 0 {
					ratio = w.CPU.Postgres / f.CPU.Postgres
				}
				ts = append(ts, Target{
					Name: "Postgres CPU per event, worker ÷ raw fold", Value: ratio, Unit: "×",
					Goal: "≤ 1.30×", Met: f.CPU.Postgres > 0 && ratio <= 1.3,
					Measured: fmt.Sprintf("%.1f / %.1f µs", w.CPU.Postgres, f.CPU.Postgres),
				})
			}
		}
		if up, ok := find("upsert baseline p=" + strconv.Itoa(o.WorkerParallel)); ok {
			ts = append(ts, Target{
				Name: fmt.Sprintf("worker ÷ raw upsert, p=%d", o.WorkerParallel), Value: w.Rate / up.Rate, Unit: "×",
				Measured: fmt.Sprintf("%s / %s events/s: the upsert skips fetch, decode, ledger and ack", count(w.Rate), count(up.Rate)),
			})
		}
		if w.CPU != nil {
			ts = append(ts, Target{
				Name: "worker process CPU per event", Value: w.CPU.Worker, Unit: "µs",
				Goal: "≤ 25 µs", Met: w.CPU.Worker <= 25,
				Measured: fmt.Sprintf("worker %.1f µs, Postgres %.1f µs, NATS and the load generator %.1f µs", w.CPU.Worker, w.CPU.Postgres, w.CPU.Self),
			})
		}
		if w.PeakRSS > 0 {
			mib := float64(w.PeakRSS) / (1 << 20)
			ts = append(ts, Target{
				Name: "worker process peak RSS", Value: mib, Unit: "MiB", Goal: "≤ 128 MiB", Met: mib <= 128,
				Measured: "VmHWM after the drain and before the end-to-end stages",
			})
		}
	}
	if e, ok := find(fmt.Sprintf("e2e @%g/s", o.E2ERate)); ok && e.Lag != nil {
		ts = append(ts, Target{
			Name: fmt.Sprintf("webhook 2xx → row visible p99 @%g/s", o.E2ERate), Value: ms(e.Lag.P99), Unit: "ms",
			Goal: "≤ 50 ms", Met: e.Lag.P99 <= 50*time.Millisecond && e.Error == "",
			Measured: fmt.Sprintf("p50 %s, p99 %s over %d events", msString(e.Lag.P50), msString(e.Lag.P99), e.Lag.Count),
		})
	}
	base, ok1 := find("api baseline c=" + strconv.Itoa(o.APIClients))
	me, ok2 := find("api /auth/me c=" + strconv.Itoa(o.APIClients))
	if ok1 && ok2 {
		ratio := me.Rate / base.Rate
		measured := fmt.Sprintf("%s / %s req/s", count(me.Rate), count(base.Rate))
		ts = append(ts,
			Target{Name: "/auth/me ÷ api baseline", Value: ratio, Unit: "×", Goal: "≥ 1.0×", Met: ratio >= 1, Measured: measured},
			Target{Name: "/auth/me ÷ api baseline, with a token cache", Value: ratio, Unit: "×", Goal: "≥ 1.5×", Met: ratio >= 1.5, Measured: measured},
		)
	}
	return ts
}

// WriteTable writes the report as two aligned tables: the stages, then the targets; with notes,
// each stage's note (what it counts, how it ran) between them.
func (r Report) WriteTable(w io.Writer, notes bool) error {
	out := &printer{w: w}
	seed := ""
	if r.Seed != 0 {
		seed = fmt.Sprintf(", seed %d", r.Seed)
	}
	out.printf("clerksync loadgen — %s, %d CPUs, %s/%s, %s%s\n\n",
		r.Started.Format(time.RFC3339), r.Machine.CPUs, r.Machine.OS, r.Machine.Arch, r.Machine.GoVersion, seed)
	// tabwriter aligns every column right; the stage names are padded to read left-aligned.
	width := len("stage")
	for _, s := range r.Stages {
		width = max(width, utf8.RuneCountInString(s.Stage))
	}
	pad := func(s string) string { return s + strings.Repeat(" ", width-utf8.RuneCountInString(s)) }
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	table := &printer{w: tw}
	table.printf("%s\tcount\trate/s\tp50\tp90\tp99\tmax\tlag p50\tlag p99\toutcomes\t\n", pad("stage"))
	for _, s := range r.Stages {
		lat, lag := []string{"-", "-", "-", "-"}, []string{"-", "-"}
		if s.Latency != nil && s.Latency.Count > 0 {
			lat = []string{msString(s.Latency.P50), msString(s.Latency.P90), msString(s.Latency.P99), msString(s.Latency.Max)}
		}
		if s.Lag != nil && s.Lag.Count > 0 {
			lag = []string{msString(s.Lag.P50), msString(s.Lag.P99)}
		}
		table.printf("%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", pad(s.Stage), s.Count, count(s.Rate),
			lat[0], lat[1], lat[2], lat[3], lag[0], lag[1], outcomes(s.Statuses))
	}
	if err := errors.Join(table.err, tw.Flush()); err != nil {
		return err
	}
	for _, s := range r.Stages {
		if s.Error != "" {
			out.printf("  %s: %s\n", s.Stage, s.Error)
		}
	}
	if notes && len(r.Stages) > 0 {
		out.printf("\nnotes:\n")
		for _, s := range r.Stages {
			note := s.Note
			if s.CPU != nil {
				note = strings.TrimPrefix(note+"; "+s.CPU.String(), "; ")
			}
			if note != "" {
				out.printf("  %s: %s\n", s.Stage, note)
			}
		}
	}
	if r.PeakRSS > 0 {
		out.printf("\npeak RSS of this process (load generator, NATS, ingest, worker, api): %d MiB\n", r.PeakRSS>>20)
	}
	if r.TargetPID > 0 {
		out.printf("\npeak RSS of the process under test (pid %d): %.1f MiB\n", r.TargetPID, float64(r.TargetPeakRSS)/(1<<20))
	}
	if len(r.Targets) == 0 || out.err != nil {
		return out.err
	}
	out.printf("\n")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	table = &printer{w: tw}
	table.printf("target\tvalue\tgoal\t\tfrom\n")
	for _, t := range r.Targets {
		verdict := "missed"
		switch {
		case t.Goal == "":
			verdict = "(info)"
		case t.Met:
			verdict = "met"
		}
		value := fmt.Sprintf("%.2f×", t.Value)
		if t.Unit != "×" {
			value = fmt.Sprintf("%.1f %s", t.Value, t.Unit)
		}
		table.printf("%s\t%s\t%s\t%s\t%s\n", t.Name, value, t.Goal, verdict, t.Measured)
	}
	return errors.Join(out.err, table.err, tw.Flush())
}

// printer writes formatted text and keeps the first error, so that a report is written line by
// line and checked once.
type printer struct {
	w   io.Writer
	err error
}

func (p *printer) printf(format string, args ...any) {
	if p.err == nil {
		_, p.err = fmt.Fprintf(p.w, format, args...)
	}
}

func outcomes(m map[string]int) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s:%d", k, m[k]))
	}
	return strings.Join(parts, " ")
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func msString(d time.Duration) string {
	switch {
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.2fms", ms(d))
	case d < 100*time.Millisecond:
		return fmt.Sprintf("%.1fms", ms(d))
	default:
		return fmt.Sprintf("%.0fms", ms(d))
	}
}

// count formats a rate with thousands separators.
func count(f float64) string {
	s := strconv.FormatInt(int64(f+0.5), 10)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// NewReport is an empty report about this machine, for the single-stage commands.
func NewReport(seed uint64) Report {
	return Report{
		Started: time.Now().UTC(),
		Machine: Machine{CPUs: runtime.NumCPU(), OS: runtime.GOOS, Arch: runtime.GOARCH, GoVersion: runtime.Version()},
		Seed:    seed,
	}
}

// peakRSS returns this process's peak resident set size in bytes, or 0 when the system does not
// report it.
func peakRSS() int64 {
	n, _ := PeakRSS(0)
	return n
}

// PeakRSS returns the peak resident set size (VmHWM, Linux) of process pid, 0 meaning this one,
// in bytes.
func PeakRSS(pid int) (int64, error) {
	proc := "self"
	if pid > 0 {
		proc = strconv.Itoa(pid)
	}
	b, err := os.ReadFile("/proc/" + proc + "/status")
	if err != nil {
		return 0, fmt.Errorf("reading the peak RSS of process %s: %w", proc, err)
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("reading the peak RSS of process %s: %w", proc, err)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("reading the peak RSS of process %s: no VmHWM", proc)
}
