-- +goose Up

-- organizations is the projection of Clerk organizations, folded like users: organization_id is
-- UUIDv5(NameSpaceURL, "clerk:" || clerk_org_id), computed by the worker; every Clerk-derived
-- column is NULL on a tombstone (deleted_at set).
CREATE TABLE organizations (
    organization_id  uuid        PRIMARY KEY,
    clerk_org_id     text        NOT NULL UNIQUE,
    name             text,
    slug             text,
    image_url        text,
    clerk_data       jsonb,
    clerk_created_at timestamptz,
    clerk_updated_at timestamptz,
    -- With clerk_updated_at, the row's version: svix-ids compare as bytes.
    version_event_id text        COLLATE "C",
    deleted_at       timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT organizations_version_whole CHECK ((clerk_updated_at IS NULL) = (version_event_id IS NULL)),
    CONSTRAINT organizations_tombstone_scrubbed CHECK (
        deleted_at IS NULL OR (
            name IS NULL AND slug IS NULL AND image_url IS NULL AND clerk_data IS NULL
            AND clerk_created_at IS NULL AND clerk_updated_at IS NULL AND version_event_id IS NULL))
);

-- organization_memberships is the projection of Clerk organization memberships. It refers to its
-- organization and its user by Clerk id, never by a foreign key: a membership may arrive before
-- either. A membership is live while it, its organization and its user are all live, which the
-- readers derive by joining; the worker keeps clerk_data free of the user's personal data
-- (public_user_data) once the organization or the user is a tombstone.
CREATE TABLE organization_memberships (
    membership_id       uuid        PRIMARY KEY,
    clerk_membership_id text        NOT NULL UNIQUE,
    clerk_org_id        text        NOT NULL,
    clerk_user_id       text        NOT NULL,
    role                text,
    clerk_data          jsonb,
    clerk_created_at    timestamptz,
    clerk_updated_at    timestamptz,
    version_event_id    text        COLLATE "C",
    deleted_at          timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT organization_memberships_version_whole CHECK ((clerk_updated_at IS NULL) = (version_event_id IS NULL)),
    CONSTRAINT organization_memberships_tombstone_scrubbed CHECK (
        deleted_at IS NULL OR (
            role IS NULL AND clerk_data IS NULL AND clerk_created_at IS NULL
            AND clerk_updated_at IS NULL AND version_event_id IS NULL))
);

-- "Memberships of a user" (/auth/me, a user tombstone's scrub) and "members of an organization"
-- (GET /organizations/{id}, ordered by clerk_user_id as bytes; an organization tombstone's scrub).
CREATE INDEX organization_memberships_user ON organization_memberships (clerk_user_id);
CREATE INDEX organization_memberships_org ON organization_memberships (clerk_org_id, clerk_user_id COLLATE "C");

-- +goose Down
DROP TABLE organization_memberships;
DROP TABLE organizations;
