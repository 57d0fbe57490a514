-- 0003_batch_events.sql
-- Why: batch_events did not exist in the original database (behaviour §4.1/§4.2).
-- It is the outbox and audit trail downstream workers (refunds,
-- notifications, production planning) read. Append-only and cheap: no FKs to
-- batches/orders, no triggers. The partial unique index makes
-- 'batch.nearing_target' at-most-once per batch; the code inserts it with
--   ON CONFLICT (batch_id) WHERE event_type = 'batch.nearing_target' DO NOTHING
-- Runs inside the runner's transaction: no BEGIN/COMMIT, no CONCURRENTLY.

CREATE TABLE IF NOT EXISTS batch_events (
    id         bigserial PRIMARY KEY,
    batch_id   uuid NOT NULL,
    order_id   uuid NULL,
    event_type text NOT NULL CONSTRAINT batch_events_event_type_check
                    CHECK (event_type IN ('batch.confirmed', 'batch.needs_review', 'batch.cancelled',
                                          'batch.nearing_target', 'order.cancelled',
                                          'order.refund_requested')),
    payload    jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Events of one batch (audit, review screens, tests).
CREATE INDEX IF NOT EXISTS batch_events_batch_id_idx
    ON batch_events (batch_id);

-- At most one 'batch.nearing_target' per batch (ON CONFLICT arbiter).
CREATE UNIQUE INDEX IF NOT EXISTS batch_events_nearing_target_once
    ON batch_events (batch_id)
    WHERE event_type = 'batch.nearing_target';
