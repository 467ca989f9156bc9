package ingest

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are ingest's Prometheus series, registered on the registry of one Run.
type metrics struct {
	// requests counts webhook-route answers by route, status and code: the error code, or
	// "stored" / "duplicate" for a 200.
	requests *prometheus.CounterVec
	// publish is the time from publish to PubAck (or failure), by result.
	publish *prometheus.HistogramVec
	// secretMatches counts verified webhooks by the index of the secret in CLERK_WEBHOOK_SECRET
	// that matched, so an operator sees when the old secret of a rotation goes unused.
	secretMatches *prometheus.CounterVec
	// duplicates counts webhooks JetStream already had (same svix-id).
	duplicates prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, secrets int) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "clerksync_ingest_requests_total",
			Help: "Webhook requests answered, by route, HTTP status and code (error code, or stored/duplicate).",
		}, []string{"route", "status", "code"}),
		publish: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "clerksync_ingest_publish_duration_seconds",
			Help:    "Time from publishing a webhook to JetStream's PubAck (or the failure), by result (ok/error).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"result"}),
		secretMatches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "clerksync_ingest_secret_matches_total",
			Help: "Verified webhooks by the index (0-based) in CLERK_WEBHOOK_SECRET of the secret that matched.",
		}, []string{"secret"}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "clerksync_ingest_duplicates_total",
			Help: "Webhooks whose svix-id JetStream had already stored (answered with duplicate:true).",
		}),
	}
	reg.MustRegister(m.requests, m.publish, m.secretMatches, m.duplicates)
	// Every secret shows up from the start, at zero until it matches.
	for i := range secrets {
		m.secretMatches.WithLabelValues(strconv.Itoa(i))
	}
	return m
}

func (m *metrics) observePublish(d time.Duration, err error) {
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.publish.WithLabelValues(result).Observe(d.Seconds())
}
