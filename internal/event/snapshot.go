package event

import (
	"bytes"
	"context"
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
// PubAck, so a sweep is not bound by one round trip per object; Wait returns once every
// message published so far was acknowledged (or the first error).
type Publisher struct {
	js      jetstream.JetStream
	window  chan struct{}
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

// Publish sends msg; when the window is full it first waits for the acknowledgements.
func (p *Publisher) Publish(ctx context.Context, msg *nats.Msg) error {
	if len(p.pending) == cap(p.window) {
		if err := p.Wait(ctx); err != nil {
			return err
		}
	}
	f, err := p.js.PublishMsgAsync(msg)
	if err != nil {
		return fmt.Errorf("publishing %s: %w", msg.Subject, err)
	}
	p.pending = append(p.pending, f)
	return nil
}

// Wait waits for the PubAck of every message published so far.
func (p *Publisher) Wait(ctx context.Context) error {
	timer := time.NewTimer(p.timeout)
	defer timer.Stop()
	pending := p.pending
	p.pending = p.pending[:0]
	var first error
	for _, f := range pending {
		select {
		case ack := <-f.Ok():
			if ack.Duplicate {
				p.Duplicates++
			} else {
				p.Stored++
			}
		case err := <-f.Err():
			if first == nil {
				first = fmt.Errorf("publishing %s: %w", f.Msg().Subject, err)
			}
		case <-timer.C:
			return fmt.Errorf("publishing %s: no PubAck in %s", f.Msg().Subject, p.timeout)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return first
}
