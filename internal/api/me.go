package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/labstack/echo/v5"

	"github.com/clerksync/clerksync/internal/postgres"
	"github.com/clerksync/clerksync/internal/postgres/dbsqlc"
	"github.com/clerksync/clerksync/internal/service"
)

// meResponse is GET /auth/me's body. Every field is always present; unknown values are null.
// Times are RFC 3339 in UTC; created_at and updated_at are Clerk's.
type meResponse struct {
	UserID       string               `json:"user_id"`
	ClerkUserID  string               `json:"clerk_user_id"`
	Email        *string              `json:"email"`
	Username     *string              `json:"username"`
	FirstName    *string              `json:"first_name"`
	LastName     *string              `json:"last_name"`
	ImageURL     *string              `json:"image_url"`
	CreatedAt    *time.Time           `json:"created_at"`
	UpdatedAt    *time.Time           `json:"updated_at"`
	Subscription subscriptionResponse `json:"subscription"`
	Usage        usageResponse        `json:"usage"`
	// Organizations are the caller's live memberships of live organizations, by slug as bytes.
	Organizations []membershipResponse `json:"organizations"`
	// ActiveOrganization is the token's active organization when the caller is a live member of
	// it, else null.
	ActiveOrganization *string `json:"active_organization"`
}

// membershipResponse is one of /auth/me's organizations. GetMe builds it as JSON, under these
// names.
type membershipResponse struct {
	OrganizationID string  `json:"organization_id"`
	ClerkOrgID     string  `json:"clerk_org_id"`
	Slug           *string `json:"slug"`
	Name           *string `json:"name"`
	ImageURL       *string `json:"image_url"`
	Role           *string `json:"role"`
}

type subscriptionResponse struct {
	Tier      string     `json:"tier"`
	Status    string     `json:"status"`
	StartedAt *time.Time `json:"started_at"`
}

type usageResponse struct {
	PeriodStart *time.Time `json:"period_start"`
	APICalls    int64      `json:"api_calls"`
	Campaigns   int32      `json:"campaigns"`
}

// me answers GET /auth/me: the caller's user, subscription, usage and organizations, in one
// query.
func (s *server) me(c *echo.Context) error {
	claims := sessionClaims(c)
	ctx, clerkID := c.Request().Context(), claims.UserID()
	row, err := s.queries.GetMe(ctx, clerkID)
	if errors.Is(err, pgx.ErrNoRows) && s.jit != nil {
		// Just-in-time sync (jit.go): have the worker fold the user now, or say why not.
		if err := s.jit.sync(ctx, clerkID); err != nil {
			return err
		}
		row, err = s.queries.GetMe(ctx, clerkID)
	}
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		// The session is valid but the user.created webhook has not been applied yet.
		return errUserNotSynced
	case postgres.IsUnavailable(err):
		return errDatabaseUnavailable.withCause(err)
	case err != nil:
		return errInternal.withCause(err)
	case row.DeletedAt.Valid:
		return errUserDeleted
	}
	resp, err := newMeResponse(row, claims.ActiveOrganization())
	if err != nil {
		return errInternal.withCause(err)
	}
	c.Response().Header().Set("Cache-Control", "no-store")
	service.WriteJSON(c.Response(), http.StatusOK, resp)
	return nil
}

// newMeResponse maps GetMe's row; active is the token's active organization ("" for none).
func newMeResponse(row dbsqlc.GetMeRow, active string) (meResponse, error) {
	orgs := []membershipResponse{}
	if err := json.Unmarshal(row.Organizations, &orgs); err != nil {
		return meResponse{}, fmt.Errorf("decoding the organizations of %s: %w", row.ClerkUserID, err)
	}
	var activeOrg *string
	for _, o := range orgs {
		if active != "" && o.ClerkOrgID == active {
			activeOrg = &o.ClerkOrgID
			break
		}
	}
	return meResponse{
		UserID:      row.UserID.String(),
		ClerkUserID: row.ClerkUserID,
		Email:       text(row.Email),
		Username:    text(row.Username),
		FirstName:   text(row.FirstName),
		LastName:    text(row.LastName),
		ImageURL:    text(row.ImageUrl),
		CreatedAt:   timestamp(row.ClerkCreatedAt),
		UpdatedAt:   timestamp(row.ClerkUpdatedAt),
		Subscription: subscriptionResponse{
			Tier:      row.Tier,
			Status:    row.Status,
			StartedAt: timestamp(row.StartedAt),
		},
		Usage: usageResponse{
			PeriodStart: timestamp(row.PeriodStart),
			APICalls:    row.ApiCalls,
			Campaigns:   row.Campaigns,
		},
		Organizations:      orgs,
		ActiveOrganization: activeOrg,
	}, nil
}

func text(t pgtype.Text) *string {
	if !t.Valid {
		return nil
	}
	return &t.String
}

func timestamp(t pgtype.Timestamptz) *time.Time {
	if !t.Valid || t.InfinityModifier != pgtype.Finite {
		return nil
	}
	utc := t.Time.UTC()
	return &utc
}
