-- 0005_category_index.sql
-- Why: process-order picks the fullest batch with ORDER BY COALESCE(current_quantity, 0), which no
-- index can serve, so 0002's (product_category, current_quantity DESC, window_closes_at, id) index only
-- made every order's batch update a non-HOT update (current_quantity was an indexed column) — on the
-- critical path of a busy category, where orders take turns. A category index serves the search; the
-- filling batches of one category are few, and sorting them is cheap.
DROP INDEX IF EXISTS production_batches_filling_category_idx;
CREATE INDEX IF NOT EXISTS production_batches_filling_by_category_idx
    ON production_batches (product_category)
    WHERE batch_status = 'filling';

-- process-order asks whether a batch already has the order's style; this answers it from the index
-- instead of reading every contribution of the batch.
CREATE INDEX IF NOT EXISTS batch_contributions_batch_variant_idx
    ON batch_contributions (batch_id, (style_details ->> 'variant'));
