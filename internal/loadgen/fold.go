package loadgen

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/clerksync/clerksync/internal/event"
	"github.com/clerksync/clerksync/internal/worker"
)

// RawFoldOptions configures RawFold.
type RawFoldOptions struct {
	NATSURL, DatabaseURL string
	// Parallel and BatchSize are the worker's WORKER_PARALLELISM and WORKER_BATCH_SIZE.
	Parallel, BatchSize int
	// Events is how many user events the stream holds: the stage ends when all are recorded.
	Events   int
	Progress *Progress
}

// RawFold is the least work any correct worker does, the baseline the worker's drain is held to:
// the same stream and events, fetched as the worker fetches (a batch per lane at once), each
// message decoded with encoding/json into only the fields the fold needs (on every CPU), the
// batch partitioned between Parallel lanes by user, and per lane one plain statement that records
// the svix-ids in a ledger and upserts the users rows (the newest version per user; no
// subscriptions or usage rows, no dead letters, no retries, no metrics), acknowledged after the
// commit. Fetching the next batch overlaps the lanes' statements. It writes into scratch copies of processed_events and
// users, dropped afterwards, with a durable consumer of its own, deleted afterwards.
func RawFold(ctx context.Context, stage string, o RawFoldOptions) (Result, error) {
	parallel, batchSize := max(o.Parallel, 1), max(o.BatchSize, 1)
	pool, err := pgxpool.New(ctx, o.DatabaseURL)
	if err != nil {
		return Result{}, fmt.Errorf("connecting to postgres: %w", err)
	}
	defer pool.Close()
	suffix := strconv.FormatInt(time.Now().UnixNano(), 36)
	ledger, users := pgx.Identifier{"loadgen_ledger_" + suffix}.Sanitize(), pgx.Identifier{"loadgen_users_" + suffix}.Sanitize()
	if _, err := pool.Exec(ctx, "CREATE TABLE "+ledger+" (LIKE processed_events INCLUDING ALL); CREATE TABLE "+users+" (LIKE users INCLUDING ALL)"); err != nil {
		return Result{}, fmt.Errorf("creating the scratch tables (is the database migrated?): %w", err)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		_, _ = pool.Exec(dctx, "DROP TABLE IF EXISTS "+ledger+", "+users)
	}()
	statement := fmt.Sprintf(rawFoldSQL, ledger, users)

	nc, err := nats.Connect(o.NATSURL, nats.Name("clerksync-loadgen-raw-fold"))
	if err != nil {
		return Result{}, fmt.Errorf("connecting to nats: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return Result{}, err
	}
	name := "loadgen-raw-fold-" + suffix
	cons, err := js.CreateOrUpdateConsumer(ctx, event.Stream, jetstream.ConsumerConfig{
		Durable: name, FilterSubject: event.UserSubjects, DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy: jetstream.AckExplicitPolicy, AckWait: 30 * time.Second,
		MaxAckPending: max(1000, 12*batchSize*parallel),
	})
	if err != nil {
		return Result{}, fmt.Errorf("creating the baseline's consumer: %w", err)
	}
	defer func() { _ = js.DeleteConsumer(context.WithoutCancel(ctx), event.Stream, name) }()

	o.Progress.Stage(stage, o.Events)
	var (
		done     atomic.Int64
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
		finished time.Time
	)
	fail := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		if firstErr == nil {
			firstErr = err
		}
	}
	failed := func() bool {
		mu.Lock()
		defer mu.Unlock()
		return firstErr != nil
	}
	// Lanes partitioned by user, as any correct worker's must be: two transactions writing one
	// new user at once fail on the second unique index.
	type part struct {
		msgs []jetstream.Msg
		cols rawFoldColumns
	}
	lanes := make([]chan part, parallel)
	for i := range lanes {
		lanes[i] = make(chan part, 1)
		wg.Go(func() {
			for p := range lanes[i] {
				if failed() {
					continue
				}
				if _, err := pool.Exec(ctx, statement, p.cols.args()...); err != nil {
					fail(fmt.Errorf("folding: %w", err))
					continue
				}
				for _, m := range p.msgs {
					_ = m.Ack()
				}
				o.Progress.add(int64(len(p.msgs)))
				if int(done.Add(int64(len(p.msgs)))) >= o.Events {
					mu.Lock()
					finished = time.Now()
					mu.Unlock()
				}
			}
		})
	}
	start := time.Now()
	deadline := start.Add(5 * time.Minute)
	for int(done.Load()) < o.Events && ctx.Err() == nil && time.Now().Before(deadline) && !failed() {
		msgs, err := fetchBatch(cons, batchSize*parallel)
		if err != nil {
			fail(err)
			break
		}
		// Decoded on every CPU, as the worker does.
		evs := make([]rawFoldDecoded, len(msgs))
		procs := runtime.GOMAXPROCS(0)
		size := max(64, (len(msgs)+procs-1)/procs)
		var dwg sync.WaitGroup
		for lo := 0; lo < len(msgs); lo += size {
			dwg.Go(func() {
				for i := lo; i < min(lo+size, len(msgs)); i++ {
					evs[i] = decodeRawFold(msgs[i])
				}
			})
		}
		dwg.Wait()
		parts := make([]part, parallel)
		for i, e := range evs {
			if e.err != nil {
				fail(e.err)
				break
			}
			h := fnv.New32a()
			_, _ = h.Write([]byte(e.clerkUserID))
			k := int(h.Sum32() % uint32(parallel)) //nolint:gosec // G115: parallel is a connection count
			parts[k].msgs = append(parts[k].msgs, msgs[i])
			parts[k].cols.add(e)
		}
		for k, p := range parts {
			if len(p.msgs) > 0 {
				lanes[k] <- p
			}
		}
	}
	for _, l := range lanes {
		close(l)
	}
	wg.Wait()
	elapsed := time.Since(start)
	if !finished.IsZero() {
		elapsed = finished.Sub(start)
	}
	if firstErr != nil {
		return Result{}, firstErr
	}
	n := int(done.Load())
	r := Result{
		Stage: stage, Clients: parallel, Count: n, Elapsed: elapsed, Rate: float64(n) / elapsed.Seconds(),
		Statuses: map[string]int{"ok": n},
		Note:     fmt.Sprintf("%d stream messages in %d lanes of batches of up to %d, one ledger+users statement each", n, parallel, batchSize),
	}
	if n < o.Events {
		r.Error = fmt.Sprintf("%d of %d events folded when the wait ended", n, o.Events)
	}
	return r, ctx.Err()
}

// fetchBatch fetches as the worker does: it waits for one message, then takes what else is ready,
// up to n.
func fetchBatch(cons jetstream.Consumer, n int) ([]jetstream.Msg, error) {
	var msgs []jetstream.Msg
	first, err := cons.Fetch(1, jetstream.FetchMaxWait(time.Second))
	if err != nil {
		return nil, err
	}
	for m := range first.Messages() {
		msgs = append(msgs, m)
	}
	if len(msgs) == 0 || n == 1 {
		return msgs, first.Error()
	}
	rest, err := cons.FetchNoWait(n - 1)
	if err != nil {
		return msgs, err
	}
	for m := range rest.Messages() {
		msgs = append(msgs, m)
	}
	return msgs, nil
}

// rawFoldSQL records a batch's svix-ids in the scratch ledger (%[1]s) and upserts the newest
// version of each user among the new ones into the scratch users (%[2]s): a statement may not
// touch a row twice, so one event per user, and the version check.
const rawFoldSQL = `
WITH e AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::uuid[], $5::text[], $6::text[], $7::text[],
        $8::text[], $9::text[], $10::text[], $11::jsonb[], $12::timestamptz[], $13::timestamptz[], $14::timestamptz[])
        AS e(event_id, event_type, stream_seq, user_id, clerk_user_id, email, username, first_name, last_name,
             image_url, clerk_data, clerk_created_at, clerk_updated_at, deleted_at)
), fresh AS (
    INSERT INTO %[1]s (event_id, event_type, clerk_user_id, stream_seq)
    SELECT event_id, event_type, clerk_user_id, stream_seq FROM e
    ON CONFLICT (event_id) DO NOTHING
    RETURNING event_id
), r AS (
    SELECT DISTINCT ON (e.clerk_user_id) e.* FROM e JOIN fresh USING (event_id)
    ORDER BY e.clerk_user_id, e.deleted_at NULLS LAST, e.clerk_updated_at DESC, e.event_id DESC
)
INSERT INTO %[2]s AS u (user_id, clerk_user_id, email, username, first_name, last_name, image_url,
    clerk_data, clerk_created_at, clerk_updated_at, version_event_id, deleted_at)
SELECT user_id, clerk_user_id, email, username, first_name, last_name, image_url, clerk_data,
       clerk_created_at, clerk_updated_at, CASE WHEN deleted_at IS NULL THEN event_id END, deleted_at
FROM r ORDER BY clerk_user_id
ON CONFLICT (clerk_user_id) DO UPDATE SET
    email = excluded.email, username = excluded.username, first_name = excluded.first_name,
    last_name = excluded.last_name, image_url = excluded.image_url, clerk_data = excluded.clerk_data,
    clerk_created_at = excluded.clerk_created_at, clerk_updated_at = excluded.clerk_updated_at,
    version_event_id = excluded.version_event_id, deleted_at = excluded.deleted_at, updated_at = now()
WHERE u.deleted_at IS NULL AND (
    excluded.deleted_at IS NOT NULL OR u.clerk_updated_at IS NULL
    OR (excluded.clerk_updated_at, excluded.version_event_id) > (u.clerk_updated_at, u.version_event_id))`

// rawFoldEvent is what the baseline decodes of a message, with encoding/json: the envelope, then
// the user's fields (data kept as its bytes for clerk_data).
type rawFoldEvent struct {
	Type      string          `json:"type"`
	Timestamp int64           `json:"timestamp"`
	Data      json.RawMessage `json:"data"`
}

type rawFoldUser struct {
	ID             string  `json:"id"`
	PrimaryEmailID *string `json:"primary_email_address_id"`
	Emails         []struct {
		ID      string `json:"id"`
		Address string `json:"email_address"`
	} `json:"email_addresses"`
	Username  *string `json:"username"`
	FirstName *string `json:"first_name"`
	LastName  *string `json:"last_name"`
	ImageURL  *string `json:"image_url"`
	CreatedAt *int64  `json:"created_at"`
	UpdatedAt *int64  `json:"updated_at"`
}

// rawFoldDecoded is one message as the baseline decoded it.
type rawFoldDecoded struct {
	eventID, eventType, clerkUserID string
	seq                             int64
	email, username, firstName      *string
	lastName, image                 *string
	data                            []byte
	createdAt, updatedAt, deletedAt *time.Time
	err                             error
}

func decodeRawFold(m jetstream.Msg) (d rawFoldDecoded) {
	meta, err := m.Metadata()
	if err != nil {
		d.err = err
		return d
	}
	var ev rawFoldEvent
	var u rawFoldUser
	if err := json.Unmarshal(m.Data(), &ev); err != nil {
		d.err = fmt.Errorf("decoding seq %d: %w", meta.Sequence.Stream, err)
		return d
	}
	if err := json.Unmarshal(ev.Data, &u); err != nil {
		d.err = fmt.Errorf("decoding seq %d: %w", meta.Sequence.Stream, err)
		return d
	}
	if u.ID == "" {
		d.err = fmt.Errorf("decoding seq %d: a user event without data.id", meta.Sequence.Stream)
		return d
	}
	d.seq = int64(meta.Sequence.Stream) //nolint:gosec // G115: stream sequences count from 1, far below 2^63
	d.eventID, d.eventType, d.clerkUserID = m.Headers().Get(event.HeaderSvixID), ev.Type, u.ID
	ms := func(v *int64) *time.Time {
		if v == nil {
			return nil
		}
		t := time.UnixMilli(*v)
		return &t
	}
	if ev.Type == "user.deleted" {
		d.deletedAt = ms(&ev.Timestamp)
		return d
	}
	for _, e := range u.Emails {
		if u.PrimaryEmailID != nil && e.ID == *u.PrimaryEmailID {
			d.email = &e.Address
		}
	}
	d.username, d.firstName, d.lastName, d.image, d.data = u.Username, u.FirstName, u.LastName, u.ImageURL, ev.Data
	d.createdAt, d.updatedAt = ms(u.CreatedAt), ms(u.UpdatedAt)
	return d
}

type rawFoldColumns struct {
	eventID, eventType, clerkUserID             []string
	seq                                         []int64
	userID                                      [][16]byte
	email, username, firstName, lastName, image []*string
	data                                        [][]byte
	createdAt, updatedAt, deletedAt             []*time.Time
}

func (c *rawFoldColumns) add(d rawFoldDecoded) {
	c.eventID, c.eventType, c.seq = append(c.eventID, d.eventID), append(c.eventType, d.eventType), append(c.seq, d.seq)
	c.userID, c.clerkUserID = append(c.userID, [16]byte(worker.UserID(d.clerkUserID))), append(c.clerkUserID, d.clerkUserID)
	c.email, c.username, c.firstName = append(c.email, d.email), append(c.username, d.username), append(c.firstName, d.firstName)
	c.lastName, c.image, c.data = append(c.lastName, d.lastName), append(c.image, d.image), append(c.data, d.data)
	c.createdAt, c.updatedAt, c.deletedAt = append(c.createdAt, d.createdAt), append(c.updatedAt, d.updatedAt), append(c.deletedAt, d.deletedAt)
}

func (c *rawFoldColumns) args() []any {
	return []any{c.eventID, c.eventType, c.seq, c.userID, c.clerkUserID, c.email, c.username, c.firstName,
		c.lastName, c.image, c.data, c.createdAt, c.updatedAt, c.deletedAt}
}
