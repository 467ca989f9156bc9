package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/clerksync/clerksync/internal/postgres"
	"github.com/clerksync/clerksync/internal/postgres/dbsqlc"
)

// DeadLetter is a parked message as worker dead-letters list shows it (the payload, which holds
// personal data, only by its size).
type DeadLetter struct {
	ID           int64      `json:"id"`
	EventID      *string    `json:"event_id"`
	StreamSeq    int64      `json:"stream_seq"`
	Subject      string     `json:"subject"`
	Error        string     `json:"error"`
	PayloadBytes int        `json:"payload_bytes"`
	CreatedAt    time.Time  `json:"created_at"`
	RetriedAt    *time.Time `json:"retried_at"`
}

// ListDeadLetters returns the dead letters waiting for an operator, oldest first; all includes
// the ones already retried.
func ListDeadLetters(ctx context.Context, cfg Config, all bool) ([]DeadLetter, error) {
	pool, err := postgres.Open(ctx, cfg.DatabaseURL)
	if err != nil {
		return nil, err
	}
	defer pool.Close()
	rows, err := dbsqlc.New(pool).ListDeadLetters(ctx, all)
	if err != nil {
		return nil, fmt.Errorf("listing dead letters: %w", err)
	}
	out := make([]DeadLetter, len(rows))
	for i, r := range rows {
		out[i] = DeadLetter{
			ID:           r.ID,
			StreamSeq:    r.StreamSeq,
			Subject:      r.Subject,
			Error:        r.Error,
			PayloadBytes: int(r.PayloadBytes),
			CreatedAt:    r.CreatedAt.Time.UTC(),
		}
		if r.EventID.Valid {
			out[i].EventID = &r.EventID.String
		}
		if r.RetriedAt.Valid {
			t := r.RetriedAt.Time.UTC()
			out[i].RetriedAt = &t
		}
	}
	return out, nil
}

// WriteDeadLetters writes dls to w as a table, or as JSON lines when asJSON.
func WriteDeadLetters(w io.Writer, dls []DeadLetter, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(w)
		for _, d := range dls {
			if err := enc.Encode(d); err != nil {
				return err
			}
		}
		return nil
	}
	// tabwriter holds the lines until Flush, which reports any write error.
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	_, _ = fmt.Fprintln(tw, "ID\tSEQ\tSUBJECT\tEVENT ID\tCREATED\tRETRIED\tBYTES\tERROR")
	for _, d := range dls {
		eventID, retried := "-", "-"
		if d.EventID != nil {
			eventID = *d.EventID
		}
		if d.RetriedAt != nil {
			retried = d.RetriedAt.Format(time.RFC3339)
		}
		_, _ = fmt.Fprintf(tw, "%d\t%d\t%s\t%s\t%s\t%s\t%d\t%s\n", d.ID, d.StreamSeq, d.Subject, eventID,
			d.CreatedAt.Format(time.RFC3339), retried, d.PayloadBytes, oneLine(d.Error, 100))
	}
	if len(dls) == 0 {
		_, _ = fmt.Fprintln(tw, "(no dead letters)")
	}
	return tw.Flush()
}

func oneLine(s string, limit int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > limit {
		return string(r[:limit]) + "…"
	}
	return s
}

// RetryDeadLetters re-applies the dead letter id, or every pending one when id is 0, through the
// worker's apply code. One that applies (or turns out to be a duplicate, or of a type the worker
// ignores) is marked retried in the same transaction; one that still fails stays pending and is
// reported. The error says how many still fail.
func RetryDeadLetters(ctx context.Context, cfg Config, id int64, logger *slog.Logger) (Summary, error) {
	var sum Summary
	pool, err := postgres.Open(ctx, cfg.DatabaseURL)
	if err != nil {
		return sum, err
	}
	defer pool.Close()
	q := dbsqlc.New(pool)
	var dls []dbsqlc.DeadLetter
	if id != 0 {
		dl, err := q.GetDeadLetter(ctx, id)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			return sum, fmt.Errorf("dead letter %d does not exist", id)
		case err != nil:
			return sum, fmt.Errorf("reading dead letter %d: %w", id, err)
		case dl.RetriedAt.Valid:
			return sum, fmt.Errorf("dead letter %d was already retried at %s", id, dl.RetriedAt.Time.UTC().Format(time.RFC3339))
		}
		dls = append(dls, dl)
	} else if dls, err = q.PendingDeadLetters(ctx); err != nil {
		return sum, fmt.Errorf("reading dead letters: %w", err)
	}

	a := &applier{
		pool: pool, logger: logger, tally: newTally(newMetrics(prometheus.NewRegistry())),
		maxAttempts: 1, // one that fails stays parked
		timeout:     cfg.AckWait,
	}
	for _, dl := range dls {
		sum.Read++
		sum.LastSeq = uint64(dl.StreamSeq) //nolint:gosec // G115: written from a stream sequence (int64(d.Seq)), never negative
		d := &delivery{Seq: sum.LastSeq, Subject: dl.Subject, EventID: dl.EventID.String, Body: dl.Payload,
			attempt: 1, deadLetter: dl.ID}
		d.parse()
		results, err := a.apply(ctx, []*delivery{d})
		if err != nil {
			return a.summaryOf(sum), fmt.Errorf("retrying dead letter %d: %w", dl.ID, err)
		}
		if o := results[0].outcome; o == outcomeDeadLettered {
			logger.Warn("dead letter still fails: kept", "id", dl.ID, "seq", dl.StreamSeq, "subject", dl.Subject)
		} else {
			logger.Info("dead letter retried", "id", dl.ID, "seq", dl.StreamSeq, "subject", dl.Subject, "outcome", string(o))
		}
	}
	sum = a.summaryOf(sum)
	logger.Info("dead letters retried", sum.logAttrs()...)
	if sum.DeadLettered > 0 {
		return sum, fmt.Errorf("%d of %d dead letters still fail", sum.DeadLettered, sum.Read)
	}
	return sum, nil
}
