-- Signed seals. Each seal's hash is signed with an Ed25519 key kept outside PostgreSQL
-- (infra/eventstore/signing.py); the key's public half is stored with it. Leaves of a seal's Merkle
-- tree now bind each event's hash to its position.
--
-- The unsigned seals written before this migration proved nothing against anyone who could write
-- to this database (anyone could recompute them): they are dropped, and the relay seals the whole
-- log again, under the key, when it next starts.
DELETE FROM seals;
ALTER TABLE seals
    ADD COLUMN public_key bytea NOT NULL,
    ADD COLUMN signature  bytea NOT NULL;
