-- 0009_outbox_delivery.sql
-- Why: batch_events is delivered to EventBridge (behaviour §10). published_at
-- says EventBridge accepted a row; publish_error sets aside a row that can
-- never be delivered (larger than an entry may be). process-order writes
-- 'order.placed' with its order.

ALTER TABLE batch_events ADD COLUMN IF NOT EXISTS published_at timestamptz;
ALTER TABLE batch_events ADD COLUMN IF NOT EXISTS publish_error text;

-- Rows written before delivery existed: those older than a day are history
-- (their batches were decided long ago; a refund worker reading the table has
-- seen them), marked published at their own time so consumers are not flooded
-- on the first run; the last day's rows are delivered.
UPDATE batch_events
   SET published_at = created_at
 WHERE published_at IS NULL AND publish_error IS NULL
   AND created_at < now() - interval '1 day';

-- The publisher's claim: pending rows in id order.
CREATE INDEX IF NOT EXISTS batch_events_pending_idx
    ON batch_events (id)
    WHERE published_at IS NULL AND publish_error IS NULL;

ALTER TABLE batch_events DROP CONSTRAINT IF EXISTS batch_events_event_type_check;
ALTER TABLE batch_events ADD CONSTRAINT batch_events_event_type_check
    CHECK (event_type IN ('batch.confirmed', 'batch.needs_review', 'batch.cancelled',
                          'batch.nearing_target', 'order.cancelled',
                          'order.refund_requested', 'order.placed'));
