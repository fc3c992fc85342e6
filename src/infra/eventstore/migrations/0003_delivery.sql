-- Delivery and read-model bookkeeping.

-- The relay's progress: every event at or below `position` is in the JetStream stream, whose
-- sequence was `stream_seq` after it. Written only by the relay that holds the advisory lock, on
-- the connection that holds it.
CREATE TABLE relay_state (
    id          smallint    PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    position    bigint      NOT NULL,
    stream_seq  bigint      NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Each SQL projection version's checkpoint, written in the same transaction as its view.
-- (Redis projections keep theirs in Redis, written by the same Lua script as their view.)
CREATE TABLE projection_checkpoints (
    projection  text        NOT NULL,
    version     integer     NOT NULL,
    position    bigint      NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, version)
);

-- Which version of each projection queries read, and whether it is running or parked.
CREATE TABLE projections (
    projection    text        PRIMARY KEY,
    kind          text        NOT NULL,
    live_version  integer     NOT NULL,
    state         text        NOT NULL DEFAULT 'running',
    parked_at     bigint,
    error         text,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- Events a projection could not apply. The projection stops there until an operator retries or
-- skips the event (never log-and-continue).
CREATE TABLE dead_letters (
    id          bigserial   PRIMARY KEY,
    projection  text        NOT NULL,
    version     integer     NOT NULL,
    position    bigint      NOT NULL,
    event_id    uuid        NOT NULL,
    type        text        NOT NULL,
    error       text        NOT NULL,
    traceback   text        NOT NULL,
    parked_at   timestamptz NOT NULL DEFAULT now(),
    resolved    text,
    resolved_at timestamptz
);
CREATE INDEX dead_letters_open_idx ON dead_letters (projection, version) WHERE resolved IS NULL;

CREATE EXTENSION IF NOT EXISTS pg_trgm;  -- title search in the task list
CREATE SCHEMA identity_views;
CREATE SCHEMA work_views;
