-- The event store: one table, one total order for every context.
--
-- notification_id is the event's position in the global order. It is
-- (writer's top-level transaction id << 20) + index of the event within its append, so
-- ordering by it orders by (transaction id, index). Writers never wait for each other:
-- there is no table lock and no sequence in the order. Readers make the order gap-free by
-- reading only below the visibility gate,
--     notification_id < pg_snapshot_xmin(pg_current_snapshot()) << 20,
-- i.e. only events of transactions that are finished: every event that becomes visible
-- later belongs to a transaction at or above that gate, so it sorts after everything
-- already read. An open transaction delays readers; it never makes them skip.
CREATE TABLE events (
    notification_id bigint      NOT NULL PRIMARY KEY,
    event_id        uuid        NOT NULL UNIQUE,
    stream_id       uuid        NOT NULL,
    version         bigint      NOT NULL,
    topic           text        NOT NULL,
    type            text        NOT NULL,
    data            bytea       NOT NULL,
    recorded_at     timestamptz NOT NULL,
    actor_id        text,
    command         text,
    correlation_id  uuid,
    causation_id    uuid,
    CONSTRAINT events_stream_version_key UNIQUE (stream_id, version)
);

-- Aggregate snapshots (the eventsourcing library's snapshot store).
CREATE TABLE snapshots (
    stream_id uuid   NOT NULL,
    version   bigint NOT NULL,
    topic     text   NOT NULL,
    data      bytea  NOT NULL,
    PRIMARY KEY (stream_id, version)
);

-- Positions of consumers that record their progress atomically with their own writes
-- (the eventsourcing library's tracking recorder).
CREATE TABLE tracking (
    application_name text   NOT NULL PRIMARY KEY,
    notification_id  bigint NOT NULL
);
