-- 0004_order_idempotency.sql
-- Why: process-order is idempotent (behaviour §6 step 1, Stripe semantics): the same
-- key with the same request answers the ORIGINAL response again; the same key
-- with a different request is a 409. The original response (isNewBatch, the
-- fill after the order) cannot be rebuilt from the rows later, so it is kept
-- here beside the request it answered. `orders.idempotency_key` (unique) stays
-- the key of record; this table is its side car, one row per keyed order.
CREATE TABLE IF NOT EXISTS order_idempotency (
    idempotency_key text PRIMARY KEY,
    order_id        uuid NOT NULL REFERENCES orders (id),
    request         jsonb NOT NULL,
    response        jsonb NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);
