-- name: GetOrganization :one
-- Everything GET /organizations/{clerk_org_id} answers, in one round trip: the organization,
-- when it is live and the caller is a live member of it (no row otherwise: unknown, deleted and
-- not-a-member look the same), and a page of its live members (live membership, live user) as a
-- JSON array ordered by clerk_user_id as bytes, the first @page_size after @after (the empty string for the
-- first page). The caller asks one more than it shows, to know whether a next page exists.
SELECT o.organization_id, o.clerk_org_id, o.slug, o.name, o.image_url,
       o.clerk_created_at, o.clerk_updated_at,
       coalesce((SELECT jsonb_agg(jsonb_build_object(
                            'user_id', p.user_id, 'clerk_user_id', p.clerk_user_id, 'role', p.role,
                            'first_name', p.first_name, 'last_name', p.last_name, 'image_url', p.image_url)
                        ORDER BY p.clerk_user_id COLLATE "C")
                 FROM (SELECT u.user_id, u.clerk_user_id, om.role, u.first_name, u.last_name, u.image_url
                       FROM organization_memberships om
                       JOIN users u ON u.clerk_user_id = om.clerk_user_id
                       WHERE om.clerk_org_id = o.clerk_org_id
                         AND om.clerk_user_id COLLATE "C" > (@after::text)
                         AND om.deleted_at IS NULL AND u.deleted_at IS NULL
                       ORDER BY om.clerk_user_id COLLATE "C"
                       LIMIT @page_size::int) p),
                '[]')::jsonb AS members
FROM organizations o
WHERE o.clerk_org_id = @clerk_org_id
  AND o.deleted_at IS NULL
  AND EXISTS (SELECT 1
              FROM organization_memberships cm
              JOIN users cu ON cu.clerk_user_id = cm.clerk_user_id
              WHERE cm.clerk_org_id = o.clerk_org_id AND cm.clerk_user_id = @caller
                AND cm.deleted_at IS NULL AND cu.deleted_at IS NULL);
