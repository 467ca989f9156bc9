package loadgen

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	svix "github.com/svix/svix-webhooks/go"

	"github.com/clerksync/clerksync/internal/clerkgen"
	"github.com/clerksync/clerksync/internal/event"
)

// PublishOptions configures Publish.
type PublishOptions struct {
	NATSURL  string
	Clients  int
	Workload Workload
	// Stream is the configuration to copy when the server has no CLERK stream yet.
	Stream event.StreamConfig
	// Batch > 1 publishes atomic batches of that many messages (JetStream's Nats-Batch-*
	// headers; the server stores a batch under one flush when it syncs every write), from
	// Clients/Batch publishers: the same number of messages in flight, grouped. It is what a
	// group commit in ingest could reach, not what ingest does.
	Batch    int
	Progress *Progress
}

// Publish is ingest's physical limit: the workload's bodies, with the headers ingest would
// write, published straight to JetStream by o.Clients synchronous publishers sharing one
// connection, each waiting for its PubAck. It writes to a scratch stream configured like CLERK
// on the same server (so the worker does not consume it, and nothing is left behind), and gives
// every message its own Nats-Msg-Id, so the dedupe index is exercised but nothing is deduped.
func Publish(ctx context.Context, stage string, o PublishOptions) (Result, error) {
	nc, err := nats.Connect(o.NATSURL, nats.Name("clerksync-loadgen"))
	if err != nil {
		return Result{}, fmt.Errorf("connecting to nats: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return Result{}, fmt.Errorf("jetstream: %w", err)
	}
	id := strconv.FormatInt(time.Now().UnixNano(), 36)
	prefix := "loadgen." + id
	cfg, err := scratchStreamConfig(ctx, js, o.Stream, "LOADGEN_"+id, prefix)
	if err != nil {
		return Result{}, err
	}
	if o.Batch > 1 {
		cfg.AllowAtomicPublish = true
	}
	if _, err := js.CreateStream(ctx, cfg); err != nil {
		return Result{}, fmt.Errorf("creating scratch stream %s: %w", cfg.Name, err)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		_ = js.DeleteStream(dctx, cfg.Name)
	}()

	// Sign like Svix, so the headers are as long as ingest's.
	wh, err := svix.NewWebhook(clerkgen.NewSecret())
	if err != nil {
		return Result{}, err
	}
	o.Progress.Stage(stage, len(o.Workload.Deliveries))
	message := func(i int) (*nats.Msg, error) {
		d := o.Workload.Deliveries[i]
		now := time.Now()
		sig, err := wh.Sign(d.ID, now, d.Body)
		if err != nil {
			return nil, err
		}
		msg := nats.NewMsg(prefix + "." + d.Type)
		msg.Data = d.Body
		msg.Header.Set(event.HeaderMsgID, d.ID+"-"+strconv.Itoa(i))
		msg.Header.Set(event.HeaderSvixID, d.ID)
		msg.Header.Set(event.HeaderSvixTimestamp, strconv.FormatInt(now.Unix(), 10))
		msg.Header.Set(event.HeaderSvixSignature, sig)
		msg.Header.Set(event.HeaderEventType, d.Type)
		msg.Header.Set(event.HeaderReceivedAt, now.UTC().Format(time.RFC3339Nano))
		return msg, nil
	}
	if o.Batch > 1 {
		return publishBatches(ctx, stage, nc, o, message), nil
	}
	r := drive(ctx, stage, load{Clients: o.Clients, Jobs: len(o.Workload.Deliveries), Progress: o.Progress},
		func(ctx context.Context, _, i int) (string, error) {
			msg, err := message(i)
			if err != nil {
				return "", err
			}
			ctx, cancel := context.WithTimeout(ctx, 5*time.Second) // ingest's PUBLISH_TIMEOUT
			defer cancel()
			if _, err := js.PublishMsg(ctx, msg); err != nil {
				return "", err
			}
			return "ok", nil
		})
	r.Note = fmt.Sprintf("scratch stream configured like %s on the same server, %d publishers on one connection", event.Stream, max(o.Clients, 1))
	return r, nil
}

// publishBatches publishes the workload in atomic batches of o.Batch messages, the last one
// committing the batch and waiting for the PubAck. The latency of a batch is that of each of
// its messages.
func publishBatches(ctx context.Context, stage string, nc *nats.Conn, o PublishOptions, message func(int) (*nats.Msg, error)) Result {
	n := len(o.Workload.Deliveries)
	batches := (n + o.Batch - 1) / o.Batch
	publishers := max((o.Clients+o.Batch-1)/o.Batch, 1)
	id := strconv.FormatInt(time.Now().UnixNano(), 36)
	r := drive(ctx, stage, load{Clients: publishers, Jobs: batches}, func(ctx context.Context, _, b int) (string, error) {
		first, last := b*o.Batch, min((b+1)*o.Batch, n)-1
		for i := first; i <= last; i++ {
			msg, err := message(i)
			if err != nil {
				return "", err
			}
			msg.Header.Set("Nats-Batch-Id", id+"-"+strconv.Itoa(b))
			msg.Header.Set("Nats-Batch-Sequence", strconv.Itoa(i-first+1))
			if i < last {
				if err := nc.PublishMsg(msg); err != nil {
					return "", err
				}
				continue
			}
			msg.Header.Set("Nats-Batch-Commit", "1")
			ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			resp, err := nc.RequestMsgWithContext(ctx, msg)
			if err != nil {
				return "", err
			}
			var ack struct {
				Error *struct {
					Description string `json:"description"`
				} `json:"error"`
				Count int `json:"count"`
			}
			if err := json.Unmarshal(resp.Data, &ack); err != nil {
				return "", fmt.Errorf("batch commit: %w", err)
			}
			if ack.Error != nil {
				return "", fmt.Errorf("batch commit: %s", ack.Error.Description)
			}
			if ack.Count != last-first+1 {
				return "", fmt.Errorf("batch commit: %d messages stored, want %d", ack.Count, last-first+1)
			}
		}
		o.Progress.add(int64(last - first + 1))
		return "ok", nil
	})
	// Count messages, not batches.
	ok := r.Statuses["ok"]
	stored := min(ok*o.Batch, n)
	r.Count, r.Clients = stored, o.Clients
	if r.Elapsed > 0 {
		r.Rate = float64(stored) / r.Elapsed.Seconds()
	}
	r.Statuses = map[string]int{"ok": stored, "error": (r.Attempts() - ok) * o.Batch}
	if r.Statuses["error"] == 0 {
		delete(r.Statuses, "error")
	}
	r.Note = fmt.Sprintf("atomic batches of %d from %d publishers on one connection (%d messages in flight); latency is per batch",
		o.Batch, publishers, publishers*o.Batch)
	return r
}

// scratchStreamConfig copies the CLERK stream's configuration (or, when the server has none,
// what ingest would create) under another name and subject.
func scratchStreamConfig(ctx context.Context, js jetstream.JetStream, fallback event.StreamConfig, name, prefix string) (jetstream.StreamConfig, error) {
	var cfg jetstream.StreamConfig
	s, err := js.Stream(ctx, event.Stream)
	switch {
	case err == nil:
		info, err := s.Info(ctx)
		if err != nil {
			return cfg, fmt.Errorf("reading stream %s: %w", event.Stream, err)
		}
		cfg = info.Config
	case errors.Is(err, jetstream.ErrStreamNotFound):
		cfg = jetstream.StreamConfig{
			Storage:    jetstream.FileStorage,
			Retention:  jetstream.LimitsPolicy,
			Discard:    jetstream.DiscardOld,
			MaxAge:     fallback.MaxAge,
			Replicas:   max(fallback.Replicas, 1),
			Duplicates: fallback.DuplicateWindow,
		}
		if cfg.Duplicates <= 0 {
			cfg.Duplicates = 10 * time.Minute
		}
	default:
		return cfg, fmt.Errorf("reading stream %s: %w", event.Stream, err)
	}
	cfg.Name = name
	cfg.Description = "clerksync loadgen baseline: scratch, deleted after the run"
	cfg.Subjects = []string{prefix + ".>"}
	cfg.Sources, cfg.Mirror, cfg.RePublish, cfg.SubjectTransform = nil, nil, nil, nil
	cfg.Metadata = nil
	return cfg, nil
}
