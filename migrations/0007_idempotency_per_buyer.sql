-- 0007_idempotency_per_buyer.sql
-- Why: idempotency keys belong to the buyer who sent them (behaviour §6 step 1).
-- One global unique key let buyer B's request meet buyer A's: B got a 409 and
-- learned that A's key exists. Keys are now unique per (buyer_id, key); two
-- buyers with one key get two orders.

-- 1. Drop every unique index (or constraint) on exactly orders(idempotency_key):
--    0002 created one, under its own name or adopting an equivalent.
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT i.indexrelid::regclass AS idx, c.conname
        FROM pg_index i
        LEFT JOIN pg_constraint c ON c.conindid = i.indexrelid AND c.conrelid = i.indrelid
        WHERE i.indrelid = 'orders'::regclass
          AND i.indisunique AND i.indnkeyatts = 1 AND i.indexprs IS NULL
          AND i.indkey[0] = (SELECT attnum FROM pg_attribute
                              WHERE attrelid = 'orders'::regclass AND attname = 'idempotency_key')
    LOOP
        IF r.conname IS NOT NULL THEN
            EXECUTE format('ALTER TABLE orders DROP CONSTRAINT %I', r.conname);
        ELSE
            EXECUTE format('DROP INDEX %s', r.idx);
        END IF;
    END LOOP;
END
$$;

-- 2. The key of record, per buyer. Partial: most orders carry no key.
CREATE UNIQUE INDEX IF NOT EXISTS orders_buyer_idempotency_key_key
    ON orders (buyer_id, idempotency_key) WHERE idempotency_key IS NOT NULL;

-- 3. The side car is keyed by its order (one row per keyed order), not by the
--    bare key, which two buyers may now share.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_constraint c JOIN pg_attribute a
                 ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
                WHERE c.conrelid = 'order_idempotency'::regclass AND c.contype = 'p'
                  AND a.attname = 'idempotency_key') THEN
        EXECUTE (SELECT format('ALTER TABLE order_idempotency DROP CONSTRAINT %I', conname)
                   FROM pg_constraint
                  WHERE conrelid = 'order_idempotency'::regclass AND contype = 'p');
        ALTER TABLE order_idempotency ADD PRIMARY KEY (order_id);
    END IF;
END
$$;
