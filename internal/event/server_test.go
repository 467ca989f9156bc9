package event_test

import (
	"testing"

	"github.com/clerksync/clerksync/internal/event"
)

func TestServerSupported(t *testing.T) {
	t.Parallel()
	for v, want := range map[string]bool{
		"2.12.6": true, "2.12.7": true, "2.13.0": true, "3.0.0": true, "2.15.2": true, "2.14.0-beta.1": true,
		"2.12.5": false, "2.11.9": false, "2.9.10": false, "1.99.99": false,
		"": false, "2.12": false, "x.y.z": false, "2.-1.0": false,
	} {
		if got := event.ServerSupported(v); got != want {
			t.Errorf("ServerSupported(%q) = %v, want %v", v, got, want)
		}
	}
}
