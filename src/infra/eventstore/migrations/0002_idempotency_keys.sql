-- Idempotency keys: a command sent again with the same Idempotency-Key returns the first
-- response. The row is written by the same statement that appends the command's events, so a
-- key is recorded if and only if its events are.
CREATE TABLE idempotency_keys (
    scope        text        NOT NULL,   -- the caller (user id) or 'anonymous'
    key          text        NOT NULL,
    request_hash bytea       NOT NULL,   -- method, path and canonical body of the first request
    status       smallint    NOT NULL,
    aggregate_id uuid        NOT NULL,
    version      bigint      NOT NULL,
    position     bigint      NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, key)
);
