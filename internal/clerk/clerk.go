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

type rawEnvelope struct {
	Type      *string         `json:"type"`
	Data      json.RawMessage `json:"data"`
	Timestamp json.RawMessage `json:"timestamp"`
}

type rawID struct {
	ID json.RawMessage `json:"id"`
}

// ParseEnvelope checks body's envelope. Errors wrap ErrMalformed or ErrInvalidType.
func ParseEnvelope(body []byte) (Envelope, error) {
	raw, err := parseRaw(body)
	if err != nil {
		return Envelope{}, err
	}
	env := Envelope{Type: *raw.Type}
	if !event.ValidType(env.Type) {
		return Envelope{}, fmt.Errorf("%w: %q", ErrInvalidType, truncate(env.Type))
	}
	env.DataID, err = dataID(raw.Data)
	if err != nil {
		return Envelope{}, err
	}
	if env.DataID == "" && strings.HasPrefix(env.Type, "user.") {
		return Envelope{}, fmt.Errorf("%w: data.id must be a non-empty string for %s events", ErrMalformed, env.Type)
	}
	return env, nil
}

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
