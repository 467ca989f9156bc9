package clerkgen

import (
	"math/rand/v2"
	"time"
)

// Organization event types clerkgen builds payloads for.
const (
	OrganizationCreated = "organization.created"
	OrganizationUpdated = "organization.updated"
	OrganizationDeleted = "organization.deleted"
	MembershipCreated   = "organizationMembership.created"
	MembershipUpdated   = "organizationMembership.updated"
	MembershipDeleted   = "organizationMembership.deleted"
)

// Organization is a Clerk organization as clerkgen tracks it between events.
type Organization struct {
	ID        string // org_…
	Name      string
	Slug      string
	CreatedAt time.Time // millisecond precision, like Clerk's
	UpdatedAt time.Time
}

// Membership is a Clerk organization membership: user in org with role.
type Membership struct {
	ID        string // orgmem_…
	Org       Organization
	User      User
	Role      string // org:admin, org:member
	CreatedAt time.Time
	UpdatedAt time.Time
}

// NewOrgID returns a Clerk-style organization id: "org_" and 27 base62 characters.
func NewOrgID(r *rand.Rand) string { return "org_" + base62(r, 27) }

// NewMembershipID returns a Clerk-style membership id: "orgmem_" and 27 base62 characters.
func NewMembershipID(r *rand.Rand) string { return "orgmem_" + base62(r, 27) }

type organizationData struct {
	AdminDeleteEnabled      bool           `json:"admin_delete_enabled"`
	CreatedAt               int64          `json:"created_at"`
	CreatedBy               string         `json:"created_by"`
	HasImage                bool           `json:"has_image"`
	ID                      string         `json:"id"`
	ImageURL                string         `json:"image_url"`
	MaxAllowedMemberships   int            `json:"max_allowed_memberships"`
	MembersCount            int            `json:"members_count"`
	Name                    string         `json:"name"`
	Object                  string         `json:"object"`
	PendingInvitationsCount int            `json:"pending_invitations_count"`
	PrivateMetadata         map[string]any `json:"private_metadata"`
	PublicMetadata          map[string]any `json:"public_metadata"`
	Slug                    string         `json:"slug"`
	UpdatedAt               int64          `json:"updated_at"`
}

func (o Organization) data() organizationData {
	return organizationData{
		AdminDeleteEnabled: true, CreatedAt: o.CreatedAt.UnixMilli(), ID: o.ID,
		ImageURL: "https://img.clerk.com/" + o.ID, MaxAllowedMemberships: 5, MembersCount: 1,
		Name: o.Name, Object: "organization", PrivateMetadata: map[string]any{}, PublicMetadata: map[string]any{},
		Slug: o.Slug, UpdatedAt: o.UpdatedAt.UnixMilli(),
	}
}

type publicUserData struct {
	FirstName       *string `json:"first_name"`
	HasImage        bool    `json:"has_image"`
	Identifier      string  `json:"identifier"`
	ImageURL        string  `json:"image_url"`
	LastName        *string `json:"last_name"`
	ProfileImageURL string  `json:"profile_image_url"`
	UserID          string  `json:"user_id"`
}

type membershipData struct {
	CreatedAt       int64            `json:"created_at"`
	ID              string           `json:"id"`
	Object          string           `json:"object"`
	Organization    organizationData `json:"organization"`
	Permissions     []string         `json:"permissions"`
	PrivateMetadata map[string]any   `json:"private_metadata"`
	PublicMetadata  map[string]any   `json:"public_metadata"`
	PublicUserData  publicUserData   `json:"public_user_data"`
	Role            string           `json:"role"`
	UpdatedAt       int64            `json:"updated_at"`
}

// OrganizationBody is the body Clerk sends for typ (organization.created, .updated or .deleted)
// about o at at: a delete carries {"deleted":true,"id":…,"object":"organization"} only.
func OrganizationBody(typ string, o Organization, at time.Time) []byte {
	var data any = o.data()
	if typ == OrganizationDeleted {
		data = deletedData{Deleted: true, ID: o.ID, Object: "organization"}
	}
	b, err := marshal(typ, at, data)
	if err != nil {
		panic(err) // plain structs always marshal
	}
	return b
}

// MembershipBody is the body Clerk sends for typ (organizationMembership.created, .updated or
// .deleted) about m at at: every one, the delete too, carries the whole membership, with the
// organization and a copy of the user's public data.
func MembershipBody(typ string, m Membership, at time.Time) []byte {
	b, err := marshal(typ, at, membershipData{
		CreatedAt: m.CreatedAt.UnixMilli(), ID: m.ID, Object: "organization_membership",
		Organization: m.Org.data(), Permissions: []string{}, PrivateMetadata: map[string]any{}, PublicMetadata: map[string]any{},
		PublicUserData: publicUserData{
			FirstName: m.User.FirstName, LastName: m.User.LastName, Identifier: m.User.Email,
			ImageURL: m.User.ImageURL, ProfileImageURL: m.User.ImageURL, UserID: m.User.ID,
		},
		Role: m.Role, UpdatedAt: m.UpdatedAt.UnixMilli(),
	})
	if err != nil {
		panic(err)
	}
	return b
}
