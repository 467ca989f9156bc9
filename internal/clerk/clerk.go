// Package clerk defines the Clerk webhook payloads clerksync relies on and parses them. It is pure:
// no I/O, no clock, no logging, so it can be fuzzed and shared by ingest (which only checks the
// envelope) and the worker (which folds user events). It must not decide what to do with an event.
package clerk

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/clerksync/clerksync/internal/event"
)

// Event types the worker folds into users.
const (
	UserCreated = "user.created"
	UserUpdated = "user.updated"
	UserDeleted = "user.deleted"
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

// ParseEnvelope checks body's envelope. Errors wrap ErrMalformed or ErrInvalidType.
//
// It accepts and refuses exactly what decoding body with encoding/json into a struct with a
// *string type and a json.RawMessage data (then data into a json.RawMessage id) would: any JSON
// syntax error, anywhere, is ErrMalformed; keys match case-insensitively; of a repeated key the
// last wins; and a type that is null is absent, but one of another kind is ErrMalformed even when
// a later string replaces it. It does so in one pass over body, where encoding/json took four
// (validate and decode the body, then validate and decode data): ingest runs it on every webhook.
func ParseEnvelope(body []byte) (Envelope, error) {
	var f envelopeFields
	s := scanner{b: body}
	switch ok := s.envelope(&f); {
	case !ok && f.typOtherKind:
		return Envelope{}, fmt.Errorf("%w: type must be a string", ErrMalformed)
	case !ok:
		return Envelope{}, fmt.Errorf("%w: not a JSON object", ErrMalformed)
	case f.typ == nil:
		return Envelope{}, fmt.Errorf("%w: type must be a string", ErrMalformed)
	case !f.dataObject:
		return Envelope{}, fmt.Errorf("%w: data must be an object", ErrMalformed)
	}
	env := Envelope{Type: unquote(f.typ, f.typEscaped)}
	if !event.ValidType(env.Type) {
		return Envelope{}, fmt.Errorf("%w: %q", ErrInvalidType, truncate(env.Type))
	}
	if f.id != nil {
		env.DataID = unquote(f.id, f.idEscaped)
	}
	if env.DataID == "" && strings.HasPrefix(env.Type, "user.") {
		return Envelope{}, fmt.Errorf("%w: data.id must be a non-empty string for %s events", ErrMalformed, env.Type)
	}
	return env, nil
}

// envelopeFields are what ParseEnvelope keeps of a body: the last type and data, and the last id
// of that data. String values are the bytes between their quotes, still escaped when *Escaped.
type envelopeFields struct {
	typ          []byte // nil when absent or null
	typEscaped   bool
	typOtherKind bool   // a type neither string nor null: the scan stops there
	dataObject   bool   // the last data is an object
	id           []byte // nil when that object has no id or its last id is not a string
	idEscaped    bool
}

// maxDepth is encoding/json's bound on nested arrays and objects; one more is a syntax error.
const maxDepth = 10000

// scanner is a JSON validator with the grammar of encoding/json's (which accepts any byte of 0x80
// and above inside strings, valid UTF-8 or not). Each method reads one element at s.i and
// reports whether it was valid; after false, s.i is meaningless.
type scanner struct {
	b []byte
	i int
}

// envelope reads the whole body: an object, then only whitespace.
func (s *scanner) envelope(f *envelopeFields) bool {
	s.space()
	if !s.next('{') {
		return false
	}
	ok := s.members(1, func(key []byte, keyEscaped bool) bool {
		switch {
		case isKey(key, keyEscaped, "type"):
			f.typ = nil
			switch s.peek() {
			case '"':
				f.typ, f.typEscaped, _ = s.str()
				return f.typ != nil
			case 'n':
				return s.literal("null")
			}
			// encoding/json refuses to decode any other kind into a string.
			f.typOtherKind = true
			return false
		case isKey(key, keyEscaped, "data"):
			f.dataObject, f.id = false, nil
			if s.peek() != '{' {
				return s.value(1)
			}
			f.dataObject = true
			s.i++
			return s.members(2, func(key []byte, keyEscaped bool) bool {
				if !isKey(key, keyEscaped, "id") {
					return s.value(2)
				}
				f.id = nil
				if s.peek() != '"' {
					return s.value(2)
				}
				f.id, f.idEscaped, _ = s.str()
				return f.id != nil
			})
		}
		return s.value(1)
	})
	if !ok {
		return false
	}
	s.space()
	return s.i == len(s.b)
}

// members reads the rest of an object whose '{' is read, at depth (the number of arrays and
// objects open, this one included), calling member for each key with s.i at its value. member
// must read the value.
func (s *scanner) members(depth int, member func(key []byte, keyEscaped bool) bool) bool {
	if depth > maxDepth {
		return false
	}
	s.space()
	if s.peek() == '}' {
		s.i++
		return true
	}
	for {
		if s.peek() != '"' {
			return false
		}
		key, escaped, ok := s.str()
		if !ok {
			return false
		}
		s.space()
		if !s.next(':') {
			return false
		}
		s.space()
		if !member(key, escaped) {
			return false
		}
		s.space()
		switch s.peek() {
		case ',':
			s.i++
			s.space()
		case '}':
			s.i++
			return true
		default:
			return false
		}
	}
}

// value reads any JSON value inside a container at depth.
func (s *scanner) value(depth int) bool {
	switch s.peek() {
	case '"':
		_, _, ok := s.str()
		return ok
	case '{':
		s.i++
		return s.members(depth+1, func([]byte, bool) bool { return s.value(depth + 1) })
	case '[':
		s.i++
		return s.elements(depth + 1)
	case 't':
		return s.literal("true")
	case 'f':
		return s.literal("false")
	case 'n':
		return s.literal("null")
	}
	return s.number()
}

// elements reads the rest of an array whose '[' is read, at depth.
func (s *scanner) elements(depth int) bool {
	if depth > maxDepth {
		return false
	}
	s.space()
	if s.peek() == ']' {
		s.i++
		return true
	}
	for {
		if !s.value(depth) {
			return false
		}
		s.space()
		switch s.peek() {
		case ',':
			s.i++
			s.space()
		case ']':
			s.i++
			return true
		default:
			return false
		}
	}
}

// str reads a string and returns the bytes between its quotes (non-nil when ok), and whether
// they hold an escape.
func (s *scanner) str() (contents []byte, escaped, ok bool) {
	b := s.b
	start := s.i + 1
	for i := start; i < len(b); {
		switch c := b[i]; {
		case c == '"':
			s.i = i + 1
			return b[start:i:i], escaped, true
		case c == '\\':
			escaped = true
			if i+1 == len(b) {
				return nil, false, false
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(b) || !isHex(b[i+2]) || !isHex(b[i+3]) || !isHex(b[i+4]) || !isHex(b[i+5]) {
					return nil, false, false
				}
				i += 6
			default:
				return nil, false, false
			}
		case c < 0x20:
			return nil, false, false
		default:
			i++
		}
	}
	return nil, false, false
}

// number reads -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?; what follows is the caller's to check.
func (s *scanner) number() bool {
	b, i := s.b, s.i
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i == len(b):
		return false
	case b[i] == '0':
		i++
	case '1' <= b[i] && b[i] <= '9':
		i = digits(b, i+1)
	default:
		return false
	}
	if i < len(b) && b[i] == '.' {
		if i++; i == len(b) || !isDigit(b[i]) {
			return false
		}
		i = digits(b, i)
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		if i++; i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if i == len(b) || !isDigit(b[i]) {
			return false
		}
		i = digits(b, i)
	}
	s.i = i
	return true
}

func (s *scanner) literal(lit string) bool {
	if len(s.b)-s.i < len(lit) || string(s.b[s.i:s.i+len(lit)]) != lit {
		return false
	}
	s.i += len(lit)
	return true
}

// space skips JSON whitespace.
func (s *scanner) space() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// peek returns the byte at s.i, or 0 at the end (0 starts no JSON token).
func (s *scanner) peek() byte {
	if s.i < len(s.b) {
		return s.b[s.i]
	}
	return 0
}

// next reads c, if it is next.
func (s *scanner) next(c byte) bool {
	if s.peek() != c {
		return false
	}
	s.i++
	return true
}

func digits(b []byte, i int) int {
	for i < len(b) && isDigit(b[i]) {
		i++
	}
	return i
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// isKey reports whether a key (the bytes between its quotes) names the field name (lower-case
// ASCII) for encoding/json: equal once unescaped, ignoring case.
func isKey(key []byte, escaped bool, name string) bool {
	if !escaped {
		// Only ASCII folds into the letters of our field names (unlike k and s, which have
		// non-ASCII partners), so a byte-wise ASCII comparison is exact.
		if len(key) != len(name) {
			return false
		}
		for i := range len(key) {
			if key[i]|0x20 != name[i] {
				return false
			}
		}
		return true
	}
	return strings.EqualFold(unquote(key, true), name)
}

// unquote returns a string's value from the bytes between its quotes, as encoding/json decodes it
// (invalid UTF-8 and lone surrogates become U+FFFD).
func unquote(contents []byte, escaped bool) string {
	if !escaped && utf8.Valid(contents) {
		return string(contents)
	}
	var v string
	quoted := make([]byte, 0, len(contents)+2)
	quoted = append(append(append(quoted, '"'), contents...), '"')
	if err := json.Unmarshal(quoted, &v); err != nil {
		// The scanner let through a string encoding/json refuses: a bug of ours, not the sender's.
		panic(fmt.Sprintf("clerk: unquoting a scanned string: %v", err))
	}
	return v
}

// parseRaw decodes the envelope for ParseUserEvent.
func parseRaw(body []byte) (rawEnvelope, error) {
	var raw rawEnvelope
	if err := json.Unmarshal(body, &raw); err != nil {
		return raw, fmt.Errorf("%w: not a JSON object", ErrMalformed)
	}
	if raw.Type == nil {
		return raw, fmt.Errorf("%w: type must be a string", ErrMalformed)
	}
	if len(raw.Data) == 0 || raw.Data[0] != '{' {
		return raw, fmt.Errorf("%w: data must be an object", ErrMalformed)
	}
	return raw, nil
}

type rawEnvelope struct {
	Type      *string         `json:"type"`
	Data      json.RawMessage `json:"data"`
	Timestamp json.RawMessage `json:"timestamp"`
}

type rawID struct {
	ID json.RawMessage `json:"id"`
}

// dataID returns data.id when it is a string, "" when absent or of another type.
func dataID(data json.RawMessage) (string, error) {
	var d rawID
	if err := json.Unmarshal(data, &d); err != nil {
		return "", fmt.Errorf("%w: data must be an object", ErrMalformed)
	}
	var id string
	if len(d.ID) == 0 || d.ID[0] != '"' || json.Unmarshal(d.ID, &id) != nil {
		return "", nil
	}
	return id, nil
}

// UserEvent is a user.created, user.updated or user.deleted event, parsed for the worker.
type UserEvent struct {
	Type        string
	ClerkUserID string
	// Timestamp is the envelope's timestamp: for a delete, the tombstone's deleted_at.
	Timestamp time.Time
	// User is the user as of the event; nil for user.deleted.
	User *User
}

// User is the part of Clerk's user object that clerksync projects.
type User struct {
	ID        string
	Email     *string // the primary email address, nil when there is none
	Username  *string
	FirstName *string
	LastName  *string
	ImageURL  *string
	CreatedAt *time.Time
	UpdatedAt time.Time
	// Data is the user object exactly as Clerk sent it.
	Data json.RawMessage
}

type rawUser struct {
	ID                    *string         `json:"id"`
	EmailAddresses        []rawEmail      `json:"email_addresses"`
	PrimaryEmailAddressID *string         `json:"primary_email_address_id"`
	Username              *string         `json:"username"`
	FirstName             *string         `json:"first_name"`
	LastName              *string         `json:"last_name"`
	ImageURL              *string         `json:"image_url"`
	CreatedAt             json.RawMessage `json:"created_at"`
	UpdatedAt             json.RawMessage `json:"updated_at"`
}

type rawEmail struct {
	ID           string `json:"id"`
	EmailAddress string `json:"email_address"`
}

// ParseUserEvent parses a user event for the worker. Any error wraps ErrMalformed: such an event
// can never apply.
func ParseUserEvent(body []byte) (UserEvent, error) {
	raw, err := parseRaw(body)
	if err != nil {
		return UserEvent{}, err
	}
	ev := UserEvent{Type: *raw.Type}
	switch ev.Type {
	case UserCreated, UserUpdated, UserDeleted:
	default:
		return UserEvent{}, fmt.Errorf("%w: %q is not a user event clerksync applies", ErrMalformed, truncate(ev.Type))
	}
	ts, ok, err := millis(raw.Timestamp)
	if err != nil {
		return UserEvent{}, fmt.Errorf("%w: timestamp: %w", ErrMalformed, err)
	}
	if ok {
		ev.Timestamp = ts
	}
	if ev.Type == UserDeleted {
		if ev.ClerkUserID, err = dataID(raw.Data); err != nil {
			return UserEvent{}, err
		}
		if ev.ClerkUserID == "" {
			return UserEvent{}, fmt.Errorf("%w: data.id must be a non-empty string", ErrMalformed)
		}
		if !ok {
			return UserEvent{}, fmt.Errorf("%w: user.deleted needs the envelope timestamp", ErrMalformed)
		}
		return ev, nil
	}
	u, err := parseUser(raw.Data)
	if err != nil {
		return UserEvent{}, err
	}
	ev.ClerkUserID, ev.User = u.ID, u
	return ev, nil
}

func parseUser(data json.RawMessage) (*User, error) {
	var r rawUser
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("%w: data is not a Clerk user: %w", ErrMalformed, err)
	}
	if r.ID == nil || *r.ID == "" {
		return nil, fmt.Errorf("%w: data.id must be a non-empty string", ErrMalformed)
	}
	updated, ok, err := millis(r.UpdatedAt)
	if err != nil || !ok {
		return nil, fmt.Errorf("%w: data.updated_at must be milliseconds since the epoch", ErrMalformed)
	}
	u := &User{
		ID:        *r.ID,
		Username:  r.Username,
		FirstName: r.FirstName,
		LastName:  r.LastName,
		ImageURL:  r.ImageURL,
		UpdatedAt: updated,
		Data:      data,
	}
	if created, ok, err := millis(r.CreatedAt); err != nil {
		return nil, fmt.Errorf("%w: data.created_at must be milliseconds since the epoch", ErrMalformed)
	} else if ok {
		u.CreatedAt = &created
	}
	if r.PrimaryEmailAddressID != nil {
		for _, e := range r.EmailAddresses {
			if e.ID == *r.PrimaryEmailAddressID {
				u.Email = &e.EmailAddress
				break
			}
		}
	}
	return u, nil
}

// maxMillis bounds times to years 0–9999, which Postgres and RFC 3339 both represent.
const maxMillis = 253402300799999

// millis parses a JSON integer of milliseconds since the epoch; ok is false for absent or null.
func millis(raw json.RawMessage) (t time.Time, ok bool, err error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return time.Time{}, false, nil
	}
	var ms int64
	if err := json.Unmarshal(raw, &ms); err != nil {
		return time.Time{}, false, errors.New("not an integer")
	}
	if ms < -62135596800000 || ms > maxMillis {
		return time.Time{}, false, errors.New("out of range")
	}
	return time.UnixMilli(ms).UTC(), true, nil
}

func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
