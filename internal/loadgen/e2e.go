package loadgen

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
)

// E2EOptions configures E2E.
type E2EOptions struct {
	Ingest      IngestOptions
	DatabaseURL string
	// Timeout bounds the wait for the worker once the last webhook is answered (default 2m).
	Timeout time.Duration
	// PollInterval is the pause between two looks at processed_events when nothing new was
	// there (default 2ms): the resolution of the lag.
	PollInterval time.Duration
}

// E2E posts the workload to ingest and watches processed_events until every event ingest
// accepted (a 2xx that was not a duplicate) is there. It reports the drain rate (distinct events
// visible per second, from the first webhook to the last row) and, per event, the lag from the
// webhook's 2xx to its row being visible to a reader: the time the poll that first saw it
// returned, so the lag is at most one poll late.
func E2E(ctx context.Context, stage string, o E2EOptions) (Result, error) {
	timeout := o.Timeout
	if timeout <= 0 {
		timeout = 2 * time.Minute
	}
	poll := o.PollInterval
	if poll <= 0 {
		poll = 2 * time.Millisecond
	}
	conn, err := pgx.Connect(ctx, o.DatabaseURL)
	if err != nil {
		return Result{}, fmt.Errorf("connecting to postgres: %w", err)
	}
	defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }()

	type accepted struct {
		id string
		at time.Time
	}
	// Room for every delivery: a client never waits on the watcher, which would add to the
	// latency it measures.
	deliveries := o.Ingest.Workload.Deliveries
	ch := make(chan accepted, len(deliveries))
	o.Ingest.Accepted = func(i int, at time.Time, duplicate bool) {
		if !duplicate {
			ch <- accepted{deliveries[i].ID, at}
		}
	}

	w := &watch{conn: conn, pending: map[string]time.Time{}, poll: poll}
	var wg sync.WaitGroup
	var draining atomic.Bool // once ingest is done, the progress line counts visible events
	watchCtx, cancelWatch := context.WithCancel(ctx)
	defer cancelWatch()
	wg.Go(func() {
		for {
			// Take in what was accepted since the last look.
		take:
			for {
				select {
				case a, ok := <-ch:
					if !ok {
						ch = nil
						break take
					}
					if _, seen := w.pending[a.id]; !seen {
						w.pending[a.id] = a.at
						w.accepted++
					}
				default:
					break take
				}
			}
			if len(w.pending) == 0 {
				if ch == nil {
					return
				}
				select { // nothing to look for: wait for the next acceptance
				case a, ok := <-ch:
					if !ok {
						ch = nil
						continue
					}
					w.pending[a.id] = a.at
					w.accepted++
				case <-watchCtx.Done():
					return
				}
				continue
			}
			found, err := w.look(watchCtx)
			if err != nil {
				if watchCtx.Err() == nil {
					w.err = err
				}
				return
			}
			if draining.Load() {
				o.Ingest.Progress.set(int64(len(w.lags)))
			}
			if found == 0 && !sleep(watchCtx, poll) {
				return
			}
		}
	})

	start := time.Now()
	r, err := Ingest(ctx, stage, o.Ingest)
	close(ch)
	if err != nil {
		cancelWatch()
		wg.Wait()
		return Result{}, err
	}
	o.Ingest.Progress.Stage(stage+": waiting for the worker", r.OK())
	draining.Store(true)
	waited := make(chan struct{})
	go func() { wg.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-time.After(timeout):
		cancelWatch()
		<-waited
	case <-ctx.Done():
		cancelWatch()
		<-waited
	}
	if w.err != nil {
		return Result{}, fmt.Errorf("watching processed_events: %w", w.err)
	}

	lag := Summarize(w.lags)
	r.Lag = &lag
	r.Note = fmt.Sprintf("%s; count and rate are distinct events visible in processed_events, from the first webhook to the last row; latency is the webhook round trip", r.Note)
	r.Count = len(w.lags)
	r.Elapsed = 0
	r.Rate = 0
	if len(w.lags) > 0 {
		r.Elapsed = w.last.Sub(start)
		r.Rate = float64(len(w.lags)) / r.Elapsed.Seconds()
	}
	if missing := len(w.pending); missing > 0 {
		msg := fmt.Sprintf("%d of %d accepted events not in processed_events %s after the last webhook", missing, w.accepted, timeout)
		if r.Error == "" {
			r.Error = msg
		} else {
			r.Error = msg + "; " + r.Error
		}
	}
	return r, nil
}

// watch looks for accepted events in processed_events.
type watch struct {
	conn     *pgx.Conn
	poll     time.Duration
	pending  map[string]time.Time // svix-id → when its 2xx arrived
	accepted int
	lags     []time.Duration
	last     time.Time
	err      error
}

// look queries the pending ids once and moves those found to lags.
func (w *watch) look(ctx context.Context) (int, error) {
	ids := slices.Collect(maps.Keys(w.pending))
	found := 0
	for chunk := range slices.Chunk(ids, 5000) {
		rows, err := w.conn.Query(ctx, "SELECT event_id FROM processed_events WHERE event_id = ANY($1)", chunk)
		if err != nil {
			return found, err
		}
		seen, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return found, err
		}
		now := time.Now()
		for _, id := range seen {
			if at, ok := w.pending[id]; ok {
				w.lags = append(w.lags, now.Sub(at))
				delete(w.pending, id)
				w.last = now
				found++
			}
		}
	}
	return found, nil
}
