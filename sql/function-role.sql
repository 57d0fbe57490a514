-- sql/function-role.sql — the login role the function runs its jobs as.
--
-- Run it as the database owner (on Supabase: the `postgres` user, from the SQL
-- editor or psql) AFTER `migrate` has run, in the database the function uses;
-- run it again after a later migrate adds tables. It is idempotent. Then give
-- the role a password and put it in the function's secret:
--     ALTER ROLE batch_processor_fn PASSWORD '<a long random password>';
-- Migrations keep running as the owner (they create and alter tables); the
-- jobs run as this role.
--
-- What it may do is exactly what the jobs do:
--   read the supplier terms; read, insert and update batches, orders and
--   their contributions; insert history rows, supplier orders, events and
--   idempotency records; mark events delivered; read what it wrote. No DELETE, no TRUNCATE, it owns
--   nothing, it is no superuser and cannot create roles or databases.
--
-- BYPASSRLS: the app's own tables have row-level security with policies
-- written for end users (`auth.uid()`, roles in `user_roles`); the function
-- acts for the system, across every buyer and supplier. Without BYPASSRLS it
-- would see no batch and no order. (The alternative, policies `TO
-- batch_processor_fn USING (true)` on those seven tables, changes the app's
-- policies; that is the operator's choice, not ours.) The function's own
-- tables have RLS on and no policy, so they are private to the owner and to
-- this role.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'batch_processor_fn') THEN
        CREATE ROLE batch_processor_fn LOGIN;
    END IF;
EXCEPTION
    -- Roles are cluster-wide: another database's run may have just created it.
    WHEN duplicate_object OR unique_violation THEN NULL;
END
$$;

ALTER ROLE batch_processor_fn LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION BYPASSRLS;

GRANT USAGE ON SCHEMA public TO batch_processor_fn;

-- process-order picks the cheapest active supplier.
GRANT SELECT ON supplier_mou_terms TO batch_processor_fn;
-- process-order opens and fills batches; orchestrate and review-batch move them.
GRANT SELECT, INSERT, UPDATE ON production_batches TO batch_processor_fn;
-- process-order places orders; cancels cancel them.
GRANT SELECT, INSERT, UPDATE ON orders TO batch_processor_fn;
GRANT SELECT, INSERT ON batch_contributions TO batch_processor_fn;
GRANT INSERT ON order_status_history TO batch_processor_fn;
-- confirms make (or reuse) one supplier order per batch.
GRANT SELECT, INSERT ON supplier_orders TO batch_processor_fn;
-- the outbox: written with every change; the nearing-target event once per batch;
-- delivery marks what EventBridge accepted (published_at) or could never take (publish_error).
GRANT SELECT, INSERT ON batch_events TO batch_processor_fn;
GRANT UPDATE (published_at, publish_error) ON batch_events TO batch_processor_fn;
-- delivery leases rows, counts EventBridge's refusals and backs off (migration 0010, issue 21).
GRANT UPDATE (publish_attempts, next_attempt_at, leased_until) ON batch_events TO batch_processor_fn;
GRANT USAGE ON SEQUENCE batch_events_id_seq TO batch_processor_fn;
-- process-order's recorded answers, for idempotent replays.
GRANT SELECT, INSERT ON order_idempotency TO batch_processor_fn;

-- Nothing else: no DELETE or TRUNCATE anywhere, no access to batch_processor_migrations.
REVOKE DELETE, TRUNCATE ON supplier_mou_terms, production_batches, orders, batch_contributions,
    order_status_history, supplier_orders, batch_events, order_idempotency FROM batch_processor_fn;
