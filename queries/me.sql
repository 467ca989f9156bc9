-- name: GetMe :one
-- Everything GET /auth/me answers, in one round trip.
SELECT u.user_id, u.clerk_user_id, u.email, u.username, u.first_name, u.last_name, u.image_url,
       u.clerk_created_at, u.clerk_updated_at, u.deleted_at,
       s.tier, s.status, s.started_at,
       m.period_start, m.api_calls, m.campaigns
FROM users u
JOIN subscriptions s ON s.user_id = u.user_id
JOIN usage_metrics m ON m.user_id = u.user_id
WHERE u.clerk_user_id = @clerk_user_id;
