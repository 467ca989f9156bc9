// Package clerkgen plays Clerk wherever clerksync needs webhooks without Clerk: the dev stack's
// send command, the load generator, the crash soak and tests. It builds user.created,
// user.updated and user.deleted payloads shaped exactly like Clerk's (times in milliseconds
// since the epoch), seeded histories of them with deletes, resends and reordering, and signs
// and posts them the way Svix does. Building payloads is pure: callers pass the randomness and
// the clock, so a seed replays a history byte for byte. The services must not import it.
package clerkgen

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"
)

// Event types clerkgen builds payloads for.
const (
	UserCreated = "user.created"
	UserUpdated = "user.updated"
	UserDeleted = "user.deleted"
)

// InstanceID is the Clerk instance every generated event claims to come from.
const InstanceID = "ins_2clerksyncdevinstance0000"

// User is a Clerk user as clerkgen tracks it between events: the fields clerksync projects.
type User struct {
	ID        string // user_…
	EmailID   string // idn_…: the primary email address's id
	Email     string
	Username  *string
	FirstName *string
	LastName  *string
	ImageURL  string
	CreatedAt time.Time // millisecond precision, like Clerk's
	UpdatedAt time.Time
}

// NewUser returns a user with a plausible profile drawn from r, created (and last updated) at
// created. An empty id draws a new one.
func NewUser(r *rand.Rand, id string, created time.Time) User {
	if id == "" {
		id = NewUserID(r)
	}
	created = created.Truncate(time.Millisecond)
	first, last := firstNames[r.IntN(len(firstNames))], lastNames[r.IntN(len(lastNames))]
	u := User{
		ID:        id,
		EmailID:   "idn_" + base62(r, 27),
		Email:     emailFor(r, first, last),
		FirstName: &first,
		LastName:  &last,
		ImageURL:  "https://img.clerk.com/" + base62(r, 40),
		CreatedAt: created,
		UpdatedAt: created,
	}
	if r.IntN(2) == 0 {
		name := strings.ToLower(first) + "_" + base62(r, 4)
		u.Username = &name
	}
	return u
}

// Updated returns u as a later user.updated would carry it: one or two fields changed and
// UpdatedAt set to at, or to just after u.UpdatedAt when at is not later (a user's versions
// always increase).
func (u User) Updated(r *rand.Rand, at time.Time) User {
	at = at.Truncate(time.Millisecond)
	if !at.After(u.UpdatedAt) {
		at = u.UpdatedAt.Add(time.Millisecond)
	}
	u.UpdatedAt = at
	for range 1 + r.IntN(2) {
		switch r.IntN(5) {
		case 0:
			first := firstNames[r.IntN(len(firstNames))]
			u.FirstName = &first
		case 1:
			if r.IntN(4) == 0 {
				u.LastName = nil // Clerk allows clearing it
			} else {
				last := lastNames[r.IntN(len(lastNames))]
				u.LastName = &last
			}
		case 2:
			name := "user_" + strings.ToLower(base62(r, 8))
			u.Username = &name
		case 3:
			u.ImageURL = "https://img.clerk.com/" + base62(r, 40)
		case 4: // a new primary address
			u.EmailID = "idn_" + base62(r, 27)
			u.Email = emailFor(r, deref(u.FirstName, "user"), deref(u.LastName, "clerk"))
		}
	}
	return u
}

// Payload builds the body of a user event: created and updated carry u as of the event, at
// u.UpdatedAt; a delete carries only u.ID, at the time given.
func Payload(typ string, u User, deletedAt time.Time) ([]byte, error) {
	switch typ {
	case UserCreated, UserUpdated:
		return marshal(typ, u.UpdatedAt, u.data(typ))
	case UserDeleted:
		return marshal(typ, deletedAt, deletedData{Deleted: true, ID: u.ID, Object: "user"})
	default:
		return nil, fmt.Errorf("clerkgen: no payload for %q: only %s, %s and %s are generated", typ, UserCreated, UserUpdated, UserDeleted)
	}
}

// CreatedBody is the user.created body for u.
func CreatedBody(u User) []byte { return mustPayload(UserCreated, u, time.Time{}) }

// UpdatedBody is the user.updated body for u.
func UpdatedBody(u User) []byte { return mustPayload(UserUpdated, u, time.Time{}) }

// DeletedBody is the user.deleted body for the user id, deleted at at.
func DeletedBody(id string, at time.Time) []byte { return mustPayload(UserDeleted, User{ID: id}, at) }

func mustPayload(typ string, u User, at time.Time) []byte {
	b, err := Payload(typ, u, at)
	if err != nil {
		panic(err) // unreachable: the types are ours
	}
	return b
}

// The JSON shapes below follow Clerk's published examples (see the fixtures), fields in the
// same (alphabetical) order.

type envelope struct {
	Data            any             `json:"data"`
	EventAttributes eventAttributes `json:"event_attributes"`
	InstanceID      string          `json:"instance_id"`
	Object          string          `json:"object"`
	Timestamp       int64           `json:"timestamp"`
	Type            string          `json:"type"`
}

type eventAttributes struct {
	HTTPRequest httpRequest `json:"http_request"`
}

type httpRequest struct {
	ClientIP  string `json:"client_ip"`
	UserAgent string `json:"user_agent"`
}

type userData struct {
	Birthday              string            `json:"birthday"`
	CreatedAt             int64             `json:"created_at"`
	EmailAddresses        []emailAddress    `json:"email_addresses"`
	ExternalAccounts      []json.RawMessage `json:"external_accounts"`
	ExternalID            *string           `json:"external_id"`
	FirstName             *string           `json:"first_name"`
	Gender                string            `json:"gender"`
	ID                    string            `json:"id"`
	ImageURL              string            `json:"image_url"`
	LastName              *string           `json:"last_name"`
	LastSignInAt          *int64            `json:"last_sign_in_at"`
	Object                string            `json:"object"`
	PasswordEnabled       bool              `json:"password_enabled"`
	PhoneNumbers          []json.RawMessage `json:"phone_numbers"`
	PrimaryEmailAddressID *string           `json:"primary_email_address_id"`
	PrimaryPhoneNumberID  *string           `json:"primary_phone_number_id"`
	PrimaryWeb3WalletID   *string           `json:"primary_web3_wallet_id"`
	PrivateMetadata       struct{}          `json:"private_metadata"`
	ProfileImageURL       string            `json:"profile_image_url"`
	PublicMetadata        struct{}          `json:"public_metadata"`
	TwoFactorEnabled      bool              `json:"two_factor_enabled"`
	UnsafeMetadata        struct{}          `json:"unsafe_metadata"`
	UpdatedAt             int64             `json:"updated_at"`
	Username              *string           `json:"username"`
	Web3Wallets           []json.RawMessage `json:"web3_wallets"`
}

type emailAddress struct {
	EmailAddress string            `json:"email_address"`
	ID           string            `json:"id"`
	LinkedTo     []json.RawMessage `json:"linked_to"`
	Object       string            `json:"object"`
	Reserved     bool              `json:"reserved"`
	Verification verification      `json:"verification"`
}

type verification struct {
	Attempts *int   `json:"attempts"`
	ExpireAt *int64 `json:"expire_at"`
	Status   string `json:"status"`
	Strategy string `json:"strategy"`
}

type deletedData struct {
	Deleted bool   `json:"deleted"`
	ID      string `json:"id"`
	Object  string `json:"object"`
}

func (u User) data(typ string) userData {
	created := u.CreatedAt.UnixMilli()
	d := userData{
		CreatedAt: created,
		EmailAddresses: []emailAddress{{
			EmailAddress: u.Email,
			ID:           u.EmailID,
			LinkedTo:     []json.RawMessage{},
			Object:       "email_address",
			Verification: verification{Status: "verified", Strategy: "email_code"},
		}},
		ExternalAccounts:      []json.RawMessage{},
		FirstName:             u.FirstName,
		ID:                    u.ID,
		ImageURL:              u.ImageURL,
		LastName:              u.LastName,
		Object:                "user",
		PasswordEnabled:       true,
		PhoneNumbers:          []json.RawMessage{},
		PrimaryEmailAddressID: &u.EmailID,
		ProfileImageURL:       "https://www.gravatar.com/avatar?d=mp",
		UpdatedAt:             u.UpdatedAt.UnixMilli(),
		Username:              u.Username,
		Web3Wallets:           []json.RawMessage{},
	}
	if typ == UserCreated {
		d.LastSignInAt = &created
	}
	return d
}

func marshal(typ string, at time.Time, data any) ([]byte, error) {
	return json.Marshal(envelope{
		Data: data,
		EventAttributes: eventAttributes{HTTPRequest: httpRequest{
			ClientIP:  "0.0.0.0",
			UserAgent: "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/128.0.0.0 Safari/537.36",
		}},
		InstanceID: InstanceID,
		Object:     "event",
		Timestamp:  at.UnixMilli(),
		Type:       typ,
	})
}

// NewUserID returns a Clerk-style user id: "user_" and 27 base62 characters.
func NewUserID(r *rand.Rand) string { return "user_" + base62(r, 27) }

// NewMessageID returns a Svix-style message id: "msg_" and 27 base62 characters.
func NewMessageID(r *rand.Rand) string { return "msg_" + base62(r, 27) }

const base62Alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

func base62(r *rand.Rand, n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = base62Alphabet[r.IntN(len(base62Alphabet))]
	}
	return string(b)
}

// emailFor makes an address on a reserved example domain (RFC 2606): never someone's inbox.
func emailFor(r *rand.Rand, first, last string) string {
	domains := []string{"example.com", "example.org", "example.net"}
	return fmt.Sprintf("%s.%s%d@%s", strings.ToLower(first), strings.ToLower(last), r.IntN(1000), domains[r.IntN(len(domains))])
}

func deref(s *string, fallback string) string {
	if s == nil {
		return fallback
	}
	return *s
}

var firstNames = []string{
	"Ada", "Alan", "Amara", "Anders", "Aiko", "Beatriz", "Chen", "Dmitri", "Elif", "Emeka",
	"Farah", "Grace", "Hamid", "Ines", "Jonas", "Kalani", "Leila", "Linus", "Mei", "Nadia",
	"Oskar", "Priya", "Quentin", "Rosa", "Sven", "Tariq", "Ugo", "Valentina", "Wen", "Yusuf",
}

var lastNames = []string{
	"Abara", "Berg", "Castillo", "Dubois", "Eriksen", "Fujita", "Garcia", "Haddad", "Ivanova",
	"Jensen", "Kowalski", "Lovelace", "Moreau", "Nakamura", "Okafor", "Petrov", "Quispe", "Rossi",
	"Singh", "Turing", "Ueda", "Varga", "Weber", "Xu", "Yilmaz", "Zhang",
}
