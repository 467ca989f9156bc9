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
