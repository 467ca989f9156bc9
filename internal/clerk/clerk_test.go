package clerk_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"

	"github.com/clerksync/clerksync/internal/clerk"
)

func fixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseEnvelope(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		body string
		want clerk.Envelope
		err  error
	}{
		{"user event", `{"type":"user.created","data":{"id":"user_1"}}`, clerk.Envelope{Type: "user.created", DataID: "user_1"}, nil},
		{"other event without id", `{"type":"session.created","data":{}}`, clerk.Envelope{Type: "session.created"}, nil},
		{"not json", `nope`, clerk.Envelope{}, clerk.ErrMalformed},
		{"array", `[1]`, clerk.Envelope{}, clerk.ErrMalformed},
		{"no type", `{"data":{}}`, clerk.Envelope{}, clerk.ErrMalformed},
		{"type not string", `{"type":1,"data":{}}`, clerk.Envelope{}, clerk.ErrMalformed},
		{"type null", `{"type":null,"data":{}}`, clerk.Envelope{}, clerk.ErrMalformed},
		{"no data", `{"type":"user.created"}`, clerk.Envelope{}, clerk.ErrMalformed},
		{"data not object", `{"type":"user.created","data":[]}`, clerk.Envelope{}, clerk.ErrMalformed},
		{"user event without id", `{"type":"user.created","data":{}}`, clerk.Envelope{}, clerk.ErrMalformed},
		{"user event numeric id", `{"type":"user.updated","data":{"id":7}}`, clerk.Envelope{}, clerk.ErrMalformed},
		{"user event empty id", `{"type":"user.updated","data":{"id":""}}`, clerk.Envelope{}, clerk.ErrMalformed},
		{"bad type", `{"type":"user.>","data":{"id":"u"}}`, clerk.Envelope{}, clerk.ErrInvalidType},
		{"one segment", `{"type":"user","data":{"id":"u"}}`, clerk.Envelope{}, clerk.ErrInvalidType},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := clerk.ParseEnvelope([]byte(tt.body))
			if !errors.Is(err, tt.err) {
				t.Fatalf("error = %v, want %v", err, tt.err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got)\n%s", diff)
			}
		})
	}
}

func TestParseUserEventFixtures(t *testing.T) {
	t.Parallel()
	created, err := clerk.ParseUserEvent(fixture(t, "user.created.json"))
	if err != nil {
		t.Fatal(err)
	}
	ct := time.UnixMilli(1654012591514).UTC()
	want := clerk.UserEvent{
		Type:        clerk.UserCreated,
		ClerkUserID: "user_29w83sxmDNGwOuEthce5gg56FcC",
		Timestamp:   time.UnixMilli(1654012591835).UTC(),
		User: &clerk.User{
			ID:        "user_29w83sxmDNGwOuEthce5gg56FcC",
			Email:     ptr("example@example.org"),
			FirstName: ptr("Example"),
			LastName:  ptr("Example"),
			ImageURL:  ptr("https://img.clerk.com/xxxxxx"),
			CreatedAt: &ct,
			UpdatedAt: time.UnixMilli(1654012591835).UTC(),
		},
	}
	created.User.Data = nil
	if diff := cmp.Diff(want, created); diff != "" {
		t.Errorf("user.created (-want +got)\n%s", diff)
	}

	deleted, err := clerk.ParseUserEvent(fixture(t, "user.deleted.json"))
	if err != nil {
		t.Fatal(err)
	}
	wantDeleted := clerk.UserEvent{Type: clerk.UserDeleted, ClerkUserID: "user_29wBMCtzATuFJut8jO2VNTVekS4", Timestamp: time.UnixMilli(1661861640000).UTC()}
	if diff := cmp.Diff(wantDeleted, deleted); diff != "" {
		t.Errorf("user.deleted (-want +got)\n%s", diff)
	}
}

func TestParseUserEventRejects(t *testing.T) {
	t.Parallel()
	tests := map[string]string{
		"not a user event":        `{"type":"session.created","data":{"id":"u"}}`,
		"no updated_at":           `{"type":"user.updated","timestamp":1,"data":{"id":"u"}}`,
		"updated_at string":       `{"type":"user.updated","timestamp":1,"data":{"id":"u","updated_at":"x"}}`,
		"updated_at float":        `{"type":"user.updated","timestamp":1,"data":{"id":"u","updated_at":1.5}}`,
		"updated_at huge":         `{"type":"user.updated","timestamp":1,"data":{"id":"u","updated_at":99999999999999999}}`,
		"delete without time":     `{"type":"user.deleted","data":{"id":"u","deleted":true}}`,
		"delete without id":       `{"type":"user.deleted","timestamp":1,"data":{"deleted":true}}`,
		"names of the wrong type": `{"type":"user.created","timestamp":1,"data":{"id":"u","updated_at":1,"first_name":3}}`,
	}
	for name, body := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if _, err := clerk.ParseUserEvent([]byte(body)); !errors.Is(err, clerk.ErrMalformed) {
				t.Fatalf("error = %v, want ErrMalformed", err)
			}
		})
	}
}

func TestPrimaryEmail(t *testing.T) {
	t.Parallel()
	body := `{"type":"user.updated","timestamp":1,"data":{"id":"u","updated_at":2,
		"primary_email_address_id":"idn_b",
		"email_addresses":[{"id":"idn_a","email_address":"a@x"},{"id":"idn_b","email_address":"b@x"}]}}`
	ev, err := clerk.ParseUserEvent([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	if ev.User.Email == nil || *ev.User.Email != "b@x" {
		t.Fatalf("email = %v, want b@x", ev.User.Email)
	}
	body = `{"type":"user.updated","timestamp":1,"data":{"id":"u","updated_at":2,"primary_email_address_id":null,
		"email_addresses":[{"id":"idn_a","email_address":"a@x"}]}}`
	if ev, err = clerk.ParseUserEvent([]byte(body)); err != nil || ev.User.Email != nil {
		t.Fatalf("null primary id: email = %v, err = %v; want nil, nil", ev.User.Email, err)
	}
}

func FuzzParseEnvelope(f *testing.F) {
	for _, name := range []string{"user.created.json", "user.updated.json", "user.deleted.json"} {
		f.Add(fixture(f, name))
	}
	f.Add([]byte(`{"type":"user.created","data":{"id":"u"}}`))
	f.Add([]byte(`{"type":"a.b","data":{}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		env, err := clerk.ParseEnvelope(body)
		if err != nil {
			if !errors.Is(err, clerk.ErrMalformed) && !errors.Is(err, clerk.ErrInvalidType) {
				t.Fatalf("unexpected error class: %v", err)
			}
			return
		}
		if env.Type == "" {
			t.Fatal("accepted an envelope without a type")
		}
		if len(env.Type) > 5 && env.Type[:5] == "user." && env.DataID == "" {
			t.Fatal("accepted a user event without data.id")
		}
	})
}

func FuzzParseUserEvent(f *testing.F) {
	for _, name := range []string{"user.created.json", "user.updated.json", "user.deleted.json"} {
		f.Add(fixture(f, name))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		ev, err := clerk.ParseUserEvent(body)
		if err != nil {
			if !errors.Is(err, clerk.ErrMalformed) {
				t.Fatalf("error does not wrap ErrMalformed: %v", err)
			}
			return
		}
		if ev.ClerkUserID == "" {
			t.Fatal("accepted an event without a user id")
		}
		if (ev.Type == clerk.UserDeleted) != (ev.User == nil) {
			t.Fatalf("type %s with user %v", ev.Type, ev.User)
		}
	})
}

func ptr[T any](v T) *T { return &v }

func TestStorableJSON(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, in, want string }{
		{"nothing to replace", `{"a":"b\n\u00e9"}`, `{"a":"b\n\u00e9"}`},
		{"NUL escape", `{"a":"x\u0000y"}`, `{"a":"x\ufffdy"}`},
		{"NUL escape in a key and nested", `{"\u0000":{"b":["\u0000"]}}`, `{"\ufffd":{"b":["\ufffd"]}}`},
		{"escaped backslash before u0000", `{"a":"\\u0000"}`, `{"a":"\\u0000"}`},
		{"lone high surrogate", `{"a":"\ud800x"}`, `{"a":"\ufffdx"}`},
		{"high surrogate then a non-surrogate escape", `{"a":"\uD800\u0041"}`, `{"a":"\ufffd\u0041"}`},
		{"lone low surrogate", `{"a":"\udc00"}`, `{"a":"\ufffd"}`},
		{"surrogate pair", `{"a":"\ud83d\ude00"}`, `{"a":"\ud83d\ude00"}`},
		{"two high surrogates then a low", `{"a":"\ud800\ud83d\ude00"}`, `{"a":"\ufffd\ud83d\ude00"}`},
		{"invalid UTF-8 bytes", "{\"a\":\"x\xff\xfey\"}", `{"a":"x\ufffd\ufffdy"}`},
		{"valid UTF-8", `{"a":"日本"}`, `{"a":"日本"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := clerk.StorableJSON([]byte(tt.in))
			if string(got) != tt.want {
				t.Errorf("StorableJSON(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
	// The common case costs no copy.
	in := []byte(`{"a":"b"}`)
	if got := clerk.StorableJSON(in); &got[0] != &in[0] {
		t.Error("StorableJSON copied a body with nothing to replace")
	}
}

func FuzzStorableJSON(f *testing.F) {
	f.Add([]byte(`{"a":"x\u0000\ud800\udc00\ud800"}`))
	f.Add([]byte("{\"a\":\"\xff\"}"))
	f.Fuzz(func(t *testing.T, body []byte) {
		if !json.Valid(body) {
			return
		}
		got := clerk.StorableJSON(body)
		if !json.Valid(got) || !utf8.Valid(got) {
			t.Fatalf("StorableJSON(%q) = %q: not valid JSON and UTF-8", body, got)
		}
		before, after := decodeAny(t, body), decodeAny(t, got)
		// encoding/json reads every replaced thing as U+FFFD too, bar NUL.
		if diff := cmp.Diff(replaceNUL(before), after); diff != "" {
			t.Fatalf("StorableJSON changed more than it may (-want +got)\n%s", diff)
		}
		if bytes.Contains(got, []byte(`\u0000`)) && !bytes.Contains(got, []byte(`\\u0000`)) {
			t.Fatalf("StorableJSON left a NUL escape: %q", got)
		}
	})
}

func decodeAny(t *testing.T, b []byte) any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

func replaceNUL(v any) any {
	switch v := v.(type) {
	case string:
		return strings.ReplaceAll(v, "\x00", "\uFFFD")
	case []any:
		for i := range v {
			v[i] = replaceNUL(v[i])
		}
	case map[string]any:
		m := make(map[string]any, len(v))
		for k, x := range v {
			m[strings.ReplaceAll(k, "\x00", "\uFFFD")] = replaceNUL(x)
		}
		return m
	}
	return v
}

// TestParseUserSnapshot: a user.snapshot (clerksync's own message from the Backend API) parses
// exactly like the user.updated with the same data.
func TestParseUserSnapshot(t *testing.T) {
	t.Parallel()
	const data = `{"id":"user_1","object":"user","updated_at":1715645280853,"created_at":1715645280775,"first_name":"Ada","email_addresses":[{"id":"idn_1","email_address":"ada@example.org"}],"primary_email_address_id":"idn_1"}`
	snap, err := clerk.ParseUserEvent([]byte(`{"object":"event","type":"user.snapshot","timestamp":1733333333123,"data":` + data + `}`))
	if err != nil {
		t.Fatal(err)
	}
	upd, err := clerk.ParseUserEvent([]byte(`{"object":"event","type":"user.updated","timestamp":1733333333123,"data":` + data + `}`))
	if err != nil {
		t.Fatal(err)
	}
	if snap.Type != clerk.UserSnapshot || string(snap.User.Data) != data {
		t.Errorf("snapshot: type %q, data %s", snap.Type, snap.User.Data)
	}
	snap.Type = clerk.UserUpdated
	if diff := cmp.Diff(upd, snap); diff != "" {
		t.Errorf("snapshot vs update (-update +snapshot)\n%s", diff)
	}
}
