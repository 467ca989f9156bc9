-- name: GetMe :one
-- Everything GET /auth/me answers, in one round trip: the user, its subscription and usage, and
-- its organizations: the live memberships of live organizations (a membership is live while it,
-- its organization and its user are live; the caller's own liveness is deleted_at here), as a
-- JSON array ordered by slug as bytes (then the Clerk id, so the order is total), [] when none.
SELECT u.user_id, u.clerk_user_id, u.email, u.username, u.first_name, u.last_name, u.image_url,
       u.clerk_created_at, u.clerk_updated_at, u.deleted_at,
       s.tier, s.status, s.started_at,
       m.period_start, m.api_calls, m.campaigns,
       coalesce((SELECT jsonb_agg(jsonb_build_object(
                            'organization_id', o.organization_id, 'clerk_org_id', o.clerk_org_id,
                            'slug', o.slug, 'name', o.name, 'image_url', o.image_url, 'role', om.role)
                        ORDER BY o.slug COLLATE "C", o.clerk_org_id COLLATE "C")
                 FROM organization_memberships om
                 JOIN organizations o ON o.clerk_org_id = om.clerk_org_id
                 WHERE om.clerk_user_id = u.clerk_user_id
                   AND om.deleted_at IS NULL AND o.deleted_at IS NULL),
                '[]')::jsonb AS organizations
FROM users u
JOIN subscriptions s ON s.user_id = u.user_id
JOIN usage_metrics m ON m.user_id = u.user_id
WHERE u.clerk_user_id = @clerk_user_id;
