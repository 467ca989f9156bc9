package loadgen

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/clerksync/clerksync/internal/clerk"
	"github.com/clerksync/clerksync/internal/worker"
)

// UpsertOptions configures Upsert.
type UpsertOptions struct {
	DatabaseURL string
	// Parallel is how many batches are written at once, each on its own connection, users
	// partitioned between them (the worker's parallelism).
	Parallel  int
	BatchSize int // the worker's WORKER_BATCH_SIZE
	Workloads []Workload
	Progress  *Progress
}

// Upsert is the worker's physical limit: the users rows the workloads' events fold into, written
// by a bare multi-row unnest upsert (the version check, nothing else: no ledger, no
// subscriptions, no usage rows), one statement and one commit per batch of o.BatchSize events.
// It writes into a scratch copy of the users table (same columns, constraints, indexes and
// storage), created in the database and dropped afterwards; it never touches the projection.
func Upsert(ctx context.Context, stage string, o UpsertOptions) (Result, error) {
	parallel, batchSize := max(o.Parallel, 1), max(o.BatchSize, 1)
	events, err := userEvents(o.Workloads)
	if err != nil {
		return Result{}, err
	}
	cfg, err := pgxpool.ParseConfig(o.DatabaseURL)
	if err != nil {
		return Result{}, errors.New("database url: invalid connection string")
	}
	cfg.MaxConns = int32(parallel + 1) //nolint:gosec // G115: parallel is a connection count, at least 1, far below 2^31
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return Result{}, fmt.Errorf("connecting to postgres: %w", err)
	}
	defer pool.Close()

	table := pgx.Identifier{"loadgen_users_" + strconv.FormatInt(time.Now().UnixNano(), 36)}.Sanitize()
	if _, err := pool.Exec(ctx, "CREATE TABLE "+table+" (LIKE users INCLUDING ALL)"); err != nil {
		return Result{}, fmt.Errorf("creating the scratch table (is the database migrated?): %w", err)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		_, _ = pool.Exec(dctx, "DROP TABLE IF EXISTS "+table)
	}()
	upsert := fmt.Sprintf(upsertSQL, table)

	// Partition by user, keeping delivery order within a partition, so that two transactions
	// never touch the same user.
	parts := make([][]userEvent, parallel)
	for _, e := range events {
		h := fnv.New32a()
		h.Write([]byte(e.ClerkUserID))
		p := int(h.Sum32() % uint32(parallel)) //nolint:gosec // G115: parallel is a connection count, at least 1, far below 2^32
		parts[p] = append(parts[p], e)
	}

	o.Progress.Stage(stage, len(events))
	var (
		lat      Latencies
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
		batches  int
	)
	start := time.Now()
	for _, part := range parts {
		wg.Go(func() {
			var sample Sample
			defer func() { lat.Merge(sample) }()
			for batch := range slices.Chunk(part, batchSize) {
				if ctx.Err() != nil {
					return
				}
				cols := foldBatch(batch)
				t := time.Now()
				_, err := pool.Exec(ctx, upsert, cols.userID, cols.clerkUserID, cols.email, cols.username,
					cols.firstName, cols.lastName, cols.imageURL, cols.data, cols.createdAt, cols.updatedAt,
					cols.versionEventID, cols.deletedAt)
				if err != nil {
					mu.Lock()
					firstErr = cmp.Or(firstErr, err)
					mu.Unlock()
					return
				}
				sample = append(sample, time.Since(t))
				o.Progress.add(int64(len(batch)))
				mu.Lock()
				batches++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if firstErr != nil {
		return Result{}, fmt.Errorf("upserting: %w", firstErr)
	}
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}
	s := lat.Summary()
	return Result{
		Stage: stage, Clients: parallel, Count: len(events), Elapsed: elapsed,
		Rate:     float64(len(events)) / elapsed.Seconds(),
		Latency:  &s,
		Statuses: map[string]int{"ok": len(events)},
		Note: fmt.Sprintf("%d distinct events in %d batches of up to %d on %d connections; latency is per batch",
			len(events), batches, batchSize, parallel),
	}, nil
}

// upsertSQL is the bare upsert the worker is measured against. It lives here, not in queries/,
// because its table is a scratch copy that sqlc never sees. Rows come sorted by clerk_user_id.
const upsertSQL = `
INSERT INTO %[1]s AS u (user_id, clerk_user_id, email, username, first_name, last_name, image_url,
    clerk_data, clerk_created_at, clerk_updated_at, version_event_id, deleted_at)
SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
    $8::jsonb[], $9::timestamptz[], $10::timestamptz[], $11::text[], $12::timestamptz[])
ON CONFLICT (clerk_user_id) DO UPDATE SET
    email = excluded.email, username = excluded.username, first_name = excluded.first_name,
    last_name = excluded.last_name, image_url = excluded.image_url, clerk_data = excluded.clerk_data,
    clerk_created_at = excluded.clerk_created_at, clerk_updated_at = excluded.clerk_updated_at,
    version_event_id = excluded.version_event_id, deleted_at = excluded.deleted_at, updated_at = now()
WHERE u.deleted_at IS NULL AND (
    excluded.deleted_at IS NOT NULL OR u.clerk_updated_at IS NULL
    OR (excluded.clerk_updated_at, excluded.version_event_id) > (u.clerk_updated_at, u.version_event_id))`

// userEvent is a parsed event with its svix-id.
type userEvent struct {
	clerk.UserEvent
	ID string
}

// userEvents parses the workloads' distinct events, in delivery order.
func userEvents(ws []Workload) ([]userEvent, error) {
	var out []userEvent
	for _, w := range ws {
		for _, d := range w.Deliveries {
			if d.Resend {
				continue
			}
			ev, err := clerk.ParseUserEvent(d.Body)
			if err != nil {
				return nil, fmt.Errorf("parsing generated event %s: %w", d.ID, err)
			}
			out = append(out, userEvent{UserEvent: ev, ID: d.ID})
		}
	}
	return out, nil
}

// columns are a batch's rows as unnest's arrays.
type columns struct {
	userID                                         []pgtype.UUID
	clerkUserID                                    []string
	email, username, firstName, lastName, imageURL []*string
	data                                           [][]byte
	createdAt, updatedAt, deletedAt                []*time.Time
	versionEventID                                 []*string
}

// foldBatch folds a batch to one row per user, as the worker must (a statement may not touch a
// row twice): a delete wins, the earliest delete's timestamp; otherwise the greatest version.
func foldBatch(batch []userEvent) columns {
	latest := make(map[string]userEvent, len(batch))
	for _, e := range batch {
		prev, ok := latest[e.ClerkUserID]
		switch {
		case !ok:
		case prev.User == nil && (e.User != nil || !e.Timestamp.Before(prev.Timestamp)):
			continue // a tombstone, and this is a version or a later delete
		case prev.User != nil && e.User != nil &&
			cmp.Or(e.User.UpdatedAt.Compare(prev.User.UpdatedAt), cmp.Compare(e.ID, prev.ID)) <= 0:
			continue
		}
		latest[e.ClerkUserID] = e
	}
	ids := slices.Sorted(func(yield func(string) bool) {
		for id := range latest {
			if !yield(id) {
				return
			}
		}
	})
	var c columns
	for _, id := range ids {
		e := latest[id]
		c.userID = append(c.userID, pgtype.UUID{Bytes: worker.UserID(id), Valid: true})
		c.clerkUserID = append(c.clerkUserID, id)
		if e.User == nil {
			at := e.Timestamp
			c.email, c.username, c.firstName = append(c.email, nil), append(c.username, nil), append(c.firstName, nil)
			c.lastName, c.imageURL, c.data = append(c.lastName, nil), append(c.imageURL, nil), append(c.data, nil)
			c.createdAt, c.updatedAt, c.versionEventID = append(c.createdAt, nil), append(c.updatedAt, nil), append(c.versionEventID, nil)
			c.deletedAt = append(c.deletedAt, &at)
			continue
		}
		u, version := e.User, e.ID
		c.email, c.username, c.firstName = append(c.email, u.Email), append(c.username, u.Username), append(c.firstName, u.FirstName)
		c.lastName, c.imageURL, c.data = append(c.lastName, u.LastName), append(c.imageURL, u.ImageURL), append(c.data, u.Data)
		c.createdAt, c.updatedAt, c.versionEventID = append(c.createdAt, u.CreatedAt), append(c.updatedAt, &u.UpdatedAt), append(c.versionEventID, &version)
		c.deletedAt = append(c.deletedAt, nil)
	}
	return c
}
