-- 0006_nearing_target_flag.sql
-- Why: orchestrate must know, for every candidate it scans, whether `batch.nearing_target` was already
-- sent. Asking batch_events (millions of rows, growing during a run, often with stale statistics) let
-- the planner pick a scan of the whole table per candidate. The fact now lives on the batch row, set in
-- the same statement that writes the event; the partial unique index on batch_events stays the
-- guarantee that the event is written at most once.
ALTER TABLE production_batches ADD COLUMN IF NOT EXISTS nearing_target_notified_at timestamptz;

UPDATE production_batches b
   SET nearing_target_notified_at = e.created_at
  FROM batch_events e
 WHERE e.batch_id = b.id
   AND e.event_type = 'batch.nearing_target'
   AND b.nearing_target_notified_at IS NULL;
