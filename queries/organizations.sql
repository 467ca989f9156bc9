-- name: LockFoldKeys :exec
-- Serializes the writers that copy a user's personal data into memberships with the writers that
-- make that user (or organization) a tombstone, across workers: a batch with membership versions
-- takes a shared transaction-level advisory lock for each user and organization they name, a
-- batch with user or organization deletes an exclusive one for each deleted object. A name
-- ("user:<id>", "org:<id>") maps to one of 128 buckets, the second key of the two-key form under
-- the first key 1668049779 ("clks"; the two-key form never meets the one-key locks of goose or
-- reconcile), so a transaction holds at most 128 of these locks however large its batch (the
-- shared lock table holds 64 per connection by default); two names in one bucket only wait for
-- each other. Each call takes its locks in one go, in bucket order (the strongest mode when a
-- bucket is asked twice): the shared ones as the transaction's first statement, the exclusive
-- ones just before the scrub (a cycle between the two is a deadlock Postgres breaks, retried).
-- The statements after it take a fresh snapshot (READ COMMITTED), so they see whatever a
-- conflicting batch committed before the lock was granted.
SELECT CASE WHEN l.exclusive THEN pg_advisory_xact_lock(1668049779, l.bucket)::text
            ELSE pg_advisory_xact_lock_shared(1668049779, l.bucket)::text END
FROM (SELECT ((hashtextextended(k.name, 0) % 128 + 128) % 128)::int AS bucket, bool_or(k.exclusive) AS exclusive
      FROM (SELECT unnest(@names::text[]) AS name, unnest(@exclusive::boolean[]) AS exclusive) k
      GROUP BY 1
      ORDER BY 1
      OFFSET 0) l;

-- name: ApplyOrganizationEvents :many
-- Applies a batch of organization events in one statement, by the rules of ApplyEvents (see
-- users.sql): the ledger in svix-id order, then one event per organization (any delete beats
-- every live version, the earliest delete first; else the greatest (updated_at, svix-id as
-- bytes)), then the upsert in clerk_org_id order, which never replaces a tombstone but with an
-- earlier one. A delete has deleted_at set and every Clerk-derived column NULL.
WITH e AS (
    SELECT unnest(@event_ids::text[]) AS event_id,
           unnest(@event_types::text[]) AS event_type,
           unnest(@stream_seqs::bigint[]) AS stream_seq,
           unnest(@organization_ids::uuid[]) AS organization_id,
           unnest(@clerk_org_ids::text[]) AS clerk_org_id,
           unnest(@names::varchar[]) AS name,
           unnest(@slugs::varchar[]) AS slug,
           unnest(@image_urls::varchar[]) AS image_url,
           unnest(@clerk_data::jsonb[]) AS clerk_data,
           unnest(@clerk_created_ats::timestamptz[]) AS clerk_created_at,
           unnest(@clerk_updated_ats::timestamptz[]) AS clerk_updated_at,
           unnest(@deleted_ats::timestamptz[]) AS deleted_at
), fresh AS (
    INSERT INTO processed_events (event_id, event_type, clerk_user_id, stream_seq)
    SELECT e.event_id, e.event_type, NULL, e.stream_seq
    FROM e
    ORDER BY e.event_id COLLATE "C"
    ON CONFLICT (event_id) DO NOTHING
    RETURNING event_id
), r AS (
    SELECT DISTINCT ON (e.clerk_org_id COLLATE "C") e.*,
           CASE WHEN e.deleted_at IS NULL THEN e.event_id END AS version_event_id
    FROM e
    WHERE @reapply::boolean OR e.event_id IN (SELECT f.event_id FROM fresh f)
    ORDER BY e.clerk_org_id COLLATE "C",
             e.deleted_at NULLS LAST,
             e.clerk_updated_at DESC,
             CASE WHEN e.deleted_at IS NOT NULL THEN e.event_id END COLLATE "C",
             e.event_id COLLATE "C" DESC
), written AS (
    INSERT INTO organizations AS o (
        organization_id, clerk_org_id, name, slug, image_url,
        clerk_data, clerk_created_at, clerk_updated_at, version_event_id, deleted_at)
    SELECT r.organization_id, r.clerk_org_id, r.name, r.slug, r.image_url,
           r.clerk_data, r.clerk_created_at, r.clerk_updated_at, r.version_event_id, r.deleted_at
    FROM r
    ORDER BY r.clerk_org_id COLLATE "C"
    ON CONFLICT (clerk_org_id) DO UPDATE SET
        name             = excluded.name,
        slug             = excluded.slug,
        image_url        = excluded.image_url,
        clerk_data       = excluded.clerk_data,
        clerk_created_at = excluded.clerk_created_at,
        clerk_updated_at = excluded.clerk_updated_at,
        version_event_id = excluded.version_event_id,
        deleted_at       = LEAST(o.deleted_at, excluded.deleted_at),
        updated_at       = now()
    WHERE CASE
        WHEN excluded.deleted_at IS NOT NULL THEN
            o.deleted_at IS NULL
            OR excluded.deleted_at < o.deleted_at
            OR (@reapply::boolean AND excluded.deleted_at = o.deleted_at)
        ELSE
            o.deleted_at IS NULL
            AND (o.clerk_updated_at IS NULL
                 OR (excluded.clerk_updated_at, excluded.version_event_id COLLATE "C")
                    > (o.clerk_updated_at, o.version_event_id COLLATE "C")
                 OR (@reapply::boolean
                     AND (excluded.clerk_updated_at, excluded.version_event_id COLLATE "C")
                         = (o.clerk_updated_at, o.version_event_id COLLATE "C")))
        END
    RETURNING o.clerk_org_id
)
SELECT e.event_id::text AS event_id, (w.clerk_org_id IS NOT NULL)::boolean AS applied
FROM e
LEFT JOIN r ON r.event_id = e.event_id
LEFT JOIN written w ON w.clerk_org_id = r.clerk_org_id
WHERE @reapply::boolean OR e.event_id IN (SELECT f.event_id FROM fresh f);

-- name: ApplyMembershipEvents :many
-- Applies a batch of organization membership events in one statement, by the rules of
-- ApplyOrganizationEvents, per clerk_membership_id. A delete carries the whole membership: it has
-- deleted_at set (the envelope timestamp) and its Clerk ids ('' for those a synthetic delete does
-- not name), every Clerk-derived column (role included) NULL. A version written while the membership's user or organization is a tombstone
-- leaves out the user's personal data (public_user_data); LockFoldKeys, taken first, makes sure
-- such a tombstone committed by another batch is seen here, or that its ScrubMemberships sees
-- this row.
WITH e AS (
    SELECT unnest(@event_ids::text[]) AS event_id,
           unnest(@event_types::text[]) AS event_type,
           unnest(@stream_seqs::bigint[]) AS stream_seq,
           unnest(@membership_ids::uuid[]) AS membership_id,
           unnest(@clerk_membership_ids::text[]) AS clerk_membership_id,
           unnest(@clerk_org_ids::text[]) AS clerk_org_id,
           unnest(@clerk_user_ids::text[]) AS clerk_user_id,
           unnest(@roles::varchar[]) AS role,
           unnest(@clerk_data::jsonb[]) AS clerk_data,
           unnest(@clerk_created_ats::timestamptz[]) AS clerk_created_at,
           unnest(@clerk_updated_ats::timestamptz[]) AS clerk_updated_at,
           unnest(@deleted_ats::timestamptz[]) AS deleted_at
), fresh AS (
    INSERT INTO processed_events (event_id, event_type, clerk_user_id, stream_seq)
    SELECT e.event_id, e.event_type, NULL, e.stream_seq
    FROM e
    ORDER BY e.event_id COLLATE "C"
    ON CONFLICT (event_id) DO NOTHING
    RETURNING event_id
), r AS (
    -- named_*: the organization and user any of the membership's events names ('' when none
    -- does: a synthetic delete alone), whichever event wins.
    SELECT DISTINCT ON (e.clerk_membership_id COLLATE "C") e.*,
           CASE WHEN e.deleted_at IS NULL THEN e.event_id END AS version_event_id,
           max(e.clerk_org_id) OVER w AS named_org_id,
           max(e.clerk_user_id) OVER w AS named_user_id
    FROM e
    WHERE @reapply::boolean OR e.event_id IN (SELECT f.event_id FROM fresh f)
    WINDOW w AS (PARTITION BY e.clerk_membership_id)
    ORDER BY e.clerk_membership_id COLLATE "C",
             e.deleted_at NULLS LAST,
             e.clerk_updated_at DESC,
             CASE WHEN e.deleted_at IS NOT NULL THEN e.event_id END COLLATE "C",
             e.event_id COLLATE "C" DESC
), written AS (
    INSERT INTO organization_memberships AS m (
        membership_id, clerk_membership_id, clerk_org_id, clerk_user_id, role,
        clerk_data, clerk_created_at, clerk_updated_at, version_event_id, deleted_at)
    SELECT r.membership_id, r.clerk_membership_id, r.named_org_id, r.named_user_id, r.role,
           CASE WHEN EXISTS (SELECT 1 FROM users u
                             WHERE u.clerk_user_id = r.named_user_id AND u.deleted_at IS NOT NULL)
                  OR EXISTS (SELECT 1 FROM organizations o
                             WHERE o.clerk_org_id = r.named_org_id AND o.deleted_at IS NOT NULL)
                THEN r.clerk_data - 'public_user_data'
                ELSE r.clerk_data END,
           r.clerk_created_at, r.clerk_updated_at, r.version_event_id, r.deleted_at
    FROM r
    ORDER BY r.clerk_membership_id COLLATE "C"
    -- A membership's organization and user never change: any event that names them ('' in a
    -- synthetic delete, which does not) fills them in, also on a tombstone, which otherwise
    -- nothing replaces (a live event meeting a tombstone then writes nothing else).
    ON CONFLICT (clerk_membership_id) DO UPDATE SET
        clerk_org_id     = CASE WHEN excluded.clerk_org_id = '' THEN m.clerk_org_id ELSE excluded.clerk_org_id END,
        clerk_user_id    = CASE WHEN excluded.clerk_user_id = '' THEN m.clerk_user_id ELSE excluded.clerk_user_id END,
        role             = CASE WHEN m.deleted_at IS NULL OR excluded.deleted_at IS NOT NULL THEN excluded.role END,
        clerk_data       = CASE WHEN m.deleted_at IS NULL OR excluded.deleted_at IS NOT NULL THEN excluded.clerk_data END,
        clerk_created_at = CASE WHEN m.deleted_at IS NULL OR excluded.deleted_at IS NOT NULL THEN excluded.clerk_created_at END,
        clerk_updated_at = CASE WHEN m.deleted_at IS NULL OR excluded.deleted_at IS NOT NULL THEN excluded.clerk_updated_at END,
        version_event_id = CASE WHEN m.deleted_at IS NULL OR excluded.deleted_at IS NOT NULL THEN excluded.version_event_id END,
        deleted_at       = LEAST(m.deleted_at, excluded.deleted_at),
        updated_at       = now()
    WHERE (m.clerk_org_id = '' AND excluded.clerk_org_id <> '')
       OR (m.clerk_user_id = '' AND excluded.clerk_user_id <> '')
       OR CASE
        WHEN excluded.deleted_at IS NOT NULL THEN
            m.deleted_at IS NULL
            OR excluded.deleted_at < m.deleted_at
            OR (@reapply::boolean AND excluded.deleted_at = m.deleted_at)
        ELSE
            m.deleted_at IS NULL
            AND (m.clerk_updated_at IS NULL
                 OR (excluded.clerk_updated_at, excluded.version_event_id COLLATE "C")
                    > (m.clerk_updated_at, m.version_event_id COLLATE "C")
                 OR (@reapply::boolean
                     AND (excluded.clerk_updated_at, excluded.version_event_id COLLATE "C")
                         = (m.clerk_updated_at, m.version_event_id COLLATE "C")))
        END
    RETURNING m.clerk_membership_id
)
SELECT e.event_id::text AS event_id, (w.clerk_membership_id IS NOT NULL)::boolean AS applied
FROM e
LEFT JOIN r ON r.event_id = e.event_id
LEFT JOIN written w ON w.clerk_membership_id = r.clerk_membership_id
WHERE @reapply::boolean OR e.event_id IN (SELECT f.event_id FROM fresh f);

-- name: ScrubMemberships :execrows
-- Removes the user's personal data (public_user_data) from the memberships of the users and
-- organizations given (a batch's deleted ones) that are tombstones now. It runs last in the
-- batch's transaction, under LockFoldKeys' exclusive locks, so it sees every membership another
-- batch wrote for them; it locks the rows in membership_id order.
UPDATE organization_memberships AS m
SET clerk_data = m.clerk_data - 'public_user_data',
    updated_at = now()
FROM (
    SELECT x.membership_id
    FROM organization_memberships x
    WHERE (x.clerk_user_id = ANY(@clerk_user_ids::text[]) OR x.clerk_org_id = ANY(@clerk_org_ids::text[]))
      AND x.clerk_data -> 'public_user_data' IS NOT NULL
      AND (EXISTS (SELECT 1 FROM users u WHERE u.clerk_user_id = x.clerk_user_id AND u.deleted_at IS NOT NULL)
           OR EXISTS (SELECT 1 FROM organizations o WHERE o.clerk_org_id = x.clerk_org_id AND o.deleted_at IS NOT NULL))
    ORDER BY x.membership_id
    FOR UPDATE OF x
) s
WHERE m.membership_id = s.membership_id;
