-- sql/function-role.sql — the login role the function runs its jobs as.
--
-- Run it as the owner of the tables (on Supabase: the `postgres` user, from
-- the SQL editor or psql) AFTER `migrate` has run, in the database the
-- function uses; run it again after a later migrate adds tables or columns.
-- It is idempotent. It needs no superuser: hosted Supabase's `postgres` has
-- CREATEROLE and owns the tables, which is all it takes. Then give the role a
-- password and put it in the function's secret:
--     ALTER ROLE batch_processor_fn PASSWORD '<a long random password>';
-- Migrations keep running as the owner (they create and alter tables); the
-- jobs run as this role.
--
-- With ADMIN_ROLES_TABLE (the app's roles table, public.user_roles in this
-- app) name it first, in the same session, so the role may read it:
--     SET batch_processor.admin_roles_table = 'public.user_roles';
-- (psql: `psql -c "SET batch_processor.admin_roles_table = 'public.user_roles'" -f sql/function-role.sql`;
-- the dashboard's SQL editor: that SET as the first line, then this file.)
--
-- What it may do is exactly what the jobs do, listed once in the table below:
--   read the supplier terms; read, insert and update batches and orders; read
--   and insert contributions, supplier orders, events and idempotency
--   records; insert history rows; mark events delivered; read the roles
--   table when one is named. No DELETE, no TRUNCATE, it owns nothing, it is no
--   superuser, it cannot create roles or databases, and it has no BYPASSRLS.
--
-- Row-level security: the app's tables have RLS with policies written for end
-- users (`auth.uid()`, roles in `user_roles`), which would show a system job
-- no batch and no order. This file adds, on exactly the tables the role
-- touches and for exactly the commands it runs, policies of its own:
-- `CREATE POLICY "batch_processor_fn: <command>" ON <table> FOR <command> TO
-- batch_processor_fn USING (true)`. They apply to this role only; the app's
-- own policies are not touched, and no other role gains anything. The
-- function's own tables (batch_events, order_idempotency) have RLS on and get
-- the same policies. (Earlier versions gave the role BYPASSRLS instead, which
-- only a superuser may grant; run by a superuser, this file takes it away.)
--
-- To let the role do more (a later migration's new column or table), add a
-- line to the table in step 3 and run the file again.

-- 1. The role.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'batch_processor_fn') THEN
        CREATE ROLE batch_processor_fn LOGIN NOINHERIT;
    END IF;
EXCEPTION
    -- Roles are cluster-wide: another database's run may have just created it.
    WHEN duplicate_object OR unique_violation THEN NULL;
END
$$;

-- 2. Its attributes. Only a superuser may change SUPERUSER, REPLICATION or
--    BYPASSRLS (naming them at all is refused otherwise); an owner with
--    CREATEROLE may set the rest.
DO $$
DECLARE
    me pg_roles;
    fn pg_roles;
BEGIN
    SELECT * INTO me FROM pg_roles WHERE rolname = current_user;
    IF me.rolsuper THEN
        ALTER ROLE batch_processor_fn LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
    ELSE
        BEGIN
            ALTER ROLE batch_processor_fn LOGIN NOCREATEDB NOCREATEROLE;
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE WARNING 'batch_processor_fn: % may not alter this role; its attributes are left as they are',
                current_user;
        END;
        SELECT * INTO fn FROM pg_roles WHERE rolname = 'batch_processor_fn';
        IF fn.rolsuper OR fn.rolbypassrls OR fn.rolreplication THEN
            RAISE WARNING 'batch_processor_fn has SUPERUSER, BYPASSRLS or REPLICATION (an older version of this file '
                'gave it BYPASSRLS); it needs none of them: ask a superuser for '
                'ALTER ROLE batch_processor_fn NOSUPERUSER NOBYPASSRLS NOREPLICATION';
        END IF;
    END IF;
END
$$;

GRANT USAGE ON SCHEMA public TO batch_processor_fn;

-- 3. What it may do, table by table: the privileges it is granted, and the
--    commands its own row-level-security policies allow. Nothing else: no
--    DELETE or TRUNCATE anywhere, no access to batch_processor_migrations.
DO $$
DECLARE
    r       record;
    rel     regclass;
    command text;
    stale   record;
BEGIN
    FOR r IN SELECT * FROM (VALUES
        -- process-order picks the cheapest active supplier.
        ('supplier_mou_terms',   'SELECT',                         ARRAY['SELECT']),
        -- process-order opens and fills batches; orchestrate and review-batch move them.
        ('production_batches',   'SELECT, INSERT, UPDATE',         ARRAY['SELECT', 'INSERT', 'UPDATE']),
        -- process-order places orders; cancels cancel them.
        ('orders',               'SELECT, INSERT, UPDATE',         ARRAY['SELECT', 'INSERT', 'UPDATE']),
        ('batch_contributions',  'SELECT, INSERT',                 ARRAY['SELECT', 'INSERT']),
        ('order_status_history', 'INSERT',                         ARRAY['INSERT']),
        -- confirms make (or reuse) one supplier order per batch.
        ('supplier_orders',      'SELECT, INSERT',                 ARRAY['SELECT', 'INSERT']),
        -- the outbox: written with every change; delivery marks what EventBridge
        -- accepted (published_at) or could never take (publish_error).
        -- delivery also leases rows, counts EventBridge's refusals and backs off
        -- (publish_attempts, next_attempt_at, leased_until: migration 0010).
        ('batch_events',         'SELECT, INSERT, UPDATE (published_at, publish_error, publish_attempts, next_attempt_at, leased_until)',
                                                                   ARRAY['SELECT', 'INSERT', 'UPDATE']),
        -- process-order's recorded answers, for idempotent replays.
        ('order_idempotency',    'SELECT, INSERT',                 ARRAY['SELECT', 'INSERT'])
    ) AS t(tbl, privileges, commands)
    LOOP
        rel := to_regclass(format('%I.%I', current_schema(), r.tbl));
        IF rel IS NULL THEN
            RAISE EXCEPTION 'table %.% does not exist: run migrate first', current_schema(), r.tbl;
        END IF;
        EXECUTE format('REVOKE ALL ON %s FROM batch_processor_fn', rel);
        EXECUTE format('GRANT %s ON %s TO batch_processor_fn', r.privileges, rel);
        -- Its own policies, replaced each run; a command it no longer needs loses its policy.
        FOR stale IN SELECT p.polname FROM pg_policy p
                      WHERE p.polrelid = rel AND starts_with(p.polname, 'batch_processor_fn: ') LOOP
            EXECUTE format('DROP POLICY %I ON %s', stale.polname, rel);
        END LOOP;
        FOREACH command IN ARRAY r.commands LOOP
            EXECUTE format('CREATE POLICY %I ON %s AS PERMISSIVE FOR %s TO batch_processor_fn %s',
                           'batch_processor_fn: ' || lower(command), rel, command,
                           CASE command WHEN 'SELECT' THEN 'USING (true)'
                                        WHEN 'INSERT' THEN 'WITH CHECK (true)'
                                        ELSE 'USING (true) WITH CHECK (true)' END);
        END LOOP;
    END LOOP;
END
$$;

GRANT USAGE ON SEQUENCE batch_events_id_seq TO batch_processor_fn;

-- 4. The app's roles table (ADMIN_ROLES_TABLE), when named with
--    `SET batch_processor.admin_roles_table` (see the top): read only.
DO $$
DECLARE
    named text := nullif(trim(current_setting('batch_processor.admin_roles_table', true)), '');
    rel   regclass;
BEGIN
    IF named IS NULL THEN
        RETURN;
    END IF;
    rel := to_regclass(named);
    IF rel IS NULL THEN
        RAISE EXCEPTION 'batch_processor.admin_roles_table names %, which does not exist', named;
    END IF;
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO batch_processor_fn',
                   (SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                     WHERE c.oid = rel));
    EXECUTE format('REVOKE ALL ON %s FROM batch_processor_fn', rel);
    EXECUTE format('GRANT SELECT ON %s TO batch_processor_fn', rel);
    EXECUTE format('DROP POLICY IF EXISTS %I ON %s', 'batch_processor_fn: select', rel);
    EXECUTE format('CREATE POLICY %I ON %s AS PERMISSIVE FOR SELECT TO batch_processor_fn USING (true)',
                   'batch_processor_fn: select', rel);
END
$$;
