package event_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go"

	"github.com/clerksync/clerksync/internal/event"
	"github.com/clerksync/clerksync/internal/event/eventtest"
)

// A user as the Backend API may serve it: keys in Clerk's order, odd spacing, an escaped
// character and a big number. The snapshot must carry these bytes exactly.
const servedUser = `{"id":"user_2gR0rOWvX77FZ91ghfT4QVzfEgG", "object":"user","first_name":"Fac\u00fando","updated_at":1715645280853,"public_metadata":{"n":12345678901234567890}}`

func TestSnapshot(t *testing.T) {
	t.Parallel()
	readAt := time.UnixMilli(1733333333123)
	msg, err := event.Snapshot(event.KindUser, "user_2gR0rOWvX77FZ91ghfT4QVzfEgG", 1715645280853, []byte(servedUser), readAt)
	if err != nil {
		t.Fatal(err)
	}
	wantBody := `{"object":"event","type":"user.snapshot","timestamp":1733333333123,"data":` + servedUser + `}`
	if diff := cmp.Diff(wantBody, string(msg.Data)); diff != "" {
		t.Errorf("body (-want +got)\n%s", diff)
	}
	if msg.Subject != "clerk.user.snapshot" {
		t.Errorf("subject %q", msg.Subject)
	}
	wantHeader := nats.Header{
		"Nats-Msg-Id":      {"snap_user_2gR0rOWvX77FZ91ghfT4QVzfEgG_1715645280853"},
		"Svix-Id":          {"snap_user_2gR0rOWvX77FZ91ghfT4QVzfEgG_1715645280853"},
		"Clerk-Event-Type": {"user.snapshot"},
		"Received-At":      {"2024-12-04T17:28:53.123Z"},
		"Clerk-Source":     {"backend-api"},
	}
	if diff := cmp.Diff(wantHeader, msg.Header); diff != "" {
		t.Errorf("headers (-want +got)\n%s", diff)
	}

	org, err := event.Snapshot(event.KindOrganization, "org_1", 7, []byte(`{"id":"org_1"}`), readAt)
	if err != nil || org.Subject != "clerk.organization.snapshot" || org.Header.Get(event.HeaderMsgID) != "snap_org_1_7" {
		t.Errorf("organization snapshot: %v %+v", err, org)
	}
	for name, data := range map[string]string{"array": `[1]`, "not json": `{"id":`, "empty": ``} {
		if _, err := event.Snapshot(event.KindUser, "user_1", 1, []byte(data), readAt); err == nil {
			t.Errorf("%s: data %q accepted", name, data)
		}
	}
	if _, err := event.Snapshot("session", "sess_1", 1, []byte(`{}`), readAt); !errors.Is(err, event.ErrUnknownKind) {
		t.Errorf("unknown kind: %v, want ErrUnknownKind", err)
	}
}

func TestSyntheticDelete(t *testing.T) {
	t.Parallel()
	at := time.UnixMilli(1733333333123)
	tests := []struct{ kind, id, subject, body string }{
		{event.KindUser, "user_1", "clerk.user.deleted",
			`{"object":"event","type":"user.deleted","timestamp":1733333333123,"data":{"object":"user","id":"user_1","deleted":true}}`},
		{event.KindOrganizationMembership, "orgmem_1", "clerk.organizationMembership.deleted",
			`{"object":"event","type":"organizationMembership.deleted","timestamp":1733333333123,"data":{"object":"organization_membership","id":"orgmem_1","deleted":true}}`},
	}
	for _, tt := range tests {
		msg, err := event.SyntheticDelete(tt.kind, tt.id, at)
		if err != nil {
			t.Fatal(err)
		}
		if msg.Subject != tt.subject || string(msg.Data) != tt.body {
			t.Errorf("%s: %s %s", tt.kind, msg.Subject, msg.Data)
		}
		if got := msg.Header.Get(event.HeaderMsgID); got != "gone_"+tt.id || msg.Header.Get(event.HeaderSvixID) != got {
			t.Errorf("%s: id %q", tt.kind, got)
		}
		if msg.Header.Get(event.HeaderClerkSource) != "backend-api" || msg.Header.Get(event.HeaderSvixSignature) != "" {
			t.Errorf("%s: headers %v", tt.kind, msg.Header)
		}
	}
}

func TestPublisherWaitsForEveryAck(t *testing.T) {
	t.Parallel()
	_, js := eventtest.Connect(t, eventtest.NewServer(t).URL()) // its own: ids must be new
	ctx := context.Background()
	p := event.NewPublisher(js, 2, 10*time.Second)
	for i := range 5 {
		id := "user_" + string(rune('a'+i%3)) // a, b, c, a, b: the last two are duplicates
		msg, err := event.Snapshot(event.KindUser, id, 1, []byte(`{"id":"`+id+`"}`), time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Publish(ctx, msg); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if p.Stored != 3 || p.Duplicates != 2 {
		t.Errorf("stored %d, duplicates %d; want 3 and 2", p.Stored, p.Duplicates)
	}
}

// TestPublishBatch: a batch of new messages is stored as one atomic batch; a batch holding a
// message the stream already has (which fails an atomic batch as a whole) and a stream without
// atomic publish both fall back to one message at a time, duplicates dropped.
func TestPublishBatch(t *testing.T) {
	t.Parallel()
	_, js := eventtest.Connect(t, eventtest.NewServer(t).URL())
	ctx := context.Background()
	snaps := func(ids ...string) []*nats.Msg {
		var msgs []*nats.Msg
		for _, id := range ids {
			msg, err := event.Snapshot(event.KindUser, id, 1, []byte(`{"id":"`+id+`"}`), time.Now())
			if err != nil {
				t.Fatal(err)
			}
			msgs = append(msgs, msg)
		}
		return msgs
	}
	stored := func() uint64 {
		s, err := js.Stream(ctx, event.Stream)
		if err != nil {
			t.Fatal(err)
		}
		info, err := s.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Msgs
	}
	p := event.NewPublisher(js, 8, 10*time.Second)
	if err := p.PublishBatch(ctx, snaps("user_a", "user_b", "user_c")); err != nil {
		t.Fatal(err)
	}
	if err := p.PublishBatch(ctx, snaps("user_c", "user_d")); err != nil { // user_c again
		t.Fatal(err)
	}
	if err := p.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if p.Stored != 4 || p.Duplicates != 1 || stored() != 4 {
		t.Errorf("stored %d, duplicates %d, %d in the stream; want 4, 1, 4", p.Stored, p.Duplicates, stored())
	}

	// A stream created before atomic publish was allowed.
	s, err := js.Stream(ctx, event.Stream)
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.CachedInfo().Config
	cfg.AllowAtomicPublish = false
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if err := p.PublishBatch(ctx, snaps("user_e", "user_f")); err != nil {
		t.Fatal(err)
	}
	if err := p.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if stored() != 6 {
		t.Errorf("%d in the stream after the fallback, want 6", stored())
	}
}
