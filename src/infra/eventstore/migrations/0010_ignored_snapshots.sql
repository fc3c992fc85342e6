-- Snapshots found to disagree with a replay of their stream (by the write side when it loads one,
-- or by `chronicle audit verify`). Such a snapshot is never used again by the process that found
-- it; verify finds it again every time it runs.
CREATE TABLE ignored_snapshots (
    stream_id      uuid        NOT NULL,
    version        bigint      NOT NULL,
    detail         text        NOT NULL,
    found_by       text        NOT NULL,
    found_at       timestamptz NOT NULL DEFAULT now(),
    last_found_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stream_id, version)
);
ALTER TABLE ignored_snapshots OWNER TO chronicle_owner;
