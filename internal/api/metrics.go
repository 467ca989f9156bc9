package api

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/clerksync/clerksync/internal/session"
)

// reasonMissingToken labels requests that carried no token at all.
const reasonMissingToken = "missing_token"

// metrics are the api's Prometheus series, registered on the registry of one Run.
type metrics struct {
	// requests counts answers by route (the registered path, or "unmatched"), method and status.
	requests *prometheus.CounterVec
	// duration is the time to answer, by route.
	duration *prometheus.HistogramVec
	// authFailures counts refused requests by reason: missing_token, or why the token was
	// refused (session.Reason).
	authFailures *prometheus.CounterVec
	// jwksFetches counts JWKS fetches by result (ok/error).
	jwksFetches *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "clerksync_api_requests_total",
			Help: "Requests answered, by route, method and HTTP status.",
		}, []string{"route", "method", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "clerksync_api_request_duration_seconds",
			Help:    "Time to answer a request, by route.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"route"}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "clerksync_api_auth_failures_total",
			Help: "Requests refused for their session token, by reason (missing_token, or why the token was invalid).",
		}, []string{"reason"}),
		jwksFetches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "clerksync_api_jwks_fetches_total",
			Help: "Fetches of the Clerk JWKS, by result (ok/error).",
		}, []string{"result"}),
	}
	reg.MustRegister(m.requests, m.duration, m.authFailures, m.jwksFetches)
	// Every reason shows up from the start, at zero, so a spike is a rate over a known series.
	m.authFailures.WithLabelValues(reasonMissingToken)
	for _, r := range session.Reasons {
		m.authFailures.WithLabelValues(string(r))
	}
	return m
}

func (m *metrics) observeJWKSFetch(err error) {
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.jwksFetches.WithLabelValues(result).Inc()
}
