package event

import (
	"log/slog"
	"math"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
)

// MinServerVersion is the oldest nats-server clerksync trusts with its data: older ones have
// known JetStream data-loss bugs (see docs/operations.md).
const MinServerVersion = "2.12.6"

// ServerSupported reports whether a nats-server version ("2.12.6", "2.14.0-beta.1") is at least
// MinServerVersion. A version it cannot read is not supported.
func ServerSupported(version string) bool {
	got, ok := versionParts(version)
	floor, _ := versionParts(MinServerVersion)
	if !ok {
		return false
	}
	for i := range got {
		if got[i] != floor[i] {
			return got[i] > floor[i]
		}
	}
	return true
}

func versionParts(v string) ([]int, bool) {
	core, _, _ := strings.Cut(strings.TrimPrefix(v, "v"), "-")
	fields := strings.Split(core, ".")
	if len(fields) != 3 {
		return nil, false
	}
	parts := make([]int, 0, len(fields))
	for _, f := range fields {
		n, err := strconv.Atoi(f)
		if err != nil || n < 0 {
			return nil, false
		}
		parts = append(parts, n)
	}
	return parts, true
}

// WarnIfOldServer logs a warning naming the connected server's version and the floor when the
// server is older than MinServerVersion. Call it after every (re)connect.
func WarnIfOldServer(nc *nats.Conn, logger *slog.Logger) {
	if v := nc.ConnectedServerVersion(); v != "" && !ServerSupported(v) {
		logger.Warn("the NATS server is older than clerksync supports: older versions have known JetStream data-loss bugs",
			"server_version", v, "minimum", MinServerVersion)
	}
}

// ServerSupportedGauge is the metric clerksync_<service>_nats_server_supported: 1 while the
// connected server is at least MinServerVersion, 0 while it is older, NaN while disconnected.
func ServerSupportedGauge(nc *nats.Conn, service string) prometheus.GaugeFunc {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "clerksync_" + service + "_nats_server_supported",
		Help: "1 while the connected NATS server is at least " + MinServerVersion + ", 0 while it is older (known JetStream data-loss bugs), NaN while disconnected.",
	}, func() float64 {
		v := nc.ConnectedServerVersion()
		switch {
		case v == "" || !nc.IsConnected():
			return math.NaN()
		case ServerSupported(v):
			return 1
		}
		return 0
	})
}
