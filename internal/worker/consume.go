package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/clerksync/clerksync/internal/event"
	"github.com/clerksync/clerksync/internal/postgres"
	"github.com/clerksync/clerksync/internal/postgres/dbsqlc"
)

// consumer drives the durable consumer: fetch a batch, apply it, acknowledge.
type consumer struct {
	cfg     Config
	logger  *slog.Logger
	pool    *pgxpool.Pool
	js      jetstream.JetStream
	cons    jetstream.Consumer // only the run loop uses it
	metrics *metrics
}

// pending is one fetched message on its way through a batch.
type pending struct {
	msg jetstream.Msg
	decoded
}

// errStopping means the worker was asked to stop while it held messages waiting for Postgres:
// they stay unacknowledged and JetStream delivers them again after AckWait.
var errStopping = errors.New("stopping")

// run fetches and applies batches until ctx ends. A batch already fetched is always finished:
// applied, committed and acknowledged, under a context that outlives ctx.
func (c *consumer) run(ctx context.Context) error {
	for ctx.Err() == nil {
		msgs, err := c.fetch()
		if err != nil {
			c.logger.Warn("fetching from the stream", "err", err)
			c.recreateIfGone(ctx)
			sleep(ctx, time.Second)
		}
		if len(msgs) > 0 {
			c.handle(ctx, msgs)
		}
	}
	return nil
}

// recreateIfGone creates the durable consumer again when it was deleted (by an operator, or with
// the stream): it starts over from the beginning of the stream, and processed_events makes
// everything already applied a duplicate.
func (c *consumer) recreateIfGone(ctx context.Context) {
	_, err := c.cons.Info(ctx)
	if !errors.Is(err, jetstream.ErrConsumerNotFound) && !errors.Is(err, jetstream.ErrStreamNotFound) {
		return
	}
	cons, err := ensureConsumer(ctx, c.js, c.cfg)
	if err != nil {
		c.logger.Error("the durable consumer is gone and cannot be created again", "consumer", c.cfg.Consumer, "err", err)
		return
	}
	c.cons = cons
	c.logger.Warn("the durable consumer was gone: created it again", "consumer", c.cfg.Consumer)
}

// fetch waits up to FetchWait for one message, then takes whatever else is ready, up to a batch
// for each lane: an idle worker applies a lone event at once, a busy one fills its batches.
func (c *consumer) fetch() ([]jetstream.Msg, error) {
	first, err := c.cons.Fetch(1, jetstream.FetchMaxWait(c.cfg.FetchWait))
	if err != nil {
		return nil, err
	}
	msgs, err := drain(first)
	limit := c.cfg.BatchSize * c.cfg.Parallelism
	if len(msgs) == 0 || limit == 1 {
		return msgs, err
	}
	rest, err := c.cons.FetchNoWait(limit - 1)
	if err != nil {
		return msgs, err
	}
	more, err := drain(rest)
	return append(msgs, more...), err
}

func drain(b jetstream.MessageBatch) ([]jetstream.Msg, error) {
	var msgs []jetstream.Msg
	for m := range b.Messages() {
		msgs = append(msgs, m)
	}
	return msgs, b.Error()
}

// handle takes fetched messages to their end: poison parked and terminated, ignored types
// acknowledged, user events applied in batches (see applyLanes) and acknowledged after each commit.
func (c *consumer) handle(ctx context.Context, msgs []jetstream.Msg) {
	start := time.Now()
	c.metrics.batchSize.Observe(float64(len(msgs)))
	defer func() { c.metrics.applyTime.Observe(time.Since(start).Seconds()) }()

	var events []pending
	for i, r := range c.decodeAll(msgs) {
		m := msgs[i]
		switch {
		case r.unreadable != nil:
			c.logger.Error("unreadable stream message left for redelivery", "subject", m.Subject(), "err", r.unreadable)
		case r.poison != nil:
			if errors.Is(c.park(ctx, msgs, pending{m, r.decoded}, r.poison, "poison"), errStopping) {
				return
			}
		case r.Event == nil:
			c.ack(m)
			c.metrics.count(r.Type, outcomeIgnored)
		default:
			events = append(events, pending{m, r.decoded})
		}
	}
	c.applyLanes(ctx, events)
}

// decodeResult is one fetched message after decodeAll.
type decodeResult struct {
	decoded
	unreadable error // no metadata: left for redelivery
	poison     error // can never apply
}

// decodeAll decodes msgs on every CPU: parsing JSON is most of the worker's own CPU time, and
// Postgres waits for it.
func (c *consumer) decodeAll(msgs []jetstream.Msg) []decodeResult {
	results := make([]decodeResult, len(msgs))
	size := max(64, (len(msgs)+runtime.GOMAXPROCS(0)-1)/runtime.GOMAXPROCS(0))
	var wg sync.WaitGroup
	for lo := 0; lo < len(msgs); lo += size {
		hi := min(lo+size, len(msgs))
		wg.Go(func() {
			for i := lo; i < hi; i++ {
				msg, err := fromJetStream(msgs[i])
				if err != nil {
					results[i].unreadable = err
					continue
				}
				results[i].decoded, results[i].poison = decode(msg)
			}
		})
	}
	wg.Wait()
	return results
}

// applyLanes applies events on up to Parallelism connections at once. Events are partitioned by
// user (a lane per hash of the Clerk user id), so no two transactions in flight touch one user and
// none waits on another's row locks; order does not matter to the result anyway (the contract's
// version rules). Each lane applies its events in batches of at most BatchSize, one transaction
// each, acknowledged after its commit.
func (c *consumer) applyLanes(ctx context.Context, events []pending) {
	lanes := make([][]pending, c.cfg.Parallelism)
	for _, p := range events {
		k := lane(p.Event.ClerkUserID, len(lanes))
		lanes[k] = append(lanes[k], p)
	}
	var wg sync.WaitGroup
	for _, events := range lanes {
		if len(events) == 0 {
			continue
		}
		// While Postgres is out of reach the lane holds all its messages, not only the batch
		// waiting for it.
		held := make([]jetstream.Msg, len(events))
		for i, p := range events {
			held[i] = p.msg
		}
		wg.Go(func() {
			for batch := range slices.Chunk(events, c.cfg.BatchSize) {
				if errors.Is(c.apply(ctx, held, batch), errStopping) {
					return // the rest stays unacknowledged: JetStream delivers it again
				}
			}
		})
	}
	wg.Wait()
}

// lane is the lane of a Clerk user among n.
func lane(clerkUserID string, n int) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(clerkUserID))
	return int(h.Sum32() % uint32(n)) //nolint:gosec // n is at most 64
}

// apply applies events in one transaction and acknowledges them after the commit. When the
// transaction fails with Postgres reachable, each event is applied alone so that one bad event
// does not hold back the others; a lone failing event is retried with back-off, then parked.
// held are the messages kept from redelivery while Postgres is out of reach. It returns
// errStopping when the worker stops during an outage, leaving events unacknowledged.
func (c *consumer) apply(ctx context.Context, held []jetstream.Msg, events []pending) error {
	if len(events) == 0 {
		return nil
	}
	evs := make([]decoded, len(events))
	msgs := make([]jetstream.Msg, len(events))
	for i, p := range events {
		evs[i], msgs[i] = p.decoded, p.msg
	}
	var outcomes []outcome
	err := c.untilReachable(ctx, held, func(ctx context.Context) (err error) {
		outcomes, err = applyTx(ctx, c.pool, evs, false, nil)
		return err
	})
	switch {
	case err == nil:
		committed := time.Now()
		for _, m := range msgs {
			c.ack(m)
		}
		c.metrics.observeCommit(evs, outcomes, committed)
	case errors.Is(err, errStopping):
		return err
	case len(events) > 1:
		c.logger.Warn("batch failed: applying its events one by one", "events", len(events), "err", err)
		for i := range events {
			if err := c.apply(ctx, held, events[i:i+1]); err != nil {
				return err
			}
		}
	default:
		return c.fail(ctx, held, events[0], err)
	}
	return nil
}

// fail handles an event whose transaction failed with Postgres reachable: delivered fewer than
// MaxAttempts times, it is NAKed with a delay that doubles with each delivery; then it is parked.
// It returns errStopping when the worker stops before the event could be parked.
func (c *consumer) fail(ctx context.Context, held []jetstream.Msg, p pending, cause error) error {
	meta, err := p.msg.Metadata()
	if err != nil {
		c.logger.Error("unreadable stream message left for redelivery", "seq", p.Seq, "err", err)
		return nil
	}
	attempt := meta.NumDelivered
	if attempt >= uint64(c.cfg.MaxAttempts) {
		if err := c.park(ctx, held, p, fmt.Errorf("failed %d times, last: %w", attempt, cause), "max_attempts"); errors.Is(err, errStopping) {
			return err
		}
		return nil
	}
	delay := backoff(c.cfg.RetryDelay, c.cfg.RetryMaxDelay, attempt)
	c.logger.Warn("event failed: retrying later", "seq", p.Seq, "event_id", p.EventID, "type", p.Type,
		"attempt", attempt, "max_attempts", c.cfg.MaxAttempts, "retry_in", delay, "err", cause)
	if err := p.msg.NakWithDelay(delay); err != nil {
		c.logger.Warn("nak failed: the message comes back after AckWait", "seq", p.Seq, "err", err)
	}
	c.metrics.count(p.Type, outcomeRetried)
	return nil
}

// backoff is the delay before delivery attempt+1: base doubled per attempt, at most limit.
func backoff(base, limit time.Duration, attempt uint64) time.Duration {
	if attempt < 1 {
		attempt = 1
	}
	d := float64(base) * math.Pow(2, float64(attempt-1))
	if d > float64(limit) {
		return limit
	}
	return time.Duration(d)
}

// park writes p to dead_letters (waiting out a Postgres outage, holding its batch) and terminates
// it, so JetStream never delivers it again. It returns errStopping when the worker stops before
// Postgres is back.
func (c *consumer) park(ctx context.Context, held []jetstream.Msg, p pending, reason error, why string) error {
	var parked bool
	err := c.untilReachable(ctx, held, func(ctx context.Context) (err error) {
		parked, err = parkMessage(ctx, c.pool, p.message, reason)
		return err
	})
	if err != nil {
		if !errors.Is(err, errStopping) {
			c.logger.Error("parking a message failed: it comes back after AckWait", "seq", p.Seq, "err", err)
		}
		return err
	}
	if err := p.msg.Term(); err != nil {
		c.logger.Warn("terminating a parked message", "seq", p.Seq, "err", err)
	}
	c.metrics.count(p.Type, outcomeDeadLettered)
	if parked {
		c.metrics.deadLetters.WithLabelValues(why).Inc()
	}
	c.logger.Error("message parked in dead_letters", "seq", p.Seq, "subject", p.Subject, "event_id", p.EventID,
		"reason", why, "err", reason)
	return nil
}

// untilReachable runs fn until it succeeds or fails with Postgres reachable. While Postgres is
// unreachable it fetches nothing, keeps held (the messages fn works for) from being redelivered
// with InProgress, which spends no delivery attempt, and polls Postgres. fn gets a context that
// outlives ctx so work in flight finishes on shutdown; errStopping means ctx ended during an outage.
func (c *consumer) untilReachable(ctx context.Context, held []jetstream.Msg, fn func(context.Context) error) error {
	for {
		fnCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.AckWait/2)
		err := fn(fnCtx)
		cancel()
		if !postgres.IsUnavailable(err) {
			return err
		}
		c.logger.Warn("postgres unavailable: holding the batch until it is back", "messages", len(held), "err", err)
		if err := c.waitForPostgres(ctx, held); err != nil {
			return err
		}
	}
}

func (c *consumer) waitForPostgres(ctx context.Context, held []jetstream.Msg) error {
	c.metrics.postgresUp.Set(0)
	// InProgress resets AckWait without counting a delivery: send it well within AckWait.
	tick := time.NewTicker(min(time.Second, c.cfg.AckWait/3))
	defer tick.Stop()
	for {
		for _, m := range held {
			_ = m.InProgress()
		}
		select {
		case <-ctx.Done():
			return errStopping
		case <-tick.C:
		}
		if postgres.Ping(ctx, c.pool) == nil {
			c.metrics.postgresUp.Set(1)
			c.logger.Info("postgres is back: resuming")
			return nil
		}
	}
}

func (c *consumer) ack(m jetstream.Msg) {
	if err := m.Ack(); err != nil {
		// Applied and committed: a redelivery is recognised in processed_events.
		c.logger.Warn("ack failed: the message will be delivered again and skipped", "subject", m.Subject(), "err", err)
	}
}

// pending reports how many messages the consumer has not delivered yet (the gauge).
func (c *consumer) pending() float64 {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	// Looked up afresh (one request): the run loop may replace c.cons.
	cons, err := c.js.Consumer(ctx, event.Stream, c.cfg.Consumer)
	if err != nil {
		return math.NaN()
	}
	return float64(cons.CachedInfo().NumPending)
}

// maxDeliveriesAdvisory is the part of JetStream's io.nats.jetstream.advisory.v1.max_deliver the
// worker needs.
type maxDeliveriesAdvisory struct {
	Stream     string `json:"stream"`
	Consumer   string `json:"consumer"`
	StreamSeq  uint64 `json:"stream_seq"`
	Deliveries uint64 `json:"deliveries"`
}

// watchMaxDeliveries parks every message JetStream gave up on (MaxDeliver reached without a
// verdict from any worker): it reads the message back from the stream by sequence.
func (c *consumer) watchMaxDeliveries(ctx context.Context, advisories <-chan *nats.Msg) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case a := <-advisories:
			c.parkMaxDelivered(ctx, a.Data)
		}
	}
}

func (c *consumer) parkMaxDelivered(ctx context.Context, data []byte) {
	var adv maxDeliveriesAdvisory
	if err := json.Unmarshal(data, &adv); err != nil || adv.StreamSeq == 0 {
		c.logger.Warn("unreadable max-deliveries advisory", "err", err)
		return
	}
	stream, err := c.js.Stream(ctx, event.Stream)
	var raw *jetstream.RawStreamMsg
	if err == nil {
		raw, err = stream.GetMsg(ctx, adv.StreamSeq)
	}
	if err != nil {
		c.logger.Error("message reached MaxDeliver but cannot be read back to park it", "seq", adv.StreamSeq, "err", err)
		return
	}
	m := message{Seq: raw.Sequence, Subject: raw.Subject, EventID: eventID(raw.Header), Body: raw.Data}
	d, _ := decode(m)
	reason := fmt.Errorf("not acknowledged after %d deliveries: JetStream gave up (MaxDeliver)", adv.Deliveries)
	var parked bool
	err = c.untilReachable(ctx, nil, func(ctx context.Context) error {
		// Applied but never acknowledged (acks lost): nothing is left to do.
		if m.EventID != "" {
			if done, err := dbsqlc.New(c.pool).IsProcessed(ctx, m.EventID); err != nil || done {
				return postgres.InterpretError(err)
			}
		}
		var err error
		parked, err = parkMessage(ctx, c.pool, m, reason)
		return err
	})
	if err != nil {
		if !errors.Is(err, errStopping) {
			c.logger.Error("parking a message that reached MaxDeliver", "seq", m.Seq, "err", err)
		}
		return
	}
	if parked {
		c.metrics.count(d.Type, outcomeDeadLettered)
		c.metrics.deadLetters.WithLabelValues("max_deliveries").Inc()
		c.logger.Error("message parked in dead_letters", "seq", m.Seq, "subject", m.Subject, "event_id", m.EventID,
			"reason", "max_deliveries", "deliveries", adv.Deliveries)
	}
}

// fromJetStream reads what the apply code needs from a delivered message.
func fromJetStream(m jetstream.Msg) (message, error) {
	meta, err := m.Metadata()
	if err != nil {
		return message{}, fmt.Errorf("reading message metadata: %w", err)
	}
	return message{Seq: meta.Sequence.Stream, Subject: m.Subject(), EventID: eventID(m.Headers()), Body: m.Data()}, nil
}

// eventID is the svix-id a message carries: Svix-Id, else the JetStream Nats-Msg-Id ingest sets
// to the same value.
func eventID(h nats.Header) string {
	if id := h.Get(event.HeaderSvixID); id != "" {
		return id
	}
	return h.Get(event.HeaderMsgID)
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
