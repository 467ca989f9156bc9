package worker

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/clerksync/clerksync/internal/clerkapi/clerkapitest"
	"github.com/clerksync/clerksync/internal/event"
	"github.com/clerksync/clerksync/internal/event/eventtest"
	"github.com/clerksync/clerksync/internal/postgres/postgrestest"
	"github.com/clerksync/clerksync/internal/service"
)

// BenchmarkReconcileBackfill measures a backfill the way a new installation does it: N users in
// a fake Backend API with no rate limit (CLERK_API_RATE far above what the sweep reaches, so the
// bound is ours: paging, comparing with Postgres, publishing and waiting for PubAcks), swept
// into the stream with no worker running; then the worker (Run, the default batch size and
// parallelism) drains those snapshots into Postgres. It reports both rates and their ratio: the
// goal is a sweep that is never the bottleneck (sweep ≥ 0.9× drain).
//
//	go test -run '^$' -bench BenchmarkReconcileBackfill -benchtime 1x ./internal/worker/
//
// RECONCILE_BENCH_USERS sets N (default 20,000).
func BenchmarkReconcileBackfill(b *testing.B) {
	users := 20000
	if v := os.Getenv("RECONCILE_BENCH_USERS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			b.Fatalf("RECONCILE_BENCH_USERS=%q: want a positive integer", v)
		}
		users = n
	}
	for b.Loop() {
		sweepRate, drainRate, publishRate := backfillOnce(b, users)
		b.ReportMetric(publishRate, "one_at_a_time_publish/s")
		b.ReportMetric(sweepRate, "swept_users/s")
		b.ReportMetric(drainRate, "drained_users/s")
		b.ReportMetric(sweepRate/drainRate, "sweep/drain")
	}
}

func backfillOnce(b *testing.B, users int) (sweepRate, drainRate, publishRate float64) {
	b.Helper()
	ctx := context.Background()
	dbURL := postgrestest.NewDatabase(b)
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		b.Fatal(err)
	}
	defer pool.Close()
	srv := eventtest.NewServer(b)
	_, js := eventtest.Connect(b, srv.URL())
	publishRate = barePublish(b, js, users)
	api := clerkapitest.New(b, testKey)
	for i := range users {
		id := fmt.Sprintf("user_bench_%07d", i)
		if err := api.Put(clerkapitest.NewUser(id, 1700000000000+int64(i), 1700000100000+int64(i), "Bench")); err != nil {
			b.Fatal(err)
		}
	}
	vars := map[string]string{
		"NATS_URL": srv.URL(), "DATABASE_URL": dbURL, "WORKER_ADDR": "127.0.0.1:0",
		"CLERK_API_URL": api.URL, "CLERK_SECRET_KEY": testKey, "CLERK_API_RATE": "1000000",
	}
	cfg, err := service.ParseEnv[Config](func(k string) string { return vars[k] })
	if err != nil {
		b.Fatal(err)
	}
	cfg.NoMigrate = true
	logger := slog.New(slog.DiscardHandler)

	began := time.Now()
	sums, err := Reconcile(ctx, cfg, ReconcileOptions{}, logger)
	if err != nil {
		b.Fatal(err)
	}
	swept := time.Since(began)
	if sums[0].Published != users {
		b.Fatalf("published %d, want %d", sums[0].Published, users)
	}

	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	began = time.Now()
	go func() { done <- Run(runCtx, cfg, logger, nil) }()
	for {
		var n int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM processed_events`).Scan(&n); err != nil {
			b.Fatal(err)
		}
		if n == users {
			break
		}
		if time.Since(began) > 5*time.Minute {
			b.Fatalf("the worker applied %d of %d snapshots in 5 minutes", n, users)
		}
		time.Sleep(10 * time.Millisecond)
	}
	drained := time.Since(began)
	stop()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	sweepRate, drainRate = float64(users)/swept.Seconds(), float64(users)/drained.Seconds()
	b.Logf("%d users: the same number of snapshot-sized messages published one at a time (window 256) %.0f msg/s; swept in %s (%.0f users/s: %d pages, %d requests), drained in %s (%.0f users/s): sweep/drain %.2f×",
		users, publishRate, swept.Round(time.Millisecond), sweepRate, sums[0].Pages, sums[0].Requests,
		drained.Round(time.Millisecond), drainRate, sweepRate/drainRate)
	return sweepRate, drainRate, publishRate
}

// barePublish is what publishing one message at a time reaches: n messages of a snapshot's size published
// to a scratch stream on the same server (file storage, sync always), through the same
// Publisher and window, with nothing else to do.
func barePublish(b *testing.B, js jetstream.JetStream, n int) float64 {
	b.Helper()
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "BENCH", Subjects: []string{"bench.>"},
		Storage: jetstream.FileStorage, Duplicates: 10 * time.Minute}); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = js.DeleteStream(ctx, "BENCH") }()
	body := clerkapitest.NewUser("user_bench_0000000", 1700000000000, 1700000100000, "Bench")
	p := event.NewPublisher(js, 256, 30*time.Second)
	began := time.Now()
	for i := range n {
		msg, err := event.Snapshot(event.KindUser, fmt.Sprintf("user_bench_%07d", i), 1, body, time.Now())
		if err != nil {
			b.Fatal(err)
		}
		msg.Subject = "bench.snapshot"
		if err := p.Publish(ctx, msg); err != nil {
			b.Fatal(err)
		}
	}
	if err := p.Wait(ctx); err != nil {
		b.Fatal(err)
	}
	return float64(n) / time.Since(began).Seconds()
}
