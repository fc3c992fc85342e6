-- Each data subject's key (AES-GCM, 256 bits), apart from the events it encrypts (see
-- infra/eventstore/personal.py). Erasure sets `key` to NULL for good: the row stays, so no key is
-- made again for an erased subject.
CREATE TABLE subject_keys (
    subject_id  uuid        PRIMARY KEY,
    key         bytea,
    created_at  timestamptz NOT NULL DEFAULT now(),
    erased_at   timestamptz
);
ALTER TABLE subject_keys OWNER TO chronicle_owner;
-- Erasure vacuums the table so a destroyed key's old row version leaves the data files (PostgreSQL
-- 17 and later let the service role do that; earlier ones skip the vacuum with a warning).
DO $$ BEGIN
    EXECUTE 'GRANT MAINTAIN ON subject_keys TO chronicle_service';
EXCEPTION WHEN syntax_error OR undefined_object OR feature_not_supported THEN NULL;
END $$;
