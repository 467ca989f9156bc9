package clerk

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/tidwall/gjson"
)

// Event types the worker folds into organizations and organization_memberships. The snapshots are
// clerksync's own (what reconcile read from the Backend API); they fold like the updates.
const (
	OrganizationCreated  = "organization.created"
	OrganizationUpdated  = "organization.updated"
	OrganizationDeleted  = "organization.deleted"
	OrganizationSnapshot = "organization.snapshot"

	MembershipCreated  = "organizationMembership.created"
	MembershipUpdated  = "organizationMembership.updated"
	MembershipDeleted  = "organizationMembership.deleted"
	MembershipSnapshot = "organizationMembership.snapshot"
)

// OrganizationEvent is an organization.created, .updated, .snapshot or .deleted event, parsed for
// the worker.
type OrganizationEvent struct {
	Type       string
	ClerkOrgID string
	// Timestamp is the envelope's timestamp: for a delete, the tombstone's deleted_at.
	Timestamp time.Time
	// Organization is the organization as of the event; nil for organization.deleted (its data is
	// a DeletedObject: {"object":"organization","id":…,"deleted":true}).
	Organization *Organization
}

// Organization is the part of Clerk's organization object that clerksync projects.
type Organization struct {
	ID        string
	Name      *string
	Slug      *string
	ImageURL  *string
	CreatedAt *time.Time
	UpdatedAt time.Time
	// Data is the organization object as Clerk sent it (see StorableJSON).
	Data json.RawMessage
}

// MembershipEvent is an organizationMembership.created, .updated, .snapshot or .deleted event,
// parsed for the worker. Every one carries the whole membership, a delete included.
type MembershipEvent struct {
	Type string
	// Timestamp is the envelope's timestamp: for a delete, the tombstone's deleted_at (a deleted
	// membership's updated_at is not when it was deleted).
	Timestamp  time.Time
	Membership *Membership
}

// Membership is the part of Clerk's organization membership object that clerksync projects.
type Membership struct {
	ID string
	// OrgID is organization.id, UserID public_user_data.user_id; both "" in a synthetic delete
	// (reconcile --prune), which carries only the membership's id.
	OrgID  string
	UserID string
	// Role is role as Clerk sends it (org:admin, org:member, or the older admin, basic_member).
	Role      *string
	CreatedAt *time.Time
	// UpdatedAt is zero only in a delete, which needs none.
	UpdatedAt time.Time
	// Data is the membership object as Clerk sent it (see StorableJSON).
	Data json.RawMessage
}

// ParseOrganizationEvent parses an organization event for the worker. Any error wraps
// ErrMalformed: such an event can never apply.
func ParseOrganizationEvent(body []byte) (OrganizationEvent, error) {
	raw, err := parseRaw(body)
	if err != nil {
		return OrganizationEvent{}, err
	}
	ev := OrganizationEvent{Type: raw.typ}
	switch ev.Type {
	case OrganizationCreated, OrganizationUpdated, OrganizationSnapshot, OrganizationDeleted:
	default:
		return OrganizationEvent{}, fmt.Errorf("%w: %q is not an organization event clerksync applies", ErrMalformed, truncate(ev.Type))
	}
	ts, ok, err := envelopeTime(raw.timestamp)
	if err != nil {
		return OrganizationEvent{}, fmt.Errorf("%w: timestamp: %w", ErrMalformed, err)
	}
	ev.Timestamp = ts
	if ev.Type == OrganizationDeleted {
		if ev.ClerkOrgID, err = objectID(member(raw.data, "id"), "data.id"); err != nil {
			return OrganizationEvent{}, err
		}
		if !ok {
			return OrganizationEvent{}, fmt.Errorf("%w: organization.deleted needs the envelope timestamp", ErrMalformed)
		}
		return ev, nil
	}
	var id, createdAt, updatedAt gjson.Result
	o := &Organization{}
	fields := textFields{}
	raw.data.ForEach(func(k, v gjson.Result) bool {
		switch k.Str {
		case "id":
			id = v
		case "name":
			fields.read(v, &o.Name, "name")
		case "slug":
			fields.read(v, &o.Slug, "slug")
		case "image_url":
			fields.read(v, &o.ImageURL, "image_url")
		case "created_at":
			createdAt = v
		case "updated_at":
			updatedAt = v
		}
		return true
	})
	if fields.err != nil {
		return OrganizationEvent{}, fields.err
	}
	if o.ID, err = objectID(id, "data.id"); err != nil {
		return OrganizationEvent{}, err
	}
	if o.CreatedAt, o.UpdatedAt, err = versionTimes(createdAt, updatedAt, true); err != nil {
		return OrganizationEvent{}, err
	}
	o.Data = StorableJSON([]byte(raw.data.Raw))
	ev.ClerkOrgID, ev.Organization = o.ID, o
	return ev, nil
}

// ParseMembershipEvent parses an organization membership event for the worker. Any error wraps
// ErrMalformed: such an event can never apply.
func ParseMembershipEvent(body []byte) (MembershipEvent, error) {
	raw, err := parseRaw(body)
	if err != nil {
		return MembershipEvent{}, err
	}
	ev := MembershipEvent{Type: raw.typ}
	switch ev.Type {
	case MembershipCreated, MembershipUpdated, MembershipSnapshot, MembershipDeleted:
	default:
		return MembershipEvent{}, fmt.Errorf("%w: %q is not a membership event clerksync applies", ErrMalformed, truncate(ev.Type))
	}
	ts, ok, err := envelopeTime(raw.timestamp)
	if err != nil {
		return MembershipEvent{}, fmt.Errorf("%w: timestamp: %w", ErrMalformed, err)
	}
	if ev.Type == MembershipDeleted && !ok {
		return MembershipEvent{}, fmt.Errorf("%w: organizationMembership.deleted needs the envelope timestamp", ErrMalformed)
	}
	ev.Timestamp = ts
	var id, org, user, createdAt, updatedAt gjson.Result
	m := &Membership{}
	fields := textFields{}
	raw.data.ForEach(func(k, v gjson.Result) bool {
		switch k.Str {
		case "id":
			id = v
		case "organization":
			org = v
		case "public_user_data":
			user = v
		case "role":
			fields.read(v, &m.Role, "role")
		case "created_at":
			createdAt = v
		case "updated_at":
			updatedAt = v
		}
		return true
	})
	if fields.err != nil {
		return MembershipEvent{}, fields.err
	}
	if m.ID, err = objectID(id, "data.id"); err != nil {
		return MembershipEvent{}, err
	}
	// A delete names the organization and the user when Clerk sends it (it carries the whole
	// membership); clerksync's synthetic delete (reconcile --prune) carries only the id.
	deleted := ev.Type == MembershipDeleted
	if m.OrgID, err = nestedID(org, "organization", "id", deleted); err != nil {
		return MembershipEvent{}, err
	}
	if m.UserID, err = nestedID(user, "public_user_data", "user_id", deleted); err != nil {
		return MembershipEvent{}, err
	}
	if m.CreatedAt, m.UpdatedAt, err = versionTimes(createdAt, updatedAt, ev.Type != MembershipDeleted); err != nil {
		return MembershipEvent{}, err
	}
	m.Data = StorableJSON([]byte(raw.data.Raw))
	ev.Membership = m
	return ev, nil
}

// nestedID reads the id member name of the object data.<object>: "" when the object is absent
// and optional.
func nestedID(obj gjson.Result, object, name string, optional bool) (string, error) {
	if optional && (!obj.Exists() || obj.Type == gjson.Null) {
		return "", nil
	}
	if !obj.IsObject() {
		return "", fmt.Errorf("%w: data.%s must be an object", ErrMalformed, object)
	}
	return objectID(member(obj, name), "data."+object+"."+name)
}

// textFields reads optional text members, keeping the first error.
type textFields struct{ err error }

func (f *textFields) read(v gjson.Result, dst **string, name string) {
	if f.err != nil {
		return
	}
	var err error
	if *dst, err = optionalText(v); err != nil {
		f.err = fmt.Errorf("%w: data.%s must be a string or null", ErrMalformed, name)
	}
}

// objectID reads a Clerk id (what is named path in errors): like userID, a non-empty string of
// valid UTF-8 without NUL, since it is a row's key.
func objectID(v gjson.Result, path string) (string, error) {
	id, err := userID(v)
	if err != nil {
		return "", fmt.Errorf("%w: %s must be a non-empty string of UTF-8 without NUL", ErrMalformed, path)
	}
	return id, nil
}

// versionTimes reads an object's created_at (optional) and updated_at (required when
// needUpdated; else read when present), milliseconds since the epoch.
func versionTimes(createdAt, updatedAt gjson.Result, needUpdated bool) (*time.Time, time.Time, error) {
	var created *time.Time
	if t, ok, err := millis(createdAt); err != nil {
		return nil, time.Time{}, fmt.Errorf("%w: data.created_at must be milliseconds since the epoch", ErrMalformed)
	} else if ok {
		created = &t
	}
	updated, ok, err := millis(updatedAt)
	if err != nil || (needUpdated && !ok) {
		return nil, time.Time{}, fmt.Errorf("%w: data.updated_at must be milliseconds since the epoch", ErrMalformed)
	}
	return created, updated, nil
}

// secondsBelow: an envelope timestamp below it is in seconds, as in Clerk's published OpenAPI
// examples (1716883200); real deliveries use milliseconds, and 10^11 ms is in 1973.
const secondsBelow = 100_000_000_000

// minSeconds is the start of year 1, the earliest time Postgres and RFC 3339 both represent.
const minSeconds = -62135596800

// envelopeTime reads an organization or membership event's envelope timestamp: milliseconds since
// the epoch, or seconds when below 10^11. ok is false when it is absent or null.
func envelopeTime(v gjson.Result) (time.Time, bool, error) {
	t, ok, err := millis(v)
	if err != nil || !ok {
		return t, ok, err
	}
	if s := t.UnixMilli(); s < secondsBelow {
		if s < minSeconds {
			return time.Time{}, false, errors.New("out of range")
		}
		return time.Unix(s, 0).UTC(), true, nil
	}
	return t, true, nil
}
