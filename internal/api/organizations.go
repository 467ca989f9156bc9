package api

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/labstack/echo/v5"

	"github.com/clerksync/clerksync/internal/postgres"
	"github.com/clerksync/clerksync/internal/postgres/dbsqlc"
	"github.com/clerksync/clerksync/internal/service"
)

// Page sizes of GET /organizations/{clerk_org_id}'s members.
const (
	defaultMembersLimit = 100
	maxMembersLimit     = 500
)

// organizationResponse is GET /organizations/{clerk_org_id}'s body. Every field is always
// present; unknown values are null. created_at and updated_at are Clerk's.
type organizationResponse struct {
	OrganizationID string           `json:"organization_id"`
	ClerkOrgID     string           `json:"clerk_org_id"`
	Slug           *string          `json:"slug"`
	Name           *string          `json:"name"`
	ImageURL       *string          `json:"image_url"`
	CreatedAt      *time.Time       `json:"created_at"`
	UpdatedAt      *time.Time       `json:"updated_at"`
	Members        []memberResponse `json:"members"`
	// NextCursor is the cursor of the next page, null on the last.
	NextCursor *string `json:"next_cursor"`
}

// memberResponse is one live member. GetOrganization builds it as JSON, under these names.
type memberResponse struct {
	UserID      string  `json:"user_id"`
	ClerkUserID string  `json:"clerk_user_id"`
	Role        *string `json:"role"`
	FirstName   *string `json:"first_name"`
	LastName    *string `json:"last_name"`
	ImageURL    *string `json:"image_url"`
}

// organization answers GET /organizations/{clerk_org_id} for a caller who is a live member of a
// live organization: the organization and a page of its live members, ordered by clerk_user_id
// as bytes, in one query. Anything else is 404 organization_not_found, the same answer whether
// the organization is unknown, deleted, or not the caller's.
func (s *server) organization(c *echo.Context) error {
	limit, after, err := membersPage(c)
	if err != nil {
		return err
	}
	orgID := c.Param("clerk_org_id")
	if orgID == "" || !utf8.ValidString(orgID) || strings.IndexByte(orgID, 0) >= 0 {
		return errOrganizationNotFound // text cannot hold it: no organization has such an id
	}
	row, err := s.queries.GetOrganization(c.Request().Context(), dbsqlc.GetOrganizationParams{
		ClerkOrgID: orgID,
		Caller:     sessionClaims(c).UserID(),
		After:      after,
		PageSize:   int32(limit + 1), //nolint:gosec // G115: at most maxMembersLimit+1
	})
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return errOrganizationNotFound
	case postgres.IsUnavailable(err):
		return errDatabaseUnavailable.withCause(err)
	case err != nil:
		return errInternal.withCause(err)
	}
	resp, err := newOrganizationResponse(row, limit)
	if err != nil {
		return errInternal.withCause(err)
	}
	c.Response().Header().Set("Cache-Control", "no-store")
	service.WriteJSON(c.Response(), http.StatusOK, resp)
	return nil
}

// membersPage reads ?limit= (default 100, 1 to 500) and ?cursor= (a next_cursor: the last
// clerk_user_id of the page before, base64url without padding; none for the first page).
func membersPage(c *echo.Context) (limit int, after string, err error) {
	limit = defaultMembersLimit
	if v := c.QueryParam("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxMembersLimit {
			return 0, "", errInvalidLimit
		}
		limit = n
	}
	if v := c.QueryParam("cursor"); v != "" {
		b, err := base64.RawURLEncoding.DecodeString(v)
		if err != nil || len(b) == 0 || !utf8.Valid(b) || strings.IndexByte(string(b), 0) >= 0 {
			return 0, "", errInvalidCursor
		}
		after = string(b)
	}
	return limit, after, nil
}

// newOrganizationResponse maps GetOrganization's row, which holds up to limit+1 members: the
// one past limit says there is a next page.
func newOrganizationResponse(row dbsqlc.GetOrganizationRow, limit int) (organizationResponse, error) {
	members := []memberResponse{}
	if err := json.Unmarshal(row.Members, &members); err != nil {
		return organizationResponse{}, fmt.Errorf("decoding the members of %s: %w", row.ClerkOrgID, err)
	}
	var next *string
	if len(members) > limit {
		members = members[:limit]
		cursor := base64.RawURLEncoding.EncodeToString([]byte(members[limit-1].ClerkUserID))
		next = &cursor
	}
	return organizationResponse{
		OrganizationID: row.OrganizationID.String(),
		ClerkOrgID:     row.ClerkOrgID,
		Slug:           text(row.Slug),
		Name:           text(row.Name),
		ImageURL:       text(row.ImageUrl),
		CreatedAt:      timestamp(row.ClerkCreatedAt),
		UpdatedAt:      timestamp(row.ClerkUpdatedAt),
		Members:        members,
		NextCursor:     next,
	}, nil
}
