-- name: ApplyEvents :many
-- Applies a batch of user events in one statement, so that without an explicit transaction the
-- batch is one round trip and one commit. The events come as one array per column, one element
-- per distinct svix-id in svix-id order (nullable text columns as varchar[]: see sqlc.yaml;
-- clerk_data as the raw JSON Clerk sent); a delete has deleted_at set (its timestamp) and every
-- Clerk-derived column NULL. In order:
--   1. fresh: the svix-ids go into the ledger, in svix-id order (the lock order every worker
--      shares); only those not there before are applied (all of them with @reapply).
--   2. r: the fold, one event per user: any delete beats every live version, the earliest
--      delete (then the smaller svix-id) first; between live versions the greatest
--      (updated_at, svix-id as bytes) wins.
--   3. written: the users upsert, in clerk_user_id order. A live version replaces a live row only
--      when its version (clerk_updated_at, version_event_id as bytes) is newer, or equal when
--      @reapply repairs a projection; a tombstone replaces a live row and an older tombstone (the
--      earliest delete wins); nothing replaces a tombstone otherwise. Every conflicting row stays
--      locked to the end of the transaction even when it is not updated.
--   4. subs, metrics: for every users row written, a new row gets its subscription (free and
--      active, or canceled for a tombstone, also when the delete was the first event seen) and
--      a tombstone's active one is canceled; a new row gets its usage row (zeros), and
--      period_start follows the user's Clerk sign-up time (NULL on a tombstone). Tier and the
--      counters belong to the product and are never touched.
--      Every part of a statement sees the same snapshot, so they take the users' new values from
--      written's RETURNING and never re-read users; their "already right" checks read
--      subscriptions and usage_metrics as they were before the statement, which is right as only
--      this statement writes them. They sort all of written before writing, so users are locked
--      first (in clerk_user_id order), then subscriptions and usage_metrics (in user_id order).
-- It returns one row per event it applied or folded (fresh, or all with @reapply): applied when
-- the event won its user's fold and the users row was written; an event not returned was
-- already in the ledger.
WITH e AS (
    SELECT unnest(@event_ids::text[]) AS event_id,
           unnest(@event_types::text[]) AS event_type,
           unnest(@stream_seqs::bigint[]) AS stream_seq,
           unnest(@user_ids::uuid[]) AS user_id,
           unnest(@subscription_ids::uuid[]) AS subscription_id,
           unnest(@clerk_user_ids::text[]) AS clerk_user_id,
           unnest(@emails::varchar[]) AS email,
           unnest(@usernames::varchar[]) AS username,
           unnest(@first_names::varchar[]) AS first_name,
           unnest(@last_names::varchar[]) AS last_name,
           unnest(@image_urls::varchar[]) AS image_url,
           unnest(@clerk_data::jsonb[]) AS clerk_data,
           unnest(@clerk_created_ats::timestamptz[]) AS clerk_created_at,
           unnest(@clerk_updated_ats::timestamptz[]) AS clerk_updated_at,
           unnest(@deleted_ats::timestamptz[]) AS deleted_at
), fresh AS (
    INSERT INTO processed_events (event_id, event_type, clerk_user_id, stream_seq)
    SELECT e.event_id, e.event_type, e.clerk_user_id, e.stream_seq
    FROM e
    ORDER BY e.event_id COLLATE "C"
    ON CONFLICT (event_id) DO NOTHING
    RETURNING event_id
), r AS (
    SELECT DISTINCT ON (e.clerk_user_id COLLATE "C") e.*,
           CASE WHEN e.deleted_at IS NULL THEN e.event_id END AS version_event_id
    FROM e
    WHERE @reapply::boolean OR e.event_id IN (SELECT f.event_id FROM fresh f)
    -- Per user: deletes first, the earliest first, a tie to the smaller svix-id; then live
    -- versions, the newest first, a tie to the greater svix-id.
    ORDER BY e.clerk_user_id COLLATE "C",
             e.deleted_at NULLS LAST,
             e.clerk_updated_at DESC,
             CASE WHEN e.deleted_at IS NOT NULL THEN e.event_id END COLLATE "C",
             e.event_id COLLATE "C" DESC
), written AS (
    INSERT INTO users AS u (
        user_id, clerk_user_id, email, username, first_name, last_name, image_url,
        clerk_data, clerk_created_at, clerk_updated_at, version_event_id, deleted_at)
    SELECT r.user_id, r.clerk_user_id, r.email, r.username, r.first_name, r.last_name, r.image_url,
           r.clerk_data, r.clerk_created_at, r.clerk_updated_at, r.version_event_id, r.deleted_at
    FROM r
    ORDER BY r.clerk_user_id COLLATE "C"
    ON CONFLICT (clerk_user_id) DO UPDATE SET
        email            = excluded.email,
        username         = excluded.username,
        first_name       = excluded.first_name,
        last_name        = excluded.last_name,
        image_url        = excluded.image_url,
        clerk_data       = excluded.clerk_data,
        clerk_created_at = excluded.clerk_created_at,
        clerk_updated_at = excluded.clerk_updated_at,
        version_event_id = excluded.version_event_id,
        deleted_at       = LEAST(u.deleted_at, excluded.deleted_at),
        updated_at       = now()
    WHERE CASE
        WHEN excluded.deleted_at IS NOT NULL THEN
            u.deleted_at IS NULL
            OR excluded.deleted_at < u.deleted_at
            OR (@reapply::boolean AND excluded.deleted_at = u.deleted_at)
        ELSE
            u.deleted_at IS NULL
            AND (u.clerk_updated_at IS NULL
                 OR (excluded.clerk_updated_at, excluded.version_event_id COLLATE "C")
                    > (u.clerk_updated_at, u.version_event_id COLLATE "C")
                 OR (@reapply::boolean
                     AND (excluded.clerk_updated_at, excluded.version_event_id COLLATE "C")
                         = (u.clerk_updated_at, u.version_event_id COLLATE "C")))
        END
    -- xmax is 0 on a row this statement inserted and set (to our own lock) on one it updated.
    RETURNING u.user_id, u.clerk_user_id, u.clerk_created_at, u.deleted_at, (u.xmax = 0) AS inserted
), subs AS (
    INSERT INTO subscriptions AS s (subscription_id, user_id, status, canceled_at)
    SELECT r.subscription_id, w.user_id,
           CASE WHEN w.deleted_at IS NULL THEN 'active' ELSE 'canceled' END,
           CASE WHEN w.deleted_at IS NULL THEN NULL ELSE now() END
    FROM written w
    JOIN r ON r.user_id = w.user_id
    -- Skip what is already right (the common case: an update of a live user), so that those rows
    -- are not even locked or looked up: a row this statement updated got its subscription when it
    -- was inserted, so only a new row or a tombstone needs one. A scalar subquery, not NOT EXISTS:
    -- the planner cannot turn it into a hash join over the whole table, so each user is one index
    -- lookup whatever the statistics.
    WHERE w.inserted
       OR w.deleted_at IS NOT NULL
          AND NOT coalesce((SELECT x.status = 'canceled' FROM subscriptions x WHERE x.user_id = w.user_id), false)
    ORDER BY w.user_id
    ON CONFLICT (user_id) DO UPDATE SET
        status      = 'canceled',
        canceled_at = now(),
        updated_at  = now()
    WHERE excluded.status = 'canceled' AND s.status <> 'canceled'
), metrics AS (
    INSERT INTO usage_metrics AS m (user_id, period_start)
    SELECT w.user_id, w.clerk_created_at
    FROM written w
    WHERE w.inserted
       OR NOT coalesce((SELECT x.period_start IS NOT DISTINCT FROM w.clerk_created_at
                        FROM usage_metrics x WHERE x.user_id = w.user_id), false)
    ORDER BY w.user_id
    ON CONFLICT (user_id) DO UPDATE SET
        period_start = excluded.period_start,
        updated_at   = now()
    WHERE m.period_start IS DISTINCT FROM excluded.period_start
)
SELECT e.event_id::text AS event_id, (w.clerk_user_id IS NOT NULL)::boolean AS applied
FROM e
LEFT JOIN r ON r.event_id = e.event_id
LEFT JOIN written w ON w.clerk_user_id = r.clerk_user_id
WHERE @reapply::boolean OR e.event_id IN (SELECT f.event_id FROM fresh f);
