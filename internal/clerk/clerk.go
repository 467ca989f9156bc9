// Package clerk defines the Clerk webhook payloads clerksync relies on and parses them. It is pure:
// no I/O, no clock, no logging, so it can be fuzzed and shared by ingest (which only checks the
// envelope) and the worker (which folds user events). It must not decide what to do with an event.
//
// Payloads are read in one pass (gjson) and member names are matched exactly, as JSON defines
// them: encoding/json would take "Type" or "ID" for "type" and "id". Strings with escapes are
// unquoted by encoding/json, so their meaning is the standard library's to the byte.
package clerk

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/tidwall/gjson"

	"github.com/clerksync/clerksync/internal/event"
)

// Event types the worker folds into users. UserSnapshot is not Clerk's: clerksync appends it
// with what it read from the Backend API, and it folds exactly like UserUpdated.
const (
	UserCreated  = "user.created"
	UserUpdated  = "user.updated"
	UserDeleted  = "user.deleted"
	UserSnapshot = "user.snapshot"
)

// ErrMalformed means a payload is not the JSON shape Clerk sends. ErrInvalidType (from package
// event) means the shape is right but the type is not a well-formed event type.
var (
	ErrMalformed   = errors.New("malformed payload")
	ErrInvalidType = event.ErrInvalidType
)

// Envelope is what ingest checks of every webhook: a JSON object with a string type and an
// object data, and for user.* events a string data.id.
type Envelope struct {
	Type string
	// DataID is data.id when it is a string, else "".
	DataID string
}

// envelope is a body's top-level members that clerksync reads.
type envelope struct {
	typ       string
	timestamp gjson.Result
	data      gjson.Result
}

// ParseEnvelope checks body's envelope. Errors wrap ErrMalformed or ErrInvalidType.
func ParseEnvelope(body []byte) (Envelope, error) {
	raw, err := parseRaw(body)
	if err != nil {
		return Envelope{}, err
	}
	env := Envelope{Type: raw.typ}
	if !event.ValidType(env.Type) {
		return Envelope{}, fmt.Errorf("%w: %q", ErrInvalidType, truncate(env.Type))
	}
	if id := member(raw.data, "id"); id.Type == gjson.String {
		if env.DataID, err = unquote(id); err != nil {
			return Envelope{}, err
		}
	}
	if env.DataID == "" && strings.HasPrefix(env.Type, "user.") {
		return Envelope{}, fmt.Errorf("%w: data.id must be a non-empty string for %s events", ErrMalformed, env.Type)
	}
	return env, nil
}

// parseRaw validates body and reads its envelope: a JSON object with a string type and an object
// data. A member given twice counts as its last copy, as in encoding/json and jsonb.
func parseRaw(body []byte) (envelope, error) {
	var env envelope
	if !gjson.ValidBytes(body) {
		return env, fmt.Errorf("%w: not a JSON object", ErrMalformed)
	}
	root := gjson.ParseBytes(body)
	if !root.IsObject() {
		return env, fmt.Errorf("%w: not a JSON object", ErrMalformed)
	}
	var typ gjson.Result
	root.ForEach(func(k, v gjson.Result) bool {
		switch k.Str {
		case "type":
			typ = v
		case "timestamp":
			env.timestamp = v
		case "data":
			env.data = v
		}
		return true
	})
	if typ.Type != gjson.String {
		return env, fmt.Errorf("%w: type must be a string", ErrMalformed)
	}
	var err error
	if env.typ, err = unquote(typ); err != nil {
		return env, err
	}
	if !env.data.IsObject() {
		return env, fmt.Errorf("%w: data must be an object", ErrMalformed)
	}
	return env, nil
}

// member returns the member name of obj (an object), its last copy when there are several, or
// a Result that does not exist.
func member(obj gjson.Result, name string) gjson.Result {
	var found gjson.Result
	obj.ForEach(func(k, v gjson.Result) bool {
		if k.Str == name {
			found = v
		}
		return true
	})
	return found
}

// unquote returns the string v holds (v.Type is gjson.String). A string with no escape and valid
// UTF-8 is its raw bytes; any other goes through encoding/json, so that escapes, surrogates and
// invalid bytes mean exactly what they mean to the standard library.
func unquote(v gjson.Result) (string, error) {
	raw := v.Raw
	if len(raw) >= 2 && strings.IndexByte(raw, '\\') < 0 && utf8.ValidString(raw) {
		return raw[1 : len(raw)-1], nil
	}
	var s string
	if err := json.Unmarshal([]byte(raw), &s); err != nil {
		return "", fmt.Errorf("%w: bad string: %w", ErrMalformed, err)
	}
	return s, nil
}

// UserEvent is a user.created, user.updated, user.snapshot or user.deleted event, parsed for the
// worker.
type UserEvent struct {
	Type        string
	ClerkUserID string
	// Timestamp is the envelope's timestamp: for a delete, the tombstone's deleted_at.
	Timestamp time.Time
	// User is the user as of the event; nil for user.deleted.
	User *User
}

// User is the part of Clerk's user object that clerksync projects. Its strings are storable in
// Postgres text: a NUL (which text cannot hold) reads as U+FFFD.
type User struct {
	ID        string
	Email     *string // the primary email address, nil when there is none
	Username  *string
	FirstName *string
	LastName  *string
	ImageURL  *string
	CreatedAt *time.Time
	UpdatedAt time.Time
	// Data is the user object as Clerk sent it, byte for byte but for what jsonb cannot hold
	// (see StorableJSON).
	Data json.RawMessage
}

// ParseUserEvent parses a user event for the worker. Any error wraps ErrMalformed: such an event
// can never apply.
func ParseUserEvent(body []byte) (UserEvent, error) {
	raw, err := parseRaw(body)
	if err != nil {
		return UserEvent{}, err
	}
	ev := UserEvent{Type: raw.typ}
	switch ev.Type {
	case UserCreated, UserUpdated, UserSnapshot, UserDeleted:
	default:
		return UserEvent{}, fmt.Errorf("%w: %q is not a user event clerksync applies", ErrMalformed, truncate(ev.Type))
	}
	ts, ok, err := millis(raw.timestamp)
	if err != nil {
		return UserEvent{}, fmt.Errorf("%w: timestamp: %w", ErrMalformed, err)
	}
	if ok {
		ev.Timestamp = ts
	}
	if ev.Type == UserDeleted {
		if ev.ClerkUserID, err = userID(member(raw.data, "id")); err != nil {
			return UserEvent{}, err
		}
		if !ok {
			return UserEvent{}, fmt.Errorf("%w: user.deleted needs the envelope timestamp", ErrMalformed)
		}
		return ev, nil
	}
	u, err := parseUser(raw.data)
	if err != nil {
		return UserEvent{}, err
	}
	ev.ClerkUserID, ev.User = u.ID, u
	return ev, nil
}

// userID reads data.id: a non-empty string of valid UTF-8 without NUL, since it is the user's key.
func userID(v gjson.Result) (string, error) {
	if v.Type != gjson.String {
		return "", fmt.Errorf("%w: data.id must be a non-empty string", ErrMalformed)
	}
	id, err := unquote(v)
	switch {
	case err != nil:
		return "", err
	case id == "":
		return "", fmt.Errorf("%w: data.id must be a non-empty string", ErrMalformed)
	case strings.IndexByte(id, 0) >= 0 || !utf8.ValidString(id):
		return "", fmt.Errorf("%w: data.id holds a NUL or bytes that are not UTF-8", ErrMalformed)
	}
	return id, nil
}

// parseUser reads the fields the fold needs from data, one pass over its members.
func parseUser(data gjson.Result) (*User, error) {
	var id, emails, primary, createdAt, updatedAt gjson.Result
	u := &User{}
	var err error
	text := func(v gjson.Result, dst **string, name string) {
		if err == nil {
			if *dst, err = optionalText(v); err != nil {
				err = fmt.Errorf("%w: data.%s must be a string or null", ErrMalformed, name)
			}
		}
	}
	data.ForEach(func(k, v gjson.Result) bool {
		switch k.Str {
		case "id":
			id = v
		case "email_addresses":
			emails = v
		case "primary_email_address_id":
			primary = v
		case "username":
			text(v, &u.Username, "username")
		case "first_name":
			text(v, &u.FirstName, "first_name")
		case "last_name":
			text(v, &u.LastName, "last_name")
		case "image_url":
			text(v, &u.ImageURL, "image_url")
		case "created_at":
			createdAt = v
		case "updated_at":
			updatedAt = v
		}
		return true
	})
	if err != nil {
		return nil, err
	}
	if u.ID, err = userID(id); err != nil {
		return nil, err
	}
	updated, ok, err := millis(updatedAt)
	if err != nil || !ok {
		return nil, fmt.Errorf("%w: data.updated_at must be milliseconds since the epoch", ErrMalformed)
	}
	u.UpdatedAt = updated
	if created, ok, err := millis(createdAt); err != nil {
		return nil, fmt.Errorf("%w: data.created_at must be milliseconds since the epoch", ErrMalformed)
	} else if ok {
		u.CreatedAt = &created
	}
	if u.Email, err = primaryEmail(emails, primary); err != nil {
		return nil, err
	}
	u.Data = StorableJSON([]byte(data.Raw))
	return u, nil
}

// primaryEmail returns the email_address of the entry of emails whose id is primary.
func primaryEmail(emails, primary gjson.Result) (*string, error) {
	primaryID, err := optionalText(primary)
	if err != nil {
		return nil, fmt.Errorf("%w: data.primary_email_address_id must be a string or null", ErrMalformed)
	}
	if emails.Exists() && emails.Type != gjson.Null && !emails.IsArray() {
		return nil, fmt.Errorf("%w: data.email_addresses must be an array", ErrMalformed)
	}
	var email *string
	emails.ForEach(func(_, e gjson.Result) bool {
		if e.Type == gjson.Null {
			return true
		}
		if !e.IsObject() {
			err = fmt.Errorf("%w: data.email_addresses must hold objects", ErrMalformed)
			return false
		}
		var id, address gjson.Result
		e.ForEach(func(k, v gjson.Result) bool {
			switch k.Str {
			case "id":
				id = v
			case "email_address":
				address = v
			}
			return true
		})
		idText, idErr := optionalText(id)
		addressText, addressErr := optionalText(address)
		if idErr != nil || addressErr != nil {
			err = fmt.Errorf("%w: an email address's id and email_address must be strings", ErrMalformed)
			return false
		}
		if email == nil && primaryID != nil && idText != nil && *idText == *primaryID {
			email = addressText
			if email == nil {
				email = new(string) // encoding/json's reading of a null email_address: ""
			}
		}
		return true
	})
	if err != nil {
		return nil, err
	}
	return email, nil
}

// optionalText reads a string or null (nil) member, storable in Postgres text: a NUL becomes
// U+FFFD.
func optionalText(v gjson.Result) (*string, error) {
	switch v.Type {
	case gjson.Null:
		return nil, nil
	case gjson.String:
		s, err := unquote(v)
		if err != nil {
			return nil, err
		}
		if strings.IndexByte(s, 0) >= 0 {
			s = strings.ReplaceAll(s, "\x00", "\uFFFD")
		}
		return &s, nil
	}
	return nil, fmt.Errorf("%w: not a string", ErrMalformed)
}

// maxMillis bounds times to years 0–9999, which Postgres and RFC 3339 both represent.
const maxMillis = 253402300799999

// millis parses a JSON integer of milliseconds since the epoch; ok is false for absent or null.
func millis(v gjson.Result) (t time.Time, ok bool, err error) {
	switch v.Type {
	case gjson.Null:
		return time.Time{}, false, nil
	case gjson.Number:
	default:
		return time.Time{}, false, errors.New("not an integer")
	}
	ms, err := strconv.ParseInt(v.Raw, 10, 64)
	if err != nil {
		return time.Time{}, false, errors.New("not an integer")
	}
	if ms < -62135596800000 || ms > maxMillis {
		return time.Time{}, false, errors.New("out of range")
	}
	return time.UnixMilli(ms).UTC(), true, nil
}

// StorableJSON returns data (valid JSON) with what Postgres's jsonb cannot hold replaced by
// U+FFFD, written as the escape \ufffd: the escape \u0000 (jsonb has no NUL), an escaped lone
// surrogate, and bytes that are not UTF-8. It is the one change clerksync makes to the Clerk
// JSON it stores; everything else stays byte for byte, and the stream keeps the original. In the
// common case there is nothing to replace and data itself is returned.
func StorableJSON(data []byte) []byte {
	if !bytes.Contains(data, []byte(`\u`)) && utf8.Valid(data) {
		return data
	}
	const replacement = `\ufffd`
	var out []byte           // nil until the first replacement
	replace := func(i int) { // the escape or byte at data[i]
		if out == nil {
			out = append(make([]byte, 0, len(data)+16), data[:i]...)
		}
		out = append(out, replacement...)
	}
	keep := func(b []byte) {
		if out != nil {
			out = append(out, b...)
		}
	}
	for i := 0; i < len(data); {
		c := data[i]
		switch {
		case c == '\\' && i+1 < len(data) && data[i+1] == 'u':
			r, ok := hex4(data[i+2:])
			switch {
			case !ok:
				keep(data[i : i+2]) // not valid JSON; left for Postgres to refuse
				i += 2
			case r == 0, 0xDC00 <= r && r <= 0xDFFF:
				replace(i)
				i += 6
			case 0xD800 <= r && r <= 0xDBFF:
				if len(data) >= i+12 && data[i+6] == '\\' && data[i+7] == 'u' {
					if lo, ok := hex4(data[i+8:]); ok && 0xDC00 <= lo && lo <= 0xDFFF {
						keep(data[i : i+12])
						i += 12
						continue
					}
				}
				replace(i)
				i += 6
			default:
				keep(data[i : i+6])
				i += 6
			}
		case c == '\\' && i+1 < len(data):
			keep(data[i : i+2])
			i += 2
		case c < utf8.RuneSelf:
			keep(data[i : i+1])
			i++
		default:
			r, size := utf8.DecodeRune(data[i:])
			if r == utf8.RuneError && size == 1 {
				replace(i)
			} else {
				keep(data[i : i+size])
			}
			i += size
		}
	}
	if out == nil {
		return data
	}
	return out
}

// hex4 reads the four hex digits of a \u escape.
func hex4(b []byte) (rune, bool) {
	if len(b) < 4 {
		return 0, false
	}
	var r rune
	for _, c := range b[:4] {
		switch {
		case '0' <= c && c <= '9':
			r = r<<4 | rune(c-'0')
		case 'a' <= c && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		case 'A' <= c && c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			return 0, false
		}
	}
	return r, true
}

func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
