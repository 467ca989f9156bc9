package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/clerksync/clerksync/internal/event"
	"github.com/clerksync/clerksync/internal/postgres"
)

// ReplayOptions choose what worker replay reads and how it applies it. Exactly one of Since and
// FromSeq is set.
type ReplayOptions struct {
	Since   time.Time // start at the first message stored at or after Since
	FromSeq uint64    // start at this stream sequence
	ToSeq   uint64    // stop after this sequence; 0: at the end of the stream as the replay starts
	// DryRun applies every batch in a transaction that is rolled back: the summary says what would
	// happen (each batch judged against the database as it is) and nothing is written.
	DryRun bool
	// Reapply ignores processed_events and rewrites rows whose version equals the event's: it
	// repairs a projection after a bug fix.
	Reapply bool
}

// Summary counts what a replay or a dead-letter retry did with the messages it read.
type Summary struct {
	Read         int // messages read
	Applied      int // events whose version is now the user's row
	Stale        int // events recorded but beaten by a newer version or a tombstone
	Duplicates   int // events skipped because processed_events has them
	Ignored      int // event types the worker does not apply
	DeadLettered int // messages parked in dead_letters (replay), or still failing (retry)
	LastSeq      uint64
}

func (s Summary) logAttrs() []any {
	return []any{"read", s.Read, "applied", s.Applied, "stale", s.Stale, "duplicates", s.Duplicates,
		"ignored", s.Ignored, "dead_lettered", s.DeadLettered, "last_seq", s.LastSeq}
}

// replayAttrs are logAttrs as a replay reports them: in a dry run nothing is parked, so the
// count says what would be.
func (s Summary) replayAttrs(dryRun bool) []any {
	attrs := s.logAttrs()
	if dryRun {
		for i := 0; i < len(attrs); i += 2 {
			if attrs[i] == "dead_lettered" {
				attrs[i] = "would_park"
			}
		}
	}
	return attrs
}

func (o ReplayOptions) validate() error {
	switch {
	case o.Since.IsZero() == (o.FromSeq == 0):
		return errors.New("replay: give exactly one of --since and --from-seq")
	case o.ToSeq != 0 && o.FromSeq > o.ToSeq:
		return fmt.Errorf("replay: --from-seq %d is after --to-seq %d", o.FromSeq, o.ToSeq)
	}
	return nil
}

// Replay reads the worker's subjects (event.WorkerSubjects) from the stream with an ordered
// consumer of its own (the workers' durable consumer is untouched) and applies it in batches through the same code as the worker:
// events already in processed_events are skipped unless opts.Reapply, poison is parked in
// dead_letters. It logs progress and a summary. Postgres being unreachable stops it with an
// error: a replay may simply be run again.
func Replay(ctx context.Context, cfg Config, opts ReplayOptions, logger *slog.Logger) (Summary, error) {
	var sum Summary
	if err := opts.validate(); err != nil {
		return sum, err
	}
	if err := cfg.validate(); err != nil {
		return sum, err
	}
	pool, err := postgres.Open(ctx, cfg.DatabaseURL)
	if err != nil {
		return sum, err
	}
	defer pool.Close()
	nc, err := nats.Connect(cfg.NATSURL, nats.Name("clerksync-worker-replay"))
	if err != nil {
		return sum, fmt.Errorf("connecting to nats: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return sum, fmt.Errorf("opening jetstream: %w", err)
	}
	stream, err := js.Stream(ctx, event.Stream)
	if err != nil {
		return sum, fmt.Errorf("opening stream %s: %w", event.Stream, err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return sum, fmt.Errorf("reading stream %s: %w", event.Stream, err)
	}
	end := info.State.LastSeq
	if opts.ToSeq != 0 && opts.ToSeq < end {
		end = opts.ToSeq
	}
	ccfg := jetstream.OrderedConsumerConfig{FilterSubjects: event.WorkerSubjects()}
	if opts.FromSeq != 0 {
		ccfg.DeliverPolicy, ccfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, opts.FromSeq
	} else {
		since := opts.Since
		ccfg.DeliverPolicy, ccfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &since
	}
	cons, err := stream.OrderedConsumer(ctx, ccfg)
	if err != nil {
		return sum, fmt.Errorf("creating a replay consumer: %w", err)
	}
	start := []any{"to_seq", end, "dry_run", opts.DryRun, "reapply", opts.Reapply}
	if opts.FromSeq != 0 {
		start = append([]any{"from_seq", opts.FromSeq}, start...)
	} else {
		start = append([]any{"since", opts.Since}, start...)
	}
	logger.Info("replay started", start...)
	if opts.FromSeq > info.State.LastSeq {
		logger.Warn("--from-seq is past the end of the stream: nothing to replay",
			"from_seq", opts.FromSeq, "last_seq", info.State.LastSeq)
	}

	r := replayer{cfg: cfg, logger: logger, dryRun: opts.DryRun, started: time.Now(), applier: &applier{
		pool: pool, logger: logger, tally: newTally(newMetrics(prometheus.NewRegistry())),
		maxAttempts: 1, // a replay parks what fails at once
		timeout:     cfg.AckWait, reapply: opts.Reapply, dryRun: opts.DryRun,
	}}
	err = r.run(ctx, cons, end)
	sum = r.summary()
	elapsed := time.Since(r.started).Round(time.Millisecond)
	if err != nil {
		logger.Error("replay stopped", append(sum.replayAttrs(opts.DryRun), "elapsed", elapsed, "err", err)...)
		return sum, err
	}
	logger.Info("replay finished", append(sum.replayAttrs(opts.DryRun), "dry_run", opts.DryRun, "elapsed", elapsed)...)
	return sum, nil
}

// replayer is replay's source: an ordered consumer of its own, read a batch at a time into the
// applier.
type replayer struct {
	cfg      Config
	logger   *slog.Logger
	applier  *applier
	dryRun   bool
	started  time.Time
	firstSeq uint64 // the first sequence read, for the progress
	read     int
	lastSeq  uint64
}

// progress logs how far the replay is through the sequences up to end: percent, events per
// second, and the time left at that pace.
func (r *replayer) progress(end uint64) {
	elapsed := time.Since(r.started)
	attrs := r.summary().replayAttrs(r.dryRun)
	if span := end - r.firstSeq + 1; r.firstSeq != 0 && end >= r.firstSeq && span > 0 {
		done := float64(r.lastSeq-r.firstSeq+1) / float64(span)
		attrs = append(attrs, "end_seq", end, "percent", fmt.Sprintf("%.1f", 100*done),
			"events_per_s", fmt.Sprintf("%.0f", float64(r.read)/elapsed.Seconds()))
		if done > 0 {
			attrs = append(attrs, "eta", (time.Duration(float64(elapsed)/done) - elapsed).Round(time.Second))
		}
	}
	r.logger.Info("replay progress", attrs...)
}

func (r *replayer) summary() Summary {
	return r.applier.summaryOf(Summary{Read: r.read, LastSeq: r.lastSeq})
}

func (r *replayer) run(ctx context.Context, cons jetstream.Consumer, end uint64) error {
	if info, err := cons.Info(ctx); err != nil {
		return fmt.Errorf("reading the replay consumer: %w", err)
	} else if info.NumPending == 0 {
		return nil
	}
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("reading the stream: %w", err)
	}
	defer it.Stop()

	lastReport := time.Now()
	for done := false; !done; {
		var batch []*delivery
		for len(batch) < r.cfg.BatchSize && !done {
			m, err := it.Next(jetstream.NextContext(ctx))
			if err != nil {
				return fmt.Errorf("reading the stream: %w", err)
			}
			d, err := fromJetStream(m)
			if err != nil {
				return err
			}
			meta, _ := m.Metadata()
			if d.Seq > end {
				done = true
				break
			}
			d.attempt, d.msg = 1, nil // an ordered consumer needs no acks
			batch = append(batch, d)
			// NumPending counts the matching messages after this one: none means the end.
			done = d.Seq == end || meta.NumPending == 0
		}
		if err := r.apply(ctx, batch); err != nil {
			return err
		}
		if time.Since(lastReport) >= 2*time.Second {
			r.progress(end)
			lastReport = time.Now()
		}
	}
	return nil
}

// apply takes one batch through the applier. Postgres being out of reach stops the replay.
func (r *replayer) apply(ctx context.Context, batch []*delivery) error {
	if len(batch) == 0 {
		return nil
	}
	for _, d := range batch {
		if r.firstSeq == 0 {
			r.firstSeq = d.Seq
		}
		r.read++
		r.lastSeq = d.Seq
		d.parse()
	}
	if _, err := r.applier.apply(ctx, batch); err != nil {
		return fmt.Errorf("applying stream messages up to %d: %w", batch[len(batch)-1].Seq, err)
	}
	return nil
}
