package loadgen

import (
	"encoding/json"
	"slices"
	"sync"
	"time"
)

// Latencies collects request latencies from many goroutines. Each goroutine records into its own
// Sample and Merge folds them, so recording takes no lock.
type Latencies struct {
	mu  sync.Mutex
	all []time.Duration
}

// Sample is one goroutine's latencies.
type Sample []time.Duration

// Merge adds s to l.
func (l *Latencies) Merge(s Sample) {
	l.mu.Lock()
	l.all = append(l.all, s...)
	l.mu.Unlock()
}

// sorted sorts what was recorded and returns it.
func (l *Latencies) sorted() []time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	slices.Sort(l.all)
	return l.all
}

// Summary sorts what was recorded and summarises it.
func (l *Latencies) Summary() Summary {
	l.mu.Lock()
	defer l.mu.Unlock()
	return Summarize(l.all)
}

// Summary is a latency distribution: nearest-rank percentiles, in milliseconds when encoded.
type Summary struct {
	Count              int
	P50, P90, P99, Max time.Duration
}

// MarshalJSON writes the percentiles in milliseconds.
func (s Summary) MarshalJSON() ([]byte, error) {
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	return json.Marshal(struct {
		Count int     `json:"count"`
		P50   float64 `json:"p50_ms"`
		P90   float64 `json:"p90_ms"`
		P99   float64 `json:"p99_ms"`
		Max   float64 `json:"max_ms"`
	}{s.Count, ms(s.P50), ms(s.P90), ms(s.P99), ms(s.Max)})
}

// Summarize sorts d in place and returns its percentiles.
func Summarize(d []time.Duration) Summary {
	slices.Sort(d)
	return Summary{
		Count: len(d),
		P50:   Percentile(d, 50),
		P90:   Percentile(d, 90),
		P99:   Percentile(d, 99),
		Max:   Percentile(d, 100),
	}
}

// Percentile returns the nearest-rank p-th percentile of sorted: the smallest value that at
// least p percent of the values are less than or equal to. It is 0 for no values.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	// rank = ceil(p/100 * n), computed in integers for p with at most two decimals so that
	// 99% of 100 values is the 99th, not the 100th through a rounding error.
	n := len(sorted)
	hundredths := int(p*100 + 0.5)
	rank := (hundredths*n + 100*100 - 1) / (100 * 100)
	rank = min(max(rank, 1), n)
	return sorted[rank-1]
}
