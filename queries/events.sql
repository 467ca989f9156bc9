-- name: InsertProcessedEvents :many
-- Records a batch's svix-ids in the ledger and returns the ones not seen before: only those are
-- applied, in the same transaction.
INSERT INTO processed_events (event_id, event_type, clerk_user_id, stream_seq)
SELECT unnest(@event_ids::text[]), unnest(@event_types::text[]), unnest(@clerk_user_ids::text[]),
       unnest(@stream_seqs::bigint[])
ON CONFLICT (event_id) DO NOTHING
RETURNING event_id;

-- name: CountProcessedEvents :one
SELECT count(*) FROM processed_events;

-- name: InsertDeadLetter :one
-- Parks a message that cannot apply. A stream message already parked and not yet retried is
-- not parked twice (for example once by the worker and once from a MaxDeliver advisory).
INSERT INTO dead_letters (event_id, stream_seq, subject, error, payload)
VALUES (@event_id, @stream_seq, @subject, @error, @payload)
ON CONFLICT (stream_seq) WHERE retried_at IS NULL DO NOTHING
RETURNING id;

-- name: ListDeadLetters :many
SELECT id, event_id, stream_seq, subject, error, length(payload)::int AS payload_bytes, created_at, retried_at
FROM dead_letters
WHERE (@include_retried::boolean OR retried_at IS NULL)
ORDER BY id;

-- name: GetDeadLetter :one
SELECT * FROM dead_letters WHERE id = @id;

-- name: PendingDeadLetters :many
SELECT * FROM dead_letters WHERE retried_at IS NULL ORDER BY id;

-- name: MarkDeadLettersRetried :execrows
-- Marks dead letters retried, in the transaction that applied them.
UPDATE dead_letters SET retried_at = now() WHERE id = ANY(@ids::bigint[]) AND retried_at IS NULL;

-- name: IsProcessed :one
-- Whether a svix-id's effect is already committed.
SELECT EXISTS (SELECT 1 FROM processed_events WHERE event_id = @event_id);

-- name: CountPendingDeadLetters :one
-- The dead letters waiting for an operator (the worker's gauge).
SELECT count(*) FROM dead_letters WHERE retried_at IS NULL;
