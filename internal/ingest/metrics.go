package ingest

import (
	"strconv"
	"sync"
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

	// The children every stored webhook touches, looked up once rather than per request (a
	// lookup hashes the label values under a lock). A lazy child appears in /metrics at its first
	// use, as it would through WithLabelValues.
	secretMatched []prometheus.Counter
	publishOK     func() prometheus.Observer
	answered      map[string]routeCounters // by route pattern
}

// routeCounters are a webhook route's 200s, stored and duplicate.
type routeCounters struct {
	stored, duplicate func() prometheus.Counter
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
		m.secretMatched = append(m.secretMatched, m.secretMatches.WithLabelValues(strconv.Itoa(i)))
	}
	m.publishOK = sync.OnceValue(func() prometheus.Observer { return m.publish.WithLabelValues("ok") })
	m.answered = make(map[string]routeCounters)
	for _, route := range [...]string{routeWebhooks, routeWebhooksAlias} {
		m.answered[route] = routeCounters{
			stored:    sync.OnceValue(func() prometheus.Counter { return m.requests.WithLabelValues(route, "200", "stored") }),
			duplicate: sync.OnceValue(func() prometheus.Counter { return m.requests.WithLabelValues(route, "200", "duplicate") }),
		}
	}
	return m
}

func (m *metrics) observePublish(d time.Duration, err error) {
	if err != nil {
		m.publish.WithLabelValues("error").Observe(d.Seconds())
		return
	}
	m.publishOK().Observe(d.Seconds())
}

// stored counts a 200 on route.
func (m *metrics) stored(route string, duplicate bool) {
	rc, ok := m.answered[route]
	switch {
	case !ok: // not a webhook route: cannot happen, but a count must not be lost
		code := "stored"
		if duplicate {
			code = "duplicate"
		}
		m.requests.WithLabelValues(route, "200", code).Inc()
	case duplicate:
		rc.duplicate().Inc()
	default:
		rc.stored().Inc()
	}
}
