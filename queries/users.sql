-- name: UpsertUsers :execrows
-- Applies at most one version per user (the batch is folded first). A live row changes only when
-- the incoming version (clerk_updated_at, version_event_id) is newer, or equal when reapplying
-- after a projection fix; a tombstone never changes. rows is a JSON array of objects with the
-- keys of the column list below.
INSERT INTO users AS u (
    user_id, clerk_user_id, email, username, first_name, last_name, image_url,
    clerk_data, clerk_created_at, clerk_updated_at, version_event_id)
SELECT r.user_id, r.clerk_user_id, r.email, r.username, r.first_name, r.last_name, r.image_url,
       r.clerk_data, r.clerk_created_at, r.clerk_updated_at, r.version_event_id
FROM jsonb_to_recordset(@rows::jsonb) AS r(
    user_id uuid, clerk_user_id text, email text, username text, first_name text, last_name text,
    image_url text, clerk_data jsonb, clerk_created_at timestamptz, clerk_updated_at timestamptz,
    version_event_id text)
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
    updated_at       = now()
WHERE u.deleted_at IS NULL
  AND (u.clerk_updated_at IS NULL
       OR (excluded.clerk_updated_at, excluded.version_event_id COLLATE "C")
          > (u.clerk_updated_at, u.version_event_id COLLATE "C")
       OR (@reapply::boolean
           AND (excluded.clerk_updated_at, excluded.version_event_id COLLATE "C")
               = (u.clerk_updated_at, u.version_event_id COLLATE "C")));

-- name: TombstoneUsers :execrows
-- Marks users deleted, scrubbing every Clerk-derived column. deleted_at is the earliest delete
-- event's timestamp, so the tombstone does not depend on the order deletes arrive in.
INSERT INTO users AS u (user_id, clerk_user_id, deleted_at)
SELECT unnest(@user_ids::uuid[]), unnest(@clerk_user_ids::text[]), unnest(@deleted_ats::timestamptz[])
ON CONFLICT (clerk_user_id) DO UPDATE SET
    email            = NULL,
    username         = NULL,
    first_name       = NULL,
    last_name        = NULL,
    image_url        = NULL,
    clerk_data       = NULL,
    clerk_created_at = NULL,
    clerk_updated_at = NULL,
    version_event_id = NULL,
    deleted_at       = LEAST(u.deleted_at, excluded.deleted_at),
    updated_at       = now()
WHERE u.deleted_at IS NULL OR excluded.deleted_at < u.deleted_at;

-- name: EnsureSubscriptions :execrows
-- Gives every user without one its free, active subscription. subscription_id is derived from
-- the user_id by the caller so rebuilds keep it.
INSERT INTO subscriptions (subscription_id, user_id)
SELECT unnest(@subscription_ids::uuid[]), unnest(@user_ids::uuid[])
ON CONFLICT (user_id) DO NOTHING;

-- name: CancelSubscriptions :execrows
UPDATE subscriptions
SET status = 'canceled', canceled_at = now(), updated_at = now()
WHERE user_id = ANY(@user_ids::uuid[]) AND status <> 'canceled';

-- name: ClearUsagePeriods :execrows
-- A tombstone keeps no Clerk-derived data, the sign-up time included.
UPDATE usage_metrics
SET period_start = NULL, updated_at = now()
WHERE user_id = ANY(@user_ids::uuid[]) AND period_start IS NOT NULL;

-- name: EnsureUsageMetrics :execrows
-- Gives every user without one its zeroed usage row; period_start is the Clerk sign-up time when
-- known (NULL for a user first seen deleted).
INSERT INTO usage_metrics (user_id, period_start)
SELECT unnest(@user_ids::uuid[]), unnest(@period_starts::timestamptz[])
ON CONFLICT (user_id) DO NOTHING;
