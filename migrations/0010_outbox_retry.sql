-- 0010_outbox_retry.sql
-- Why: delivery must never stall and never hold the database (behaviour §10).
-- A publisher no longer keeps its rows locked while PutEvents is in flight: it
-- leases them (leased_until) in one short statement, sends, and marks them in
-- another. A row EventBridge refuses is tried again after a backoff
-- (publish_attempts counts the refusals, next_attempt_at says when) instead
-- of being claimed again at once ahead of every row behind it; refused
-- PUBLISH_MAX_ATTEMPTS times it is set aside (publish_error, as 0009 does for
-- an entry too large to send).
-- Runs inside the runner's transaction: no BEGIN/COMMIT, no CONCURRENTLY.
-- Adding the columns rewrites nothing (constant or stable defaults).

ALTER TABLE batch_events ADD COLUMN IF NOT EXISTS publish_attempts integer NOT NULL DEFAULT 0;
ALTER TABLE batch_events ADD COLUMN IF NOT EXISTS next_attempt_at timestamptz NOT NULL DEFAULT now();
ALTER TABLE batch_events ADD COLUMN IF NOT EXISTS leased_until timestamptz;

-- The claim (due rows in id order, from a cursor) and the pending count read
-- this index only: next_attempt_at is a key column, so rows waiting out a
-- backoff are skipped inside the index, without a heap fetch each. Set-aside
-- rows (publish_error) are not in it.
DROP INDEX IF EXISTS batch_events_pending_idx;
CREATE INDEX IF NOT EXISTS batch_events_pending_idx
    ON batch_events (id, next_attempt_at)
    WHERE published_at IS NULL AND publish_error IS NULL;

-- publish-events' retrySetAside finds the set-aside rows without reading the table.
CREATE INDEX IF NOT EXISTS batch_events_set_aside_idx
    ON batch_events (id)
    WHERE published_at IS NULL AND publish_error IS NOT NULL;
