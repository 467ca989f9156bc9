package clerk_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/clerksync/clerksync/internal/clerk"
	"github.com/clerksync/clerksync/internal/event"
)

// reference reads a body the slow, obvious way: encoding/json into map[string]any (which keeps
// member names exactly, the last copy of a duplicate winning) and exact lookups. The fuzz targets
// below hold the one-pass parser to it.
type reference map[string]any

func decodeReference(body []byte) (reference, bool) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, false
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, false // trailing data
	}
	m, ok := v.(map[string]any)
	return m, ok
}

func refText(v any, present bool) (*string, bool) {
	if !present || v == nil {
		return nil, true
	}
	s, ok := v.(string)
	if !ok {
		return nil, false
	}
	s = strings.ReplaceAll(s, "\x00", "\uFFFD")
	return &s, true
}

func refMillis(v any, present bool) (*time.Time, bool) {
	if !present || v == nil {
		return nil, true
	}
	n, ok := v.(json.Number)
	if !ok {
		return nil, false
	}
	ms, err := strconv.ParseInt(string(n), 10, 64)
	if err != nil || ms < -62135596800000 || ms > 253402300799999 {
		return nil, false
	}
	t := time.UnixMilli(ms).UTC()
	return &t, true
}

// userEvent is the reference's reading of a user event; ok is false where it is malformed.
func (r reference) userEvent() (ev clerk.UserEvent, ok bool) {
	typ, isString := r["type"].(string)
	data, isObject := r["data"].(map[string]any)
	if !isString || !isObject {
		return ev, false
	}
	ev.Type = typ
	switch typ {
	case clerk.UserCreated, clerk.UserUpdated, clerk.UserSnapshot, clerk.UserDeleted:
	default:
		return ev, false
	}
	tsV, tsPresent := r["timestamp"]
	ts, ok := refMillis(tsV, tsPresent)
	if !ok {
		return ev, false
	}
	if ts != nil {
		ev.Timestamp = *ts
	}
	id, isString := data["id"].(string)
	if !isString || id == "" || strings.ContainsRune(id, 0) {
		return ev, false
	}
	ev.ClerkUserID = id
	if typ == clerk.UserDeleted {
		return ev, ts != nil
	}
	u := &clerk.User{ID: id}
	for name, dst := range map[string]**string{"username": &u.Username, "first_name": &u.FirstName, "last_name": &u.LastName, "image_url": &u.ImageURL} {
		v, present := data[name]
		if *dst, ok = refText(v, present); !ok {
			return ev, false
		}
	}
	v, present := data["updated_at"]
	updated, ok := refMillis(v, present)
	if !ok || updated == nil {
		return ev, false
	}
	u.UpdatedAt = *updated
	v, present = data["created_at"]
	if u.CreatedAt, ok = refMillis(v, present); !ok {
		return ev, false
	}
	v, present = data["primary_email_address_id"]
	primary, ok := refText(v, present)
	if !ok {
		return ev, false
	}
	if emails, present := data["email_addresses"]; present && emails != nil {
		list, isArray := emails.([]any)
		if !isArray {
			return ev, false
		}
		for _, e := range list {
			if e == nil {
				continue
			}
			entry, isObject := e.(map[string]any)
			if !isObject {
				return ev, false
			}
			eid, idPresent := entry["id"]
			address, addressPresent := entry["email_address"]
			idText, ok1 := refText(eid, idPresent)
			addressText, ok2 := refText(address, addressPresent)
			if !ok1 || !ok2 {
				return ev, false
			}
			if u.Email == nil && primary != nil && idText != nil && *idText == *primary {
				u.Email = addressText
				if u.Email == nil {
					u.Email = new(string)
				}
			}
		}
	}
	ev.User = u
	return ev, true
}

func FuzzParseUserEventMatchesReference(f *testing.F) {
	for _, name := range []string{"user.created.json", "user.updated.json", "user.deleted.json"} {
		f.Add(fixture(f, name))
	}
	for _, body := range referenceSeeds {
		f.Add([]byte(body))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		got, err := clerk.ParseUserEvent(body)
		if err != nil && !errors.Is(err, clerk.ErrMalformed) {
			t.Fatalf("error does not wrap ErrMalformed: %v", err)
		}
		ref, valid := decodeReference(body)
		var want clerk.UserEvent
		ok := false
		if valid {
			want, ok = ref.userEvent()
		}
		if ok != (err == nil) {
			t.Fatalf("ParseUserEvent error %v; the reference says ok=%v (valid JSON object: %v)", err, ok, valid)
		}
		if !ok {
			return
		}
		data := got.User
		if data != nil {
			if !json.Valid(data.Data) {
				t.Fatalf("Data is not valid JSON: %q", data.Data)
			}
			// The reference's reading of Data itself: the same object, bar what StorableJSON replaces.
			data.Data = nil
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("(-reference +ParseUserEvent)\n%s", diff)
		}
	})
}

func FuzzParseEnvelopeMatchesReference(f *testing.F) {
	for _, name := range []string{"user.created.json", "user.updated.json", "user.deleted.json"} {
		f.Add(fixture(f, name))
	}
	for _, body := range referenceSeeds {
		f.Add([]byte(body))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		got, err := clerk.ParseEnvelope(body)
		ref, valid := decodeReference(body)
		typ, isString := ref["type"].(string)
		data, isObject := ref["data"].(map[string]any)
		var want clerk.Envelope
		var wantErr error
		switch {
		case !valid || !isString || !isObject:
			wantErr = clerk.ErrMalformed
		case !event.ValidType(typ):
			wantErr = clerk.ErrInvalidType
		default:
			want.Type = typ
			want.DataID, _ = data["id"].(string)
			if want.DataID == "" && strings.HasPrefix(typ, "user.") {
				want, wantErr = clerk.Envelope{}, clerk.ErrMalformed
			}
		}
		if !errors.Is(err, wantErr) || (err == nil) != (wantErr == nil) {
			t.Fatalf("ParseEnvelope error %v, the reference's %v", err, wantErr)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("(-reference +ParseEnvelope)\n%s", diff)
		}
	})
}

// referenceSeeds are the shapes where a one-pass parser and encoding/json part ways most easily.
var referenceSeeds = []string{
	`{"type":"user.created","timestamp":1,"data":{"id":"u","updated_at":2}}`,
	`{"Type":"user.created","timestamp":1,"data":{"id":"u","updated_at":2}}`,
	`{"type":"user.created","timestamp":1,"data":{"ID":"u","id":"v","updated_at":2}}`,
	`{"type":"user.created","type":"user.updated","timestamp":1,"data":{"id":"u","updated_at":2}}`,
	`{"type":"user.created","timestamp":1,"data":{"id":"u","updated_at":2,"first_name":"a\u0000b"}}`,
	`{"type":"user.created","timestamp":1,"data":{"id":"u","updated_at":2,"first_name":"\ud800\u0041"}}`,
	`{"type":"user.created","timestamp":1,"data":{"id":"u\u0000","updated_at":2}}`,
	`{"type":"user.created","timestamp":1,"data":{"id":"u","updated_at":2,"last_name":"\xff\xfe"}}`,
	`{"type":"user.created","timestamp":1,"data":{"id":"u","updated_at":2e3}}`,
	`{"type":"user.created","timestamp":1,"data":{"id":"u","updated_at":-0}}`,
	`{"type":"user.created","timestamp":1,"data":{"id":"u","updated_at":2,"email_addresses":[null,{"id":"e","email_address":null}],"primary_email_address_id":"e"}}`,
	`{"type":"user.created","timestamp":1,"data":{"id":"u","updated_at":2,"email_addresses":{}}}`,
	`{"type":"user.deleted","timestamp":1,"data":{"id":"u","deleted":true}}`,
	`{"type":"user.snapshot","timestamp":1,"data":{"id":"u","updated_at":2}}`,
	`{"type":"user.deleted","timestamp":null,"data":{"id":"u"}}`,
	` {"type":"a.b","data":{}} `,
	`{"type":"a.b","data":{}}x`,
	`{"type":"a.b","data":{}}{}`,
	`{"type":"us\u0065r.created","data":{"id":"\u0075"}}`,
}

func TestParseUserEventMatchesReferenceOnSeeds(t *testing.T) {
	t.Parallel()
	for _, body := range referenceSeeds {
		ref, valid := decodeReference([]byte(body))
		want, ok := ref.userEvent()
		got, err := clerk.ParseUserEvent([]byte(body))
		if ok != (err == nil) || !valid && err == nil {
			t.Errorf("%s: error %v, reference ok=%v", body, err, ok)
			continue
		}
		if ok {
			got.User = nilData(got.User)
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("%s: (-reference +got)\n%s", body, diff)
			}
		}
	}
}

func nilData(u *clerk.User) *clerk.User {
	if u != nil {
		u.Data = nil
	}
	return u
}
