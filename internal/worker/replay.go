package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

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

func (s *Summary) add(o outcome) {
	switch o {
	case outcomeApplied:
		s.Applied++
	case outcomeStale:
		s.Stale++
	case outcomeDuplicate:
		s.Duplicates++
	case outcomeIgnored:
		s.Ignored++
	case outcomeDeadLettered:
		s.DeadLettered++
	}
}

func (s Summary) logAttrs() []any {
	return []any{"read", s.Read, "applied", s.Applied, "stale", s.Stale, "duplicates", s.Duplicates,
		"ignored", s.Ignored, "dead_lettered", s.DeadLettered, "last_seq", s.LastSeq}
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

// Replay reads clerk.user.> from the stream with an ordered consumer of its own (the workers'
// durable consumer is untouched) and applies it in batches through the same code as the worker:
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
	ccfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{event.UserSubjects}}
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
	logger.Info("replay started", "from_seq", opts.FromSeq, "since", opts.Since, "to_seq", end,
		"dry_run", opts.DryRun, "reapply", opts.Reapply)

	r := replayer{cfg: cfg, opts: opts, pool: pool, logger: logger, sum: &sum}
	if err := r.run(ctx, cons, end); err != nil {
		logger.Error("replay stopped", append(sum.logAttrs(), "err", err)...)
		return sum, err
	}
	logger.Info("replay finished", append(sum.logAttrs(), "dry_run", opts.DryRun)...)
	return sum, nil
}

type replayer struct {
	cfg    Config
	opts   ReplayOptions
	pool   *pgxpool.Pool
	logger *slog.Logger
	sum    *Summary
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
		var batch []message
		for len(batch) < r.cfg.BatchSize && !done {
			m, err := it.Next(jetstream.NextContext(ctx))
			if err != nil {
				return fmt.Errorf("reading the stream: %w", err)
			}
			msg, err := fromJetStream(m)
			if err != nil {
				return err
			}
			meta, _ := m.Metadata()
			if msg.Seq > end {
				done = true
				break
			}
			batch = append(batch, msg)
			// NumPending counts the matching messages after this one: none means the end.
			done = msg.Seq == end || meta.NumPending == 0
		}
		if err := r.apply(ctx, batch); err != nil {
			return err
		}
		if time.Since(lastReport) >= 2*time.Second {
			r.logger.Info("replay progress", append(r.sum.logAttrs(), "end_seq", end)...)
			lastReport = time.Now()
		}
	}
	return nil
}

// apply applies one batch: poison parked (never in a dry run), ignored types counted, user events
// in one transaction; when that fails with Postgres reachable, each event alone, a failing one
// parked in dead_letters with its error.
func (r *replayer) apply(ctx context.Context, batch []message) error {
	var evs []decoded
	for _, m := range batch {
		r.sum.Read++
		r.sum.LastSeq = m.Seq
		d, err := decode(m)
		switch {
		case err != nil:
			if err := r.park(ctx, m, err); err != nil {
				return err
			}
		case d.Event == nil:
			r.sum.add(outcomeIgnored)
		default:
			evs = append(evs, d)
		}
	}
	return r.applyEvents(ctx, evs)
}

func (r *replayer) applyEvents(ctx context.Context, evs []decoded) error {
	if len(evs) == 0 {
		return nil
	}
	var outcomes []outcome
	var err error
	if r.opts.DryRun {
		outcomes, err = previewTx(ctx, r.pool, evs, r.opts.Reapply)
	} else {
		outcomes, err = applyTx(ctx, r.pool, evs, r.opts.Reapply, nil)
	}
	switch {
	case err == nil:
		for _, o := range outcomes {
			r.sum.add(o)
		}
		return nil
	case postgres.IsUnavailable(err) || ctx.Err() != nil:
		return fmt.Errorf("applying stream messages up to %d: %w", evs[len(evs)-1].Seq, err)
	case len(evs) > 1:
		for i := range evs {
			if err := r.applyEvents(ctx, evs[i:i+1]); err != nil {
				return err
			}
		}
		return nil
	default:
		return r.park(ctx, evs[0].message, err)
	}
}

func (r *replayer) park(ctx context.Context, m message, reason error) error {
	r.sum.add(outcomeDeadLettered)
	parked := false
	if !r.opts.DryRun {
		var err error
		if parked, err = parkMessage(ctx, r.pool, m, reason); err != nil {
			return err
		}
	}
	r.logger.Warn("message cannot apply", "seq", m.Seq, "subject", m.Subject, "event_id", m.EventID,
		"parked", parked, "dry_run", r.opts.DryRun, "err", reason)
	return nil
}
