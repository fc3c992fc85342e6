-- Tamper evidence and the auditors' queries.

-- Every event's hash over its stored content, computed by the writer at append time (see
-- infra/eventstore/tamper.py). Events appended before this migration get theirs from `chronicle migrate`.
ALTER TABLE events ADD COLUMN hash bytea;

-- Seals: consecutive ranges of the log, in total order, each with the Merkle root of its events'
-- hashes and chained to the previous seal. Written by the active relay, in the transaction that
-- records its progress.
CREATE TABLE seals (
    seq           bigint      PRIMARY KEY,
    from_position bigint      NOT NULL,  -- exclusive: the previous seal's to_position (0 for the first)
    to_position   bigint      NOT NULL,  -- inclusive
    event_count   integer     NOT NULL,
    merkle_root   bytea       NOT NULL,
    previous_hash bytea       NOT NULL,
    seal_hash     bytea       NOT NULL,
    sealed_at     timestamptz NOT NULL DEFAULT now()
);

-- The auditors' filters over the log.
CREATE INDEX events_type_idx ON events (type, notification_id);
CREATE INDEX events_actor_idx ON events (actor_id, notification_id) WHERE actor_id IS NOT NULL;
CREATE INDEX events_correlation_idx ON events (correlation_id) WHERE correlation_id IS NOT NULL;
CREATE INDEX events_recorded_at_idx ON events USING brin (recorded_at);

-- What operators did to projections (skips, resets, switches): who, what, when.
CREATE TABLE operations_log (
    id          bigserial   PRIMARY KEY,
    operator    text        NOT NULL,
    operation   text        NOT NULL,
    projection  text,
    detail      jsonb       NOT NULL DEFAULT '{}',
    at          timestamptz NOT NULL DEFAULT now()
);

-- A projection may be asked to pause (while a rebuild compares and switches versions).
ALTER TABLE projections ADD COLUMN paused boolean NOT NULL DEFAULT false;
