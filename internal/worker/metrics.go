package worker

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics is what the worker exposes on /metrics.
type metrics struct {
	events      *prometheus.CounterVec
	batchSize   prometheus.Histogram
	applyTime   prometheus.Histogram
	freshness   prometheus.Histogram
	deadLetters *prometheus.CounterVec
	postgresUp  prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "clerksync_worker_events_total",
			Help: "Stream messages handled, by event type and outcome (applied, duplicate, stale, ignored, dead_lettered, retried).",
		}, []string{"type", "outcome"}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "clerksync_worker_batch_size",
			Help:    "Messages per batch a lane applies.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 11), // 1 … 1024
		}),
		applyTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "clerksync_worker_apply_seconds",
			Help:    "Time a lane takes to apply a batch: one Postgres transaction, then its acks.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16), // 0.5 ms … 16 s
		}),
		freshness: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "clerksync_worker_freshness_seconds",
			Help:    "Lag from a Clerk event's timestamp to the commit that recorded it.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 18), // 10 ms … ~22 min
		}),
		deadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "clerksync_worker_dead_letters_total",
			Help: "Messages parked in dead_letters, by reason (poison, max_attempts, max_deliveries).",
		}, []string{"reason"}),
		postgresUp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "clerksync_worker_postgres_up",
			Help: "1 while the worker can reach Postgres, 0 while it holds its work waiting for it.",
		}),
	}
	m.postgresUp.Set(1)
	reg.MustRegister(m.events, m.batchSize, m.applyTime, m.freshness, m.deadLetters, m.postgresUp)
	return m
}

// tally counts verdicts: the events metric, the freshness of what a commit recorded, and the
// Summary a command reports. The applier counts every verdict here, once.
type tally struct {
	metrics *metrics

	mu  sync.Mutex
	sum Summary
}

func newTally(m *metrics) *tally { return &tally{metrics: m} }

// add counts d's outcome o; committed is when the transaction that recorded it committed (zero
// when none did).
func (t *tally) add(d *delivery, o outcome, committed time.Time) {
	t.metrics.events.WithLabelValues(metricType(d.Type), string(o)).Inc()
	if ts := d.timestamp(); !committed.IsZero() && o != outcomeDuplicate && !ts.IsZero() {
		t.metrics.freshness.Observe(committed.Sub(ts).Seconds())
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	switch o {
	case outcomeApplied:
		t.sum.Applied++
	case outcomeStale:
		t.sum.Stale++
	case outcomeDuplicate:
		t.sum.Duplicates++
	case outcomeIgnored:
		t.sum.Ignored++
	case outcomeDeadLettered:
		t.sum.DeadLettered++
	}
}

// parked counts a message newly written to dead_letters, by why.
func (t *tally) parked(why string) {
	t.metrics.deadLetters.WithLabelValues(why).Inc()
}

// summary returns the counts so far.
func (t *tally) summary() Summary {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.sum
}

// metricType is the "type" label of a message: one of the types the worker folds, else "other",
// so an unknown event type cannot grow the metric without bound.
func metricType(typ string) string {
	if folded(typ) {
		return typ
	}
	return "other"
}
