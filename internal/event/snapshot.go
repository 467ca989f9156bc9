package event

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Snapshots are what clerksync itself appends from Clerk's Backend API (worker reconcile, the
// api's just-in-time sync): ordinary stream messages, so the stream stays the one source of truth
// and a rebuild reproduces them. They carry no Svix signature; HeaderClerkSource says where they
// came from.
const (
	HeaderClerkSource = "Clerk-Source"
	SourceBackendAPI  = "backend-api"
)

// Kinds of Clerk object a snapshot may carry: <kind>.snapshot and <kind>.deleted are their types.
const (
	KindUser                   = "user"
	KindOrganization           = "organization"
	KindOrganizationMembership = "organizationMembership"
)

// ErrUnknownKind means a kind is not one of the Kind constants.
var ErrUnknownKind = errors.New("unknown object kind")

// objectName is the "object" field Clerk gives objects of kind (a synthetic delete says it).
func objectName(kind string) (string, error) {
	switch kind {
	case KindUser:
		return "user", nil
	case KindOrganization:
		return "organization", nil
	case KindOrganizationMembership:
		return "organization_membership", nil
	}
	return "", fmt.Errorf("%w %q", ErrUnknownKind, kind)
}

// SnapshotID is the Nats-Msg-Id and Svix-Id of a snapshot: snap_<object id>_<updated_at ms>, so a
// second read of an unchanged object is a duplicate JetStream (or processed_events) drops.
func SnapshotID(objectID string, updatedAtMs int64) string {
	return "snap_" + objectID + "_" + strconv.FormatInt(updatedAtMs, 10)
}

// GoneID is the id of the synthetic delete of an object the Backend API no longer has.
func GoneID(objectID string) string { return "gone_" + objectID }

// Snapshot builds the message for an object of kind as the Backend API served it: type
// <kind>.snapshot, body {"object":"event","type":…,"timestamp":<readAt in ms>,"data":<data>}
// with data byte for byte as given (never re-encoded). data must be a JSON object.
func Snapshot(kind, objectID string, updatedAtMs int64, data json.RawMessage, readAt time.Time) (*nats.Msg, error) {
	if _, err := objectName(kind); err != nil {
		return nil, err
	}
	data = bytes.TrimSpace(data)
	if len(data) == 0 || data[0] != '{' || !json.Valid(data) {
		return nil, fmt.Errorf("snapshot of %s %q: data is not a JSON object", kind, objectID)
	}
	if objectID == "" {
		return nil, fmt.Errorf("snapshot of a %s: no object id", kind)
	}
	return message(kind+".snapshot", SnapshotID(objectID, updatedAtMs), data, readAt), nil
}

// SyntheticDelete builds the delete clerksync publishes for an object of kind that a complete
// reconcile sweep no longer found: type <kind>.deleted, data {"object":…,"id":…,"deleted":true}
// as Clerk's own delete carries, id gone_<object id>. It folds like Clerk's delete.
func SyntheticDelete(kind, objectID string, at time.Time) (*nats.Msg, error) {
	object, err := objectName(kind)
	if err != nil {
		return nil, err
	}
	if objectID == "" {
		return nil, fmt.Errorf("delete of a %s: no object id", kind)
	}
	data, err := json.Marshal(struct {
		Object  string `json:"object"`
		ID      string `json:"id"`
		Deleted bool   `json:"deleted"`
	}{object, objectID, true})
	if err != nil {
		return nil, err
	}
	return message(kind+".deleted", GoneID(objectID), data, at), nil
}

func message(typ, id string, data []byte, at time.Time) *nats.Msg {
	var body bytes.Buffer
	body.Grow(len(data) + 96)
	body.WriteString(`{"object":"event","type":"`)
	body.WriteString(typ) // a valid type: letters, digits, dots and underscores only
	body.WriteString(`","timestamp":`)
	body.WriteString(strconv.FormatInt(at.UnixMilli(), 10))
	body.WriteString(`,"data":`)
	body.Write(data)
	body.WriteByte('}')
	msg := nats.NewMsg(SubjectPrefix + typ)
	msg.Data = body.Bytes()
	msg.Header.Set(HeaderMsgID, id)
	msg.Header.Set(HeaderSvixID, id)
	msg.Header.Set(HeaderEventType, typ)
	msg.Header.Set(HeaderReceivedAt, at.UTC().Format(time.RFC3339Nano))
	msg.Header.Set(HeaderClerkSource, SourceBackendAPI)
	return msg
}

// Publisher publishes messages asynchronously with up to a window of them awaiting their
// PubAck (a sliding window: each new message waits for the oldest only), so a sweep is not bound
// by one round trip per object; Wait returns once every message published so far was
// acknowledged (or the first error). It is not safe for concurrent use.
type Publisher struct {
	js      jetstream.JetStream
	window  chan struct{} // only its capacity is used
	pending []jetstream.PubAckFuture
	timeout time.Duration
	// Stored and Duplicates count the acknowledged messages.
	Stored, Duplicates int
}

// NewPublisher publishes with js, at most window messages unacknowledged at once, each
// acknowledged within timeout.
func NewPublisher(js jetstream.JetStream, window int, timeout time.Duration) *Publisher {
	return &Publisher{js: js, window: make(chan struct{}, max(1, window)), timeout: timeout}
}

// Publish sends msg; when the window is full it first waits for the oldest acknowledgement.
func (p *Publisher) Publish(ctx context.Context, msg *nats.Msg) error {
	if len(p.pending) == cap(p.window) {
		if err := p.await(ctx, p.pending[0]); err != nil {
			return err
		}
		p.pending = p.pending[1:]
	}
	f, err := p.js.PublishMsgAsync(msg)
	if err != nil {
		return fmt.Errorf("publishing %s: %w", msg.Subject, err)
	}
	p.pending = append(p.pending, f)
	return nil
}

// Wait waits for the PubAck of every message published so far, and returns the first error.
func (p *Publisher) Wait(ctx context.Context) error {
	pending := p.pending
	p.pending = nil
	var first error
	for _, f := range pending {
		if err := p.await(ctx, f); err != nil && first == nil {
			first = err
			if ctx.Err() != nil {
				return first
			}
		}
	}
	return first
}

// MaxBatch is the most messages PublishBatch sends as one atomic batch (the server's default
// limit is 1,000).
const MaxBatch = 500

// PublishBatch publishes msgs as JetStream atomic batches of up to MaxBatch, each committed
// with one request: with sync_interval always the server stores a batch under one flush instead
// of one per message, which is what makes a backfill as fast as the worker drains it. A batch
// the server refuses as a whole (a message JetStream already has: a batch with a duplicate fails
// entirely; a stream without atomic publish; a lost commit reply) is published again message by
// message through Publish, where duplicates are dropped one by one; Nats-Msg-Id makes the second
// try safe even when the first was stored. It waits for the batches' acknowledgements, not for
// the fallback's (Wait does).
func (p *Publisher) PublishBatch(ctx context.Context, msgs []*nats.Msg) error {
	for len(msgs) > 0 {
		n := min(len(msgs), MaxBatch)
		if err := p.atomic(ctx, msgs[:n]); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			for _, m := range msgs[:n] {
				stripBatchHeaders(m)
				if err := p.Publish(ctx, m); err != nil {
					return err
				}
			}
		}
		msgs = msgs[n:]
	}
	return nil
}

const (
	headerBatchID     = "Nats-Batch-Id"
	headerBatchSeq    = "Nats-Batch-Sequence"
	headerBatchCommit = "Nats-Batch-Commit"
)

func stripBatchHeaders(m *nats.Msg) {
	m.Header.Del(headerBatchID)
	m.Header.Del(headerBatchSeq)
	m.Header.Del(headerBatchCommit)
}

// atomic publishes msgs as one atomic batch and waits for its commit.
func (p *Publisher) atomic(ctx context.Context, msgs []*nats.Msg) error {
	var id [16]byte
	_, _ = rand.Read(id[:])
	batchID := hex.EncodeToString(id[:])
	nc := p.js.Conn()
	for i, m := range msgs {
		m.Header.Set(headerBatchID, batchID)
		m.Header.Set(headerBatchSeq, strconv.Itoa(i+1))
		if i < len(msgs)-1 {
			if err := nc.PublishMsg(m); err != nil {
				return err
			}
		}
	}
	last := msgs[len(msgs)-1]
	last.Header.Set(headerBatchCommit, "1")
	rctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	resp, err := nc.RequestMsgWithContext(rctx, last)
	if err != nil {
		return fmt.Errorf("committing a batch of %d: %w", len(msgs), err)
	}
	var ack struct {
		Error *struct {
			Code        int    `json:"err_code"`
			Description string `json:"description"`
		} `json:"error"`
		Count int `json:"count"`
	}
	if err := json.Unmarshal(resp.Data, &ack); err != nil {
		return fmt.Errorf("committing a batch of %d: %w", len(msgs), err)
	}
	if ack.Error != nil {
		return fmt.Errorf("committing a batch of %d: %s (%d)", len(msgs), ack.Error.Description, ack.Error.Code)
	}
	if ack.Count != len(msgs) {
		return fmt.Errorf("committing a batch of %d: %d stored", len(msgs), ack.Count)
	}
	p.Stored += len(msgs)
	return nil
}

func (p *Publisher) await(ctx context.Context, f jetstream.PubAckFuture) error {
	timer := time.NewTimer(p.timeout)
	defer timer.Stop()
	select {
	case ack := <-f.Ok():
		if ack.Duplicate {
			p.Duplicates++
		} else {
			p.Stored++
		}
		return nil
	case err := <-f.Err():
		return fmt.Errorf("publishing %s: %w", f.Msg().Subject, err)
	case <-timer.C:
		return fmt.Errorf("publishing %s: no PubAck in %s", f.Msg().Subject, p.timeout)
	case <-ctx.Done():
		return ctx.Err()
	}
}
