-- An insert-only log.
--
-- Two roles (cluster-wide; made once, shared by every database of the server):
--   chronicle_owner    owns the event store's tables (`events`, `seals`, `snapshots`, …); the
--                      maintenance path below is for its members.
--   chronicle_service  what the services are: SELECT and INSERT on `events` and `seals`, nothing
--                      more there; the usual rights on every other table; and their own view tables
--                      in the views schemas. `chronicle migrate` makes the login named in
--                      CHRONICLE_DATABASE_URL a member of it (infra/eventstore/migrate.py).
DO $$ BEGIN
    CREATE ROLE chronicle_owner NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END $$;
DO $$ BEGIN
    CREATE ROLE chronicle_service NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END $$;

DO $$
DECLARE t text;
BEGIN
    FOR t IN SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'schema_migrations' LOOP
        EXECUTE format('ALTER TABLE public.%I OWNER TO chronicle_owner', t);
    END LOOP;
END $$;

GRANT USAGE ON SCHEMA public TO chronicle_service;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO chronicle_service;
GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO chronicle_service;
REVOKE UPDATE, DELETE, TRUNCATE ON events, seals FROM chronicle_service;
REVOKE UPDATE, DELETE, TRUNCATE ON events, seals FROM PUBLIC;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO chronicle_service;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO chronicle_service;

-- Projections create, switch and drop their versioned tables themselves; tables made before this
-- migration pass to the service role so it can drop them after a rebuild.
DO $$
DECLARE s text; t record;
BEGIN
    FOREACH s IN ARRAY ARRAY['identity_views', 'work_views', 'catalog_views', 'inventory_views', 'ordering_views'] LOOP
        EXECUTE format('GRANT USAGE, CREATE ON SCHEMA %I TO chronicle_service', s);
        FOR t IN SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname = s AND c.relkind IN ('r', 'v', 'S') LOOP
            EXECUTE format('ALTER %s %I.%I OWNER TO chronicle_service',
                           CASE t.relkind WHEN 'v' THEN 'VIEW' WHEN 'S' THEN 'SEQUENCE' ELSE 'TABLE' END, s, t.relname);
        END LOOP;
    END LOOP;
END $$;

-- Refuses UPDATE, DELETE and TRUNCATE on `events` and `seals`, whoever asks (the table owner
-- included), except on the documented maintenance path: a member of chronicle_owner (or a
-- superuser) who first runs `SET LOCAL chronicle.maintenance = 'on'` in the same transaction.
-- `chronicle migrate` takes that path for the hash backfill; nothing else in Chronicle does.
CREATE FUNCTION chronicle_insert_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('chronicle.maintenance', true) = 'on'
       AND pg_has_role(session_user, 'chronicle_owner', 'MEMBER') THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION '% on % refused: the table is insert-only', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'maintenance: as a member of chronicle_owner, SET LOCAL chronicle.maintenance = ''on'' first';
END $$;
CREATE TRIGGER events_insert_only BEFORE UPDATE OR DELETE OR TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION chronicle_insert_only();
CREATE TRIGGER seals_insert_only BEFORE UPDATE OR DELETE OR TRUNCATE ON seals
    FOR EACH STATEMENT EXECUTE FUNCTION chronicle_insert_only();
