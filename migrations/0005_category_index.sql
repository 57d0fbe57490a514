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

-- The style lookup index of contributions is 0008's, on md5(style_details ->> 'variant').
-- This file was first released creating a plain (batch_id, style_details ->> 'variant') index
-- here: a btree entry must fit a page, so one legacy contribution with a variant of a few
-- kilobytes made it fail and aborted the whole migrate run before 0008 could replace it. A
-- database that never applied 0005 never builds it now; one that applied the first text is
-- accepted (its digest is listed as superseded in src/store/migrations.rs) and 0008 drops it.
