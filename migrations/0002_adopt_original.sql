-- 0002_adopt_original.sql
-- Why: a database that already holds the original Supabase tables (behaviour §4.2)
-- skipped every CREATE in 0001, so this file upgrades those tables in place to
-- the §4.1 shape without dropping a row or a column: naive UTC timestamps ->
-- timestamptz, widened status CHECKs (needs_review, refund_pending),
-- supplier_orders.batch_id (unique) with a nullable created_by,
-- orders.idempotency_key (unique). It then creates, on BOTH paths, the unique
-- and partial indexes the jobs rely on. Every step inspects pg_catalog first,
-- so on an empty-path database (after 0001) or on a second run it changes
-- nothing. Runs inside the runner's transaction: no BEGIN/COMMIT, no
-- CONCURRENTLY, no psql meta-commands, no triggers, no extensions.

-- 1. Enum: add any label the original enum lacks (appended; no-op normally).
DO $$
DECLARE
    v text;
    typ oid := to_regtype(format('%I.order_workflow_status', current_schema()));
BEGIN
    FOREACH v IN ARRAY ARRAY[
        'quote_requested', 'quote_sent', 'admin_review', 'awaiting_payment',
        'payment_received', 'assigned_to_supplier', 'sample_requested',
        'sample_submitted', 'sample_approved', 'bulk_production',
        'qc_inspection', 'ready_to_ship', 'shipped', 'delivered',
        'completed', 'cancelled', 'on_hold']
    LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_enum WHERE enumtypid = typ AND enumlabel = v) THEN
            EXECUTE format('ALTER TYPE %s ADD VALUE %L', typ::regtype, v);
        END IF;
    END LOOP;
END
$$;

-- 2. timestamp without time zone (holding UTC) -> timestamptz, read as UTC.
--    Only columns that are still naive are touched, so a timestamptz column is
--    never converted twice. AT TIME ZONE 'UTC' makes the result independent of
--    the session TimeZone. The default is dropped before and set after the
--    type change (USING does not apply to defaults). One ALTER TABLE per table
--    so each table is rewritten once.
--    Postgres refuses ALTER COLUMN ... TYPE on a column that a view or an RLS
--    policy uses (live Supabase projects have both). Those dependents are
--    captured (a view's definition, options, owner, grants, comment and, for a
--    materialized one, its indexes; a policy's table, command, roles and
--    expressions), dropped, and recreated after the conversion, all in this
--    transaction: no other session ever sees them missing.
DO $$
DECLARE
    t       text;
    rel     regclass;
    col     text;
    cmds    text[];
    work    jsonb := '[]'::jsonb;   -- [{rel, cmds}]: the tables to convert
    targets jsonb := '[]'::jsonb;   -- [[table oid, attnum]]: the columns converted
    v       record;
    p       record;
    g       record;
    kind    text;
BEGIN
    FOREACH t IN ARRAY ARRAY['suppliers', 'supplier_mou_terms', 'production_batches',
                             'orders', 'batch_contributions', 'order_status_history',
                             'supplier_orders']
    LOOP
        rel := to_regclass(format('%I.%I', current_schema(), t));
        CONTINUE WHEN rel IS NULL;
        cmds := ARRAY[]::text[];
        FOR col IN
            SELECT a.attname
            FROM pg_attribute a
            WHERE a.attrelid = rel
              AND a.attnum > 0
              AND NOT a.attisdropped
              AND a.attname IN ('window_closes_at', 'created_at', 'updated_at', 'committed_at')
              AND a.atttypid = 'timestamp without time zone'::regtype
            ORDER BY a.attnum
        LOOP
            cmds := cmds
                || format('ALTER COLUMN %I DROP DEFAULT', col)
                || format('ALTER COLUMN %1$I TYPE timestamptz USING %1$I AT TIME ZONE %2$L', col, 'UTC')
                || format('ALTER COLUMN %I SET DEFAULT %s', col,
                          CASE WHEN col = 'window_closes_at'
                               THEN '(now() + interval ''7 days'')'
                               ELSE 'now()' END);
            targets := targets || jsonb_build_array(jsonb_build_array(
                rel::oid, (SELECT a.attnum FROM pg_attribute a WHERE a.attrelid = rel AND a.attname = col)));
        END LOOP;
        IF cardinality(cmds) > 0 THEN
            work := work || jsonb_build_array(jsonb_build_object('rel', rel::text, 'cmds', to_jsonb(cmds)));
        END IF;
    END LOOP;
    IF jsonb_array_length(work) = 0 THEN
        RETURN;
    END IF;

    -- Views (and views over those views) using a converted column; depth 1 first.
    CREATE TEMP TABLE bp_saved_views ON COMMIT DROP AS
    WITH RECURSIVE cols AS (
        SELECT (c->>0)::oid AS relid, (c->>1)::int2 AS attnum FROM jsonb_array_elements(targets) c
    ), dep(view_oid, depth) AS (
        SELECT DISTINCT r.ev_class, 1
          FROM cols
          JOIN pg_depend d ON d.refclassid = 'pg_class'::regclass AND d.refobjid = cols.relid
                          AND d.refobjsubid = cols.attnum AND d.classid = 'pg_rewrite'::regclass
          JOIN pg_rewrite r ON r.oid = d.objid
         WHERE r.ev_class <> cols.relid
        UNION
        SELECT DISTINCT r.ev_class, dep.depth + 1
          FROM dep
          JOIN pg_depend d ON d.refclassid = 'pg_class'::regclass AND d.refobjid = dep.view_oid
                          AND d.classid = 'pg_rewrite'::regclass
          JOIN pg_rewrite r ON r.oid = d.objid
         WHERE r.ev_class <> dep.view_oid AND dep.depth < 50
    )
    SELECT c.oid AS view_oid, c.oid::regclass::text AS name, c.relkind,
           pg_get_viewdef(c.oid) AS def, c.reloptions, pg_get_userbyid(c.relowner) AS owner,
           c.relacl, obj_description(c.oid, 'pg_class') AS comment,
           (SELECT array_agg(pg_get_indexdef(i.indexrelid)) FROM pg_index i WHERE i.indrelid = c.oid) AS indexes,
           max(dep.depth) AS depth
      FROM dep JOIN pg_class c ON c.oid = dep.view_oid
     GROUP BY c.oid;

    -- Policies using a converted column, or one of those views.
    CREATE TEMP TABLE bp_saved_policies ON COMMIT DROP AS
    SELECT DISTINCT pol.oid, pol.polname, pol.polrelid::regclass::text AS tbl, pol.polcmd,
           pol.polpermissive, pol.polroles,
           pg_get_expr(pol.polqual, pol.polrelid) AS qual,
           pg_get_expr(pol.polwithcheck, pol.polrelid) AS withcheck
      FROM pg_policy pol
      JOIN pg_depend d ON d.classid = 'pg_policy'::regclass AND d.objid = pol.oid
                      AND d.refclassid = 'pg_class'::regclass
     WHERE EXISTS (SELECT 1 FROM jsonb_array_elements(targets) c
                    WHERE d.refobjid = (c->>0)::oid AND d.refobjsubid = (c->>1)::int2)
        OR d.refobjid IN (SELECT view_oid FROM bp_saved_views);

    FOR p IN SELECT * FROM bp_saved_policies LOOP
        RAISE NOTICE 'recreating policy % on % around the timestamptz conversion', p.polname, p.tbl;
        EXECUTE format('DROP POLICY %I ON %s', p.polname, p.tbl);
    END LOOP;
    FOR v IN SELECT * FROM bp_saved_views ORDER BY depth DESC LOOP
        RAISE NOTICE 'recreating view % around the timestamptz conversion', v.name;
        EXECUTE format('DROP %s %s', CASE v.relkind WHEN 'm' THEN 'MATERIALIZED VIEW' ELSE 'VIEW' END, v.name);
    END LOOP;

    FOR g IN SELECT w.value AS item FROM jsonb_array_elements(work) w LOOP
        EXECUTE format('ALTER TABLE %s ', g.item->>'rel')
             || (SELECT string_agg(x, ', ') FROM jsonb_array_elements_text(g.item->'cmds') x);
    END LOOP;

    FOR v IN SELECT * FROM bp_saved_views ORDER BY depth LOOP
        kind := CASE v.relkind WHEN 'm' THEN 'MATERIALIZED VIEW' ELSE 'VIEW' END;
        EXECUTE format('CREATE %s %s%s AS %s', kind, v.name,
                       CASE WHEN v.reloptions IS NULL THEN ''
                            ELSE format(' WITH (%s)', array_to_string(v.reloptions, ', ')) END,
                       rtrim(v.def, '; '));
        EXECUTE format('ALTER %s %s OWNER TO %I', kind, v.name, v.owner);
        IF v.comment IS NOT NULL THEN
            EXECUTE format('COMMENT ON %s %s IS %L', kind, v.name, v.comment);
        END IF;
        IF v.relacl IS NOT NULL THEN
            -- The new view starts with default grants; put back exactly the old ones.
            FOR g IN SELECT DISTINCT CASE WHEN a.grantee = 0 THEN 'PUBLIC'
                                          ELSE quote_ident(pg_get_userbyid(a.grantee)) END AS who
                       FROM pg_class c, aclexplode(c.relacl) a
                      WHERE c.oid = v.name::regclass AND a.grantee <> c.relowner
            LOOP
                EXECUTE format('REVOKE ALL ON %s FROM %s', v.name, g.who);
            END LOOP;
            FOR g IN SELECT a.privilege_type, a.is_grantable,
                            CASE WHEN a.grantee = 0 THEN 'PUBLIC'
                                 ELSE quote_ident(pg_get_userbyid(a.grantee)) END AS who
                       FROM aclexplode(v.relacl) a
            LOOP
                EXECUTE format('GRANT %s ON %s TO %s%s', g.privilege_type, v.name, g.who,
                               CASE WHEN g.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
            END LOOP;
        END IF;
        IF v.indexes IS NOT NULL THEN
            FOR g IN SELECT unnest(v.indexes) AS def LOOP
                EXECUTE g.def;
            END LOOP;
        END IF;
    END LOOP;

    FOR p IN SELECT * FROM bp_saved_policies LOOP
        EXECUTE format('CREATE POLICY %I ON %s AS %s FOR %s TO %s%s%s',
                       p.polname, p.tbl,
                       CASE WHEN p.polpermissive THEN 'PERMISSIVE' ELSE 'RESTRICTIVE' END,
                       CASE p.polcmd WHEN 'r' THEN 'SELECT' WHEN 'a' THEN 'INSERT' WHEN 'w' THEN 'UPDATE'
                                     WHEN 'd' THEN 'DELETE' ELSE 'ALL' END,
                       (SELECT string_agg(CASE WHEN r = 0 THEN 'PUBLIC'
                                               ELSE quote_ident(pg_get_userbyid(r)) END, ', ')
                          FROM unnest(p.polroles) r),
                       CASE WHEN p.qual IS NULL THEN '' ELSE format(' USING (%s)', p.qual) END,
                       CASE WHEN p.withcheck IS NULL THEN '' ELSE format(' WITH CHECK (%s)', p.withcheck) END);
    END LOOP;
    DROP TABLE bp_saved_policies;
    DROP TABLE bp_saved_views;
END
$$;

-- 3. behaviour §4.1 defaults, set only where a column has none (existing defaults,
--    e.g. uuid_generate_v4(), are kept).
DO $$
DECLARE
    r   record;
    rel regclass;
BEGIN
    FOR r IN
        SELECT * FROM (VALUES
            ('suppliers',            'id',                         'gen_random_uuid()'),
            ('suppliers',            'created_at',                 'now()'),
            ('supplier_mou_terms',   'id',                         'gen_random_uuid()'),
            ('supplier_mou_terms',   'moq_per_batch',              '200'),
            ('supplier_mou_terms',   'max_styles_allowed',         '4'),
            ('supplier_mou_terms',   'complexity_premium_percent', '5.0'),
            ('supplier_mou_terms',   'lead_time_days',             '14'),
            ('supplier_mou_terms',   'status',                     '''pending'''),
            ('supplier_mou_terms',   'created_at',                 'now()'),
            ('supplier_mou_terms',   'updated_at',                 'now()'),
            ('production_batches',   'id',                         'gen_random_uuid()'),
            ('production_batches',   'target_quantity',            '200'),
            ('production_batches',   'current_quantity',           '0'),
            ('production_batches',   'current_style_count',        '0'),
            ('production_batches',   'max_styles',                 '4'),
            ('production_batches',   'batch_status',               '''filling'''),
            ('production_batches',   'complexity_multiplier',      '1.0'),
            ('production_batches',   'window_closes_at',           '(now() + interval ''7 days'')'),
            ('production_batches',   'created_at',                 'now()'),
            ('production_batches',   'updated_at',                 'now()'),
            ('orders',               'id',                         'gen_random_uuid()'),
            ('orders',               'status',                     '''pending'''),
            ('orders',               'workflow_status',            '''quote_requested'''),
            ('orders',               'payment_status',             '''pending'''),
            ('orders',               'created_at',                 'now()'),
            ('orders',               'updated_at',                 'now()'),
            ('batch_contributions',  'id',                         'gen_random_uuid()'),
            ('batch_contributions',  'committed_at',               'now()'),
            ('order_status_history', 'id',                         'gen_random_uuid()'),
            ('order_status_history', 'created_at',                 'now()'),
            ('supplier_orders',      'id',                         'gen_random_uuid()'),
            ('supplier_orders',      'status',                     '''pending'''),
            ('supplier_orders',      'created_at',                 'now()'),
            ('supplier_orders',      'updated_at',                 'now()')
        ) AS d(tbl, col, expr)
    LOOP
        rel := to_regclass(format('%I.%I', current_schema(), r.tbl));
        CONTINUE WHEN rel IS NULL;
        IF EXISTS (
            SELECT 1 FROM pg_attribute a
            WHERE a.attrelid = rel AND a.attname = r.col AND NOT a.attisdropped
              AND NOT a.atthasdef AND a.attgenerated = '' AND a.attidentity = ''
        ) THEN
            EXECUTE format('ALTER TABLE %s ALTER COLUMN %I SET DEFAULT %s', rel, r.col, r.expr);
        END IF;
    END LOOP;
END
$$;

-- 4. Status CHECKs widened: production_batches.batch_status must allow
--    'needs_review', orders.payment_status 'refund_pending'. Legacy values
--    survive (behaviour §4.3): the CHECKs on the column alone that list values
--    are replaced by one canonical CHECK allowing every value they allowed plus
--    the function's own, added NOT VALID and validated only when every row
--    passes; otherwise a WARNING names the values outside the list and their
--    row counts, and the rows are left alone. A column with no such CHECK
--    allowed any value, and keeps doing so (no CHECK is added). CHECKs that
--    involve other columns too are never touched.
DO $$
DECLARE
    spec    record;
    rel     regclass;
    att     smallint;
    lists   oid[];
    allowed text[];
    c       record;
    bad     text;
BEGIN
    FOR spec IN
        SELECT * FROM (VALUES
            ('production_batches', 'batch_status', 'production_batches_batch_status_check',
             ARRAY['filling', 'needs_review', 'confirmed', 'in_production', 'completed', 'cancelled']),
            ('orders', 'payment_status', 'orders_payment_status_check',
             ARRAY['pending', 'partial', 'paid', 'overdue', 'refund_pending'])
        ) AS t(tbl, col, conname, wanted)
    LOOP
        rel := to_regclass(format('%I.%I', current_schema(), spec.tbl));
        SELECT a.attnum INTO att FROM pg_attribute a
        WHERE a.attrelid = rel AND a.attname = spec.col AND NOT a.attisdropped;

        -- Value-list CHECKs on this column alone: col = ANY (ARRAY['a'::text, ...]),
        -- which is how Postgres prints both IN (...) and = ANY (...).
        SELECT array_agg(k.oid) INTO lists
          FROM pg_constraint k
         WHERE k.conrelid = rel AND k.contype = 'c' AND k.conkey = ARRAY[att]
           AND pg_get_constraintdef(k.oid) ~* ('^CHECK \(\(\(?' || quote_ident(spec.col)
                   || '\)?(::text)? = ANY \(\(?ARRAY\[[^]]*\]\)?(::text\[\])?\)\)\)$');
        IF lists IS NULL THEN
            RAISE NOTICE '%.% has no CHECK listing its values; none is added', spec.tbl, spec.col;
            CONTINUE;
        END IF;

        SELECT array_agg(DISTINCT v ORDER BY v) INTO allowed FROM (
            SELECT replace(m[1], '''''', '''') AS v
              FROM unnest(lists) AS o,
                   regexp_matches(pg_get_constraintdef(o), '''((?:[^'']|'''')*)''', 'g') AS m
            UNION SELECT unnest(spec.wanted)
        ) x;

        -- Already canonical: one validated CHECK with the canonical name, allowing every wanted value.
        CONTINUE WHEN cardinality(lists) = 1 AND EXISTS (
            SELECT 1 FROM pg_constraint k
             WHERE k.oid = lists[1] AND k.conname = spec.conname AND k.convalidated
               AND (SELECT bool_and(strpos(pg_get_constraintdef(k.oid), quote_literal(w)) > 0)
                      FROM unnest(spec.wanted) AS w));

        FOR c IN SELECT k.conname FROM pg_constraint k WHERE k.oid = ANY (lists) LOOP
            EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', rel, c.conname);
        END LOOP;
        EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %I CHECK (%I IN (%s)) NOT VALID', rel, spec.conname,
                       spec.col, (SELECT string_agg(quote_literal(w), ', ') FROM unnest(allowed) AS w));
        EXECUTE format('SELECT string_agg(format(%L, v, n), %L ORDER BY v)
                          FROM (SELECT %I AS v, count(*) AS n FROM %s
                                 WHERE %I IS NOT NULL AND %I <> ALL ($1) GROUP BY 1) x',
                       '%L (%s rows)', ', ', spec.col, rel, spec.col, spec.col)
          INTO bad USING allowed;
        IF bad IS NULL THEN
            EXECUTE format('ALTER TABLE %s VALIDATE CONSTRAINT %I', rel, spec.conname);
        ELSE
            RAISE WARNING '%.% holds values outside its allowed list: %. The CHECK % stays NOT VALID: those rows keep their values; new values must be in the list.',
                spec.tbl, spec.col, bad, spec.conname;
        END IF;
    END LOOP;
END
$$;

-- 5. supplier_orders: batch_id -> production_batches (FK added only if the
--    column has none), created_by nullable (its FK, if any, is kept: NULL
--    passes it). orders: idempotency_key.
ALTER TABLE supplier_orders ADD COLUMN IF NOT EXISTS batch_id uuid;
ALTER TABLE orders ADD COLUMN IF NOT EXISTS idempotency_key text;

DO $$
DECLARE
    rel regclass := to_regclass(format('%I.supplier_orders', current_schema()));
    att smallint;
BEGIN
    SELECT a.attnum INTO att FROM pg_attribute a
    WHERE a.attrelid = rel AND a.attname = 'batch_id' AND NOT a.attisdropped;

    IF NOT EXISTS (SELECT 1 FROM pg_constraint k
                   WHERE k.conrelid = rel AND k.contype = 'f' AND k.conkey = ARRAY[att]) THEN
        EXECUTE format('ALTER TABLE %s ADD CONSTRAINT supplier_orders_batch_id_fkey '
                       'FOREIGN KEY (batch_id) REFERENCES %s (id)',
                       rel, to_regclass(format('%I.production_batches', current_schema())));
    END IF;

    IF EXISTS (SELECT 1 FROM pg_attribute a
               WHERE a.attrelid = rel AND a.attname = 'created_by' AND a.attnotnull AND NOT a.attisdropped) THEN
        EXECUTE format('ALTER TABLE %s ALTER COLUMN created_by DROP NOT NULL', rel);
    END IF;
END
$$;

-- 6. Unique keys the code's ON CONFLICT clauses and exactly-once rules rely on.
--    Created only when no valid, non-partial unique index on exactly these
--    columns exists (under any name).
DO $$
DECLARE
    r   record;
    rel regclass;
BEGIN
    FOR r IN
        SELECT * FROM (VALUES
            ('supplier_orders',     ARRAY['batch_id'],             'supplier_orders_batch_id_key',             false),
            ('orders',              ARRAY['idempotency_key'],      'orders_idempotency_key_key',               false),
            ('batch_contributions', ARRAY['batch_id', 'order_id'], 'batch_contributions_batch_id_order_id_key', true)
        ) AS u(tbl, cols, name, as_constraint)
    LOOP
        rel := to_regclass(format('%I.%I', current_schema(), r.tbl));
        CONTINUE WHEN EXISTS (
            SELECT 1
            FROM pg_index i
            WHERE i.indrelid = rel
              AND i.indisunique AND i.indisvalid
              AND i.indpred IS NULL AND i.indexprs IS NULL
              AND i.indnkeyatts = cardinality(r.cols)
              AND (SELECT array_agg(a.attname::text ORDER BY a.attname)
                   FROM pg_attribute a
                   WHERE a.attrelid = rel AND a.attnum = ANY (i.indkey::int2[]))
                  = (SELECT array_agg(x ORDER BY x) FROM unnest(r.cols) AS x)
        );
        IF r.as_constraint THEN
            -- An original database without this key may hold duplicates; refuse
            -- with a clear message rather than delete anyone's rows.
            IF EXISTS (SELECT 1 FROM batch_contributions
                       GROUP BY batch_id, order_id HAVING count(*) > 1) THEN
                RAISE EXCEPTION 'batch_contributions holds duplicate (batch_id, order_id) rows; '
                                'merge them before applying this migration';
            END IF;
            EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %I UNIQUE (%s)', rel, r.name,
                           (SELECT string_agg(quote_ident(x), ', ') FROM unnest(r.cols) AS x));
        ELSE
            EXECUTE format('CREATE UNIQUE INDEX %I ON %s (%s)', r.name, rel,
                           (SELECT string_agg(quote_ident(x), ', ') FROM unnest(r.cols) AS x));
        END IF;
    END LOOP;
END
$$;

-- 7. Indexes the jobs need (both paths; created after the type changes so the
--    table rewrites above do not have to rebuild them).
--    The partial ones match only when the query spells the literal
--    batch_status = 'filling' (not a bind parameter).

-- orchestrate: keyset scan of filling batches by window_closes_at, id.
CREATE INDEX IF NOT EXISTS production_batches_filling_window_idx
    ON production_batches (window_closes_at, id)
    WHERE batch_status = 'filling';

-- process-order: fullest open batch of a category, in the order it picks.
CREATE INDEX IF NOT EXISTS production_batches_filling_category_idx
    ON production_batches (product_category, current_quantity DESC, window_closes_at, id)
    WHERE batch_status = 'filling';

-- cancelling / confirming: contributions by batch are served by the unique
-- (batch_id, order_id); this one serves lookups by order.
CREATE INDEX IF NOT EXISTS batch_contributions_order_id_idx
    ON batch_contributions (order_id);

-- order history by order.
CREATE INDEX IF NOT EXISTS order_status_history_order_id_idx
    ON order_status_history (order_id);

-- process-order: cheapest active supplier (status, base_price, lead_time_days, supplier_id).
CREATE INDEX IF NOT EXISTS supplier_mou_terms_status_price_idx
    ON supplier_mou_terms (status, base_price, lead_time_days, supplier_id);
