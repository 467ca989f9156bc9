-- name: UserVersions :many
-- What worker reconcile compares a page of the Backend API's users against: each known user's
-- version (NULL for a tombstone) and whether it is a tombstone. The api's just-in-time sync asks
-- it which of the users it waits for have a row yet.
SELECT clerk_user_id, clerk_updated_at, deleted_at
FROM users
WHERE clerk_user_id = ANY(@clerk_user_ids::text[]);

-- name: LiveUserIDs :many
-- The live users as a reconcile sweep starts: those the sweep does not see are missing from
-- Clerk (a user created after this read is not among them, so it cannot be taken for missing).
SELECT clerk_user_id FROM users WHERE deleted_at IS NULL ORDER BY clerk_user_id COLLATE "C";

-- name: TryAdvisoryLock :one
-- A session-level advisory lock: held by the connection until unlocked or closed.
SELECT pg_try_advisory_lock(@key::bigint);

-- name: AdvisoryUnlock :one
SELECT pg_advisory_unlock(@key::bigint);

-- name: OrganizationVersions :many
-- What worker reconcile compares a page of the Backend API's organizations against, like
-- UserVersions.
SELECT clerk_org_id, clerk_updated_at, deleted_at
FROM organizations
WHERE clerk_org_id = ANY(@clerk_org_ids::text[]);

-- name: LiveOrganizationIDs :many
SELECT clerk_org_id FROM organizations WHERE deleted_at IS NULL ORDER BY clerk_org_id COLLATE "C";

-- name: MembershipVersions :many
-- What worker reconcile compares a page of the Backend API's memberships against, like
-- UserVersions.
SELECT clerk_membership_id, clerk_updated_at, deleted_at
FROM organization_memberships
WHERE clerk_membership_id = ANY(@clerk_membership_ids::text[]);

-- name: LiveMembershipIDs :many
SELECT clerk_membership_id FROM organization_memberships WHERE deleted_at IS NULL ORDER BY clerk_membership_id COLLATE "C";
