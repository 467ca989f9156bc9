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
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/clerksync/clerksync/internal/event"
	"github.com/clerksync/clerksync/internal/postgres"
	"github.com/clerksync/clerksync/internal/postgres/dbsqlc"
)

// consumer is the durable consumer's source and sink for the applier. One goroutine fetches and
// decodes; Parallelism lanes apply. A lane takes whatever its queue holds, up to a batch, applies
// it in one transaction and settles each message at once (ack, NAK with a delay, or terminate), so
// fetching and decoding the next messages overlap the transactions of the ones before, and no lane
// waits for another. Messages are partitioned between lanes by user, so no two transactions in
// flight touch one user.
type consumer struct {
	cfg     Config
	logger  *slog.Logger
	pool    *pgxpool.Pool
	js      jetstream.JetStream
	cons    jetstream.Consumer // only the run loop uses it
	metrics *metrics
	applier *applier

	mu sync.Mutex
	// inflight are the messages fetched and not yet settled: while Postgres is out of reach they
	// are all held from redelivery, the queued ones as well as the batches waiting for it.
	inflight map[*delivery]struct{}
	// back is non-nil while an outage is waited out, and closed when Postgres answers again.
	back chan struct{}
}

func newConsumer(cfg Config, logger *slog.Logger, pool *pgxpool.Pool, js jetstream.JetStream, cons jetstream.Consumer, m *metrics) *consumer {
	c := &consumer{cfg: cfg, logger: logger, pool: pool, js: js, cons: cons, metrics: m, inflight: map[*delivery]struct{}{}}
	c.applier = &applier{
		pool: pool, logger: logger, tally: newTally(m),
		maxAttempts: cfg.MaxAttempts, retryDelay: cfg.RetryDelay, retryMaxDelay: cfg.RetryMaxDelay,
		timeout: cfg.AckWait / 2, waitForPostgres: c.waitForPostgres,
	}
	return c
}

// run fetches until ctx ends, then lets the lanes finish what was fetched: each message is
// applied and settled, except during a Postgres outage, when what has no verdict yet is left
// unacknowledged and JetStream delivers it again after AckWait.
func (c *consumer) run(ctx context.Context) error {
	// A lane's queue holds what one fetch gave it, behind the batch it applies.
	lanes := make([]chan []*delivery, c.cfg.Parallelism)
	var wg sync.WaitGroup
	for i := range lanes {
		lanes[i] = make(chan []*delivery, 1)
		wg.Go(func() { c.lane(ctx, lanes[i]) })
	}
	defer func() {
		for _, l := range lanes {
			close(l)
		}
		wg.Wait()
	}()
	for ctx.Err() == nil {
		if c.waitUntilBack(ctx) != nil {
			break // fetch nothing more while Postgres is out of reach
		}
		msgs, err := c.fetch()
		if err != nil {
			c.logger.Warn("fetching from the stream", "err", err)
			c.recreateIfGone(ctx)
			sleep(ctx, time.Second)
		}
		for k, part := range c.partition(c.decodeAll(msgs)) {
			if len(part) > 0 {
				lanes[k] <- part
			}
		}
	}
	return nil
}

// partition splits ds between the lanes, by user.
func (c *consumer) partition(ds []*delivery) [][]*delivery {
	parts := make([][]*delivery, c.cfg.Parallelism)
	for _, d := range ds {
		k := lane(d.key(), len(parts))
		parts[k] = append(parts[k], d)
	}
	return parts
}

// lane applies what arrives on in until in is closed: what is queued, in batches of at most
// BatchSize.
func (c *consumer) lane(ctx context.Context, in <-chan []*delivery) {
	stopping := false
	for queued := range in {
	more:
		for len(queued) < c.cfg.BatchSize {
			select {
			case next, ok := <-in:
				if !ok {
					break more
				}
				queued = append(queued, next...)
			default:
				break more
			}
		}
		for len(queued) > 0 {
			batch := queued[:min(len(queued), c.cfg.BatchSize)]
			queued = queued[len(batch):]
			if stopping {
				c.untrack(batch) // left unacknowledged: JetStream delivers them again
				continue
			}
			stopping = errors.Is(c.process(ctx, batch), errStopping)
		}
	}
}

// handle takes fetched messages to their end at once, partitioned and batched as the lanes do.
// Tests drive the consumer with it; run is the same work, pipelined.
func (c *consumer) handle(ctx context.Context, msgs []jetstream.Msg) {
	var wg sync.WaitGroup
	for _, part := range c.partition(c.decodeAll(msgs)) {
		wg.Go(func() {
			for len(part) > 0 {
				n := min(len(part), c.cfg.BatchSize)
				if errors.Is(c.process(ctx, part[:n]), errStopping) {
					c.untrack(part[n:])
					return
				}
				part = part[n:]
			}
		})
	}
	wg.Wait()
}

// process applies one batch and settles every message that got a verdict.
func (c *consumer) process(ctx context.Context, batch []*delivery) error {
	start := time.Now()
	results, err := c.applier.apply(ctx, batch)
	for i, d := range batch {
		c.settle(d, results[i])
	}
	c.untrack(batch)
	c.metrics.batchSize.Observe(float64(len(batch)))
	c.metrics.applyTime.Observe(time.Since(start).Seconds())
	if err != nil && !errors.Is(err, errStopping) {
		c.logger.Error("batch left for redelivery", "messages", len(batch), "err", err)
	}
	return err
}

// settle tells JetStream the verdict on d: applied, stale, duplicate and ignored messages are
// acknowledged, parked ones terminated (never delivered again), retried ones NAKed with their
// back-off. A message without a verdict is left to come back after AckWait.
func (c *consumer) settle(d *delivery, r result) {
	var err error
	switch r.outcome {
	case "":
		return
	case outcomeRetried:
		err = d.msg.NakWithDelay(r.retryIn)
	case outcomeDeadLettered:
		err = d.msg.Term()
	default:
		// Committed: should the ack be lost, the redelivery is recognised in processed_events.
		err = d.msg.Ack()
	}
	if err != nil {
		c.logger.Warn("settling a message failed: it comes back after AckWait", "seq", d.Seq, "outcome", string(r.outcome), "err", err)
	}
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

// decodeAll turns msgs into deliveries, parsed on every CPU, and tracks them as in flight. A
// message whose metadata cannot be read is left for redelivery.
func (c *consumer) decodeAll(msgs []jetstream.Msg) []*delivery {
	ds := make([]*delivery, len(msgs))
	procs := runtime.GOMAXPROCS(0)
	size := max(64, (len(msgs)+procs-1)/procs)
	var wg sync.WaitGroup
	for lo := 0; lo < len(msgs); lo += size {
		hi := min(lo+size, len(msgs))
		wg.Go(func() {
			for i := lo; i < hi; i++ {
				d, err := fromJetStream(msgs[i])
				if err != nil {
					c.logger.Error("unreadable stream message left for redelivery", "subject", msgs[i].Subject(), "err", err)
					continue
				}
				d.parse()
				ds[i] = d
			}
		})
	}
	wg.Wait()
	out := ds[:0]
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, d := range ds {
		if d != nil {
			c.inflight[d] = struct{}{}
			out = append(out, d)
		}
	}
	return out
}

func (c *consumer) untrack(ds []*delivery) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, d := range ds {
		delete(c.inflight, d)
	}
}

// lane is the lane of a key among n.
func lane(key string, n int) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(key))
	return int(h.Sum32() % uint32(n)) //nolint:gosec // G115: n is at most 64
}

// waitForPostgres waits until Postgres answers again, holding every message in flight from
// redelivery meanwhile with InProgress (which resets AckWait and spends no delivery attempt). One
// caller polls; the others wait for it. It returns errStopping when ctx ends first.
func (c *consumer) waitForPostgres(ctx context.Context, _ []*delivery) error {
	c.mu.Lock()
	if back := c.back; back != nil {
		c.mu.Unlock()
		select {
		case <-back:
			return nil
		case <-ctx.Done():
			return errStopping
		}
	}
	back := make(chan struct{})
	c.back = back
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.back = nil
		c.mu.Unlock()
		close(back)
	}()

	c.metrics.postgresUp.Set(0)
	// Well within AckWait, so no held message is delivered again.
	tick := time.NewTicker(min(time.Second, c.cfg.AckWait/3))
	defer tick.Stop()
	for {
		c.mu.Lock()
		for d := range c.inflight {
			_ = d.msg.InProgress()
		}
		c.mu.Unlock()
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

// waitUntilBack returns at once unless an outage is being waited out; then it waits for its end
// (errStopping when ctx ends first).
func (c *consumer) waitUntilBack(ctx context.Context) error {
	c.mu.Lock()
	back := c.back
	c.mu.Unlock()
	if back == nil {
		return nil
	}
	select {
	case <-back:
		return nil
	case <-ctx.Done():
		return errStopping
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
	d := &delivery{Seq: raw.Sequence, Subject: raw.Subject, EventID: eventID(raw.Header), Body: raw.Data}
	d.parse()
	// Applied but never acknowledged (acks lost): nothing is left to do.
	var done bool
	if d.EventID != "" {
		err = c.applier.untilReachable(ctx, nil, func(ctx context.Context) (err error) {
			done, err = dbsqlc.New(c.pool).IsProcessed(ctx, d.EventID)
			return err
		})
	}
	if err == nil && !done {
		reason := fmt.Errorf("not acknowledged after %d deliveries: JetStream gave up (MaxDeliver)", adv.Deliveries)
		_, err = c.applier.park(ctx, d, reason, "max_deliveries")
	}
	if err != nil && !errors.Is(err, errStopping) {
		c.logger.Error("parking a message that reached MaxDeliver", "seq", d.Seq, "err", err)
	}
}

// fromJetStream reads what the applier needs from a delivered message.
func fromJetStream(m jetstream.Msg) (*delivery, error) {
	meta, err := m.Metadata()
	if err != nil {
		return nil, fmt.Errorf("reading message metadata: %w", err)
	}
	return &delivery{
		Seq: meta.Sequence.Stream, Subject: m.Subject(), EventID: eventID(m.Headers()), Body: m.Data(),
		attempt: meta.NumDelivered, msg: m,
	}, nil
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
