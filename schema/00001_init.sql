-- +goose Up

-- users is the projection of Clerk users. user_id is UUIDv5(NameSpaceURL, "clerk:" || clerk_user_id),
-- computed by the worker, so it is stable across replays and rebuilds. Every Clerk-derived column is
-- NULL on a tombstone (deleted_at set): a deleted user keeps only its ids and deleted_at.
CREATE TABLE users (
    user_id          uuid        PRIMARY KEY,
    clerk_user_id    text        NOT NULL UNIQUE,
    email            text,
    username         text,
    first_name       text,
    last_name        text,
    image_url        text,
    clerk_data       jsonb,
    clerk_created_at timestamptz,
    clerk_updated_at timestamptz,
    -- With clerk_updated_at, the row's version: svix-ids compare as bytes.
    version_event_id text        COLLATE "C",
    deleted_at       timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT users_version_whole CHECK ((clerk_updated_at IS NULL) = (version_event_id IS NULL)),
    CONSTRAINT users_tombstone_scrubbed CHECK (
        deleted_at IS NULL OR (
            email IS NULL AND username IS NULL AND first_name IS NULL AND last_name IS NULL
            AND image_url IS NULL AND clerk_data IS NULL AND clerk_created_at IS NULL
            AND clerk_updated_at IS NULL AND version_event_id IS NULL))
);

-- Exactly one subscription per user, created in the same transaction as the user.
CREATE TABLE subscriptions (
    subscription_id uuid        PRIMARY KEY,
    user_id         uuid        NOT NULL UNIQUE REFERENCES users (user_id) ON DELETE CASCADE,
    tier            text        NOT NULL DEFAULT 'free' CHECK (tier <> ''),
    status          text        NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'canceled')),
    started_at      timestamptz NOT NULL DEFAULT now(),
    canceled_at     timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT subscriptions_canceled_at CHECK ((status = 'canceled') = (canceled_at IS NOT NULL))
);

-- Exactly one usage row per user. period_start is the user's Clerk sign-up time (the anchor of its
-- usage periods): a function of the events, NULL on a tombstone. The counters belong to the product.
CREATE TABLE usage_metrics (
    user_id      uuid        PRIMARY KEY REFERENCES users (user_id) ON DELETE CASCADE,
    period_start timestamptz,
    api_calls    bigint      NOT NULL DEFAULT 0 CHECK (api_calls >= 0),
    campaigns    integer     NOT NULL DEFAULT 0 CHECK (campaigns >= 0),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- The ledger: one row per applied svix-id, written in the same transaction as its effect.
CREATE TABLE processed_events (
    event_id      text        COLLATE "C" PRIMARY KEY,
    event_type    text        NOT NULL,
    clerk_user_id text,
    stream_seq    bigint      NOT NULL,
    processed_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX processed_events_clerk_user_id ON processed_events (clerk_user_id);

-- Messages that can never apply, parked for an operator (worker dead-letters list|retry).
CREATE TABLE dead_letters (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id   text,
    stream_seq bigint      NOT NULL,
    subject    text        NOT NULL,
    error      text        NOT NULL,
    payload    bytea       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    retried_at timestamptz
);

-- A stream message is parked at most once while it waits for an operator.
CREATE UNIQUE INDEX dead_letters_pending_seq ON dead_letters (stream_seq) WHERE retried_at IS NULL;

-- +goose Down
DROP TABLE dead_letters;
DROP TABLE processed_events;
DROP TABLE usage_metrics;
DROP TABLE subscriptions;
DROP TABLE users;
