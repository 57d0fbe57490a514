-- 0008_adopt_live.sql
-- Why: a live Supabase or RDS database is messier than the original DDL
-- (behaviour §4.3). This file makes what the function created private, keeps
-- legacy data working, and is safe on a database migrated before it.

-- 1. Nothing new is public. On Supabase, anon and authenticated get every
--    privilege on new tables by default and PostgREST serves them: the stored
--    order requests (order_idempotency) and the outbox (batch_events) must not
--    be readable or writable with the public anon key. Row-level security with
--    no policy refuses every row to every role but the owner (and BYPASSRLS
--    roles, such as the function's own role, see sql/function-role.sql).
--    Tables that existed before the function are not touched.
DO $$
DECLARE
    t    text;
    rel  regclass;
    role text;
BEGIN
    FOREACH t IN ARRAY ARRAY['batch_events', 'order_idempotency', 'batch_processor_migrations'] LOOP
        rel := to_regclass(format('%I.%I', current_schema(), t));
        CONTINUE WHEN rel IS NULL;
        EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', rel);
        FOREACH role IN ARRAY ARRAY['anon', 'authenticated'] LOOP
            IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = role) THEN
                EXECUTE format('REVOKE ALL ON %s FROM %I', rel, role);
            END IF;
        END LOOP;
    END LOOP;
    rel := to_regclass(format('%I.batch_events_id_seq', current_schema()));
    IF rel IS NOT NULL THEN
        FOREACH role IN ARRAY ARRAY['anon', 'authenticated'] LOOP
            IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = role) THEN
                EXECUTE format('REVOKE ALL ON SEQUENCE %s FROM %I', rel, role);
            END IF;
        END LOOP;
    END IF;
END
$$;

-- 2. Deleting an order deletes its idempotency record (the original cascaded):
--    an admin can delete an order that had a key.
DO $$
DECLARE
    c record;
BEGIN
    FOR c IN
        SELECT k.conname FROM pg_constraint k
         WHERE k.conrelid = 'order_idempotency'::regclass AND k.contype = 'f'
           AND k.confrelid = 'orders'::regclass AND k.confdeltype <> 'c'
    LOOP
        EXECUTE format('ALTER TABLE order_idempotency DROP CONSTRAINT %I', c.conname);
        ALTER TABLE order_idempotency ADD CONSTRAINT order_idempotency_order_id_fkey
            FOREIGN KEY (order_id) REFERENCES orders (id) ON DELETE CASCADE;
    END LOOP;
END
$$;

-- 3. The style lookup index holds a hash of the variant, not the variant:
--    a btree entry must fit a page, and a legacy variant of a few kilobytes
--    made every insert into its batch fail ("index row size exceeds maximum").
--    process-order asks for md5(variant) = md5($v) AND variant = $v.
DROP INDEX IF EXISTS batch_contributions_batch_variant_idx;
CREATE INDEX IF NOT EXISTS batch_contributions_batch_variant_md5_idx
    ON batch_contributions (batch_id, md5(style_details ->> 'variant'));

-- 4. Legacy supplier orders are linked to their batch. The original function
--    named them 'BATCH-' || the first 8 characters of the batch id (ours are
--    'BATCH-' || the whole id); one that names exactly one batch of the same
--    supplier, which has no linked supplier order yet, gets that batch_id —
--    so confirming the batch reuses it instead of making a second one.
WITH candidates AS (
    SELECT so.id AS supplier_order_id, b.id AS batch_id
      FROM supplier_orders so
      JOIN production_batches b
        ON b.supplier_id = so.supplier_id
       AND (lower(so.order_number) = 'batch-' || left(b.id::text, 8)
            OR lower(so.order_number) = 'batch-' || b.id::text)
     WHERE so.batch_id IS NULL
       AND NOT EXISTS (SELECT 1 FROM supplier_orders linked WHERE linked.batch_id = b.id)
), unambiguous AS (
    SELECT c.supplier_order_id, c.batch_id
      FROM candidates c
     WHERE (SELECT count(*) FROM candidates x WHERE x.supplier_order_id = c.supplier_order_id) = 1
       AND (SELECT count(*) FROM candidates x WHERE x.batch_id = c.batch_id) = 1
)
UPDATE supplier_orders so
   SET batch_id = u.batch_id
  FROM unambiguous u
 WHERE so.id = u.supplier_order_id;
