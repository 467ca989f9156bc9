package worker

import (
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
			Help:    "Messages per fetched batch.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 11), // 1 … 1024
		}),
		applyTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "clerksync_worker_apply_seconds",
			Help:    "Time to handle a batch: parse, one Postgres transaction, acks.",
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

func (m *metrics) count(typ string, o outcome) {
	m.events.WithLabelValues(metricType(typ), string(o)).Inc()
}

// observeCommit records the freshness of the events a commit recorded (not the duplicates).
func (m *metrics) observeCommit(evs []decoded, outcomes []outcome, committed time.Time) {
	for i, e := range evs {
		m.count(e.Type, outcomes[i])
		if outcomes[i] == outcomeDuplicate || e.Event.Timestamp.IsZero() {
			continue
		}
		m.freshness.Observe(committed.Sub(e.Event.Timestamp).Seconds())
	}
}
