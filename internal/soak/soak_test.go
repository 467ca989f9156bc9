package soak

import (
	"context"
	"testing"
	"time"
)

// TestShortSoak is the crash soak cut down for `make test`: 2,000 webhooks over 15 s, with
// one SIGKILL of the worker, one of NATS and one crash of Postgres while they are sent.
func TestShortSoak(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	res, err := Run(ctx, Config{
		Webhooks:      2000,
		Users:         200,
		Seed:          uint64(time.Now().UnixNano()),
		Duration:      15 * time.Second,
		Senders:       16,
		KillWorker:    Fault{Min: 3 * time.Second, Max: 4 * time.Second, Count: 1},
		KillNATS:      Fault{Min: 6 * time.Second, Max: 7 * time.Second, Count: 1},
		CrashPostgres: Fault{Min: 9 * time.Second, Max: 10 * time.Second, Count: 1},
		Drain:         90 * time.Second,
		Progress:      testWriter{t},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Log(res)
	if err := res.Err(); err != nil {
		t.Fatal(err)
	}
	for _, target := range []string{"worker", "nats", "postgres"} {
		if res.Kills[target] != 1 {
			t.Errorf("%s was killed %d times, want once", target, res.Kills[target])
		}
	}
}
