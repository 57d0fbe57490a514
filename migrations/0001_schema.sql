-- 0001_schema.sql
-- Why: creates the tables of behaviour §4.1 in their final shape on an EMPTY
-- database. On a database that already holds the original Supabase tables
-- (behaviour §4.2) every statement here is a no-op (IF NOT EXISTS / guarded DO
-- blocks); 0002_adopt_original.sql then upgrades those tables in place.
-- Runs inside the runner's transaction (after pg_advisory_xact_lock): no
-- BEGIN/COMMIT, no CONCURRENTLY, no psql meta-commands.
-- Deliberately NOT here: the unique indexes on supplier_orders.batch_id and
-- orders.idempotency_key and the job indexes; 0002 creates them on both paths
-- so an empty and an upgraded database end up with the same objects.

-- Enum used by orders.workflow_status and order_status_history.
DO $$
BEGIN
    IF NOT EXISTS (
        SELECT 1
        FROM pg_type t
        JOIN pg_namespace n ON n.oid = t.typnamespace
        WHERE t.typname = 'order_workflow_status'
          AND n.nspname = current_schema()
    ) THEN
        CREATE TYPE order_workflow_status AS ENUM (
            'quote_requested', 'quote_sent', 'admin_review', 'awaiting_payment',
            'payment_received', 'assigned_to_supplier', 'sample_requested',
            'sample_submitted', 'sample_approved', 'bulk_production',
            'qc_inspection', 'ready_to_ship', 'shipped', 'delivered',
            'completed', 'cancelled', 'on_hold'
        );
    END IF;
END
$$;

CREATE TABLE IF NOT EXISTS suppliers (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    company_name  text NOT NULL,
    contact_email text,
    contact_phone text,
    created_at    timestamptz DEFAULT now()
);

CREATE TABLE IF NOT EXISTS supplier_mou_terms (
    id                         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    supplier_id                uuid CONSTRAINT supplier_mou_terms_supplier_id_key UNIQUE
                                    CONSTRAINT supplier_mou_terms_supplier_id_fkey REFERENCES suppliers (id),
    tier                       text CONSTRAINT supplier_mou_terms_tier_check
                                    CHECK (tier IN ('standard', 'premium', 'specialty')),
    moq_per_batch              integer DEFAULT 200,
    max_styles_allowed         integer DEFAULT 4,
    base_price                 numeric(10,2) NOT NULL,
    complexity_premium_percent numeric(4,2) DEFAULT 5.0,
    lead_time_days             integer DEFAULT 14,
    status                     text DEFAULT 'pending' CONSTRAINT supplier_mou_terms_status_check
                                    CHECK (status IN ('pending', 'active', 'suspended', 'terminated')),
    created_at                 timestamptz DEFAULT now(),
    updated_at                 timestamptz DEFAULT now()
);

CREATE TABLE IF NOT EXISTS production_batches (
    id                    uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    product_category      text NOT NULL,
    product_variant_base  text NOT NULL,
    target_quantity       integer NOT NULL DEFAULT 200,
    current_quantity      integer DEFAULT 0,
    current_style_count   integer DEFAULT 0,
    max_styles            integer DEFAULT 4,
    supplier_id           uuid CONSTRAINT production_batches_supplier_id_fkey REFERENCES suppliers (id),
    batch_status          text DEFAULT 'filling' CONSTRAINT production_batches_batch_status_check
                               CHECK (batch_status IN ('filling', 'needs_review', 'confirmed',
                                                       'in_production', 'completed', 'cancelled')),
    unit_price_base       numeric(10,2) NOT NULL,
    complexity_multiplier numeric(3,2) DEFAULT 1.0,
    estimated_start_date  date,
    actual_start_date     date,
    window_closes_at      timestamptz DEFAULT (now() + interval '7 days'),
    created_at            timestamptz DEFAULT now(),
    updated_at            timestamptz DEFAULT now()
);

CREATE TABLE IF NOT EXISTS orders (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    order_number    text NOT NULL CONSTRAINT orders_order_number_key UNIQUE,
    buyer_id        uuid NOT NULL,
    product_type    text NOT NULL,
    quantity        integer NOT NULL CONSTRAINT orders_quantity_check CHECK (quantity > 0),
    status          text DEFAULT 'pending' CONSTRAINT orders_status_check
                         CHECK (status IN ('pending', 'confirmed', 'in_production', 'quality_check',
                                           'shipped', 'delivered', 'cancelled')),
    workflow_status order_workflow_status DEFAULT 'quote_requested',
    payment_status  text DEFAULT 'pending' CONSTRAINT orders_payment_status_check
                         CHECK (payment_status IN ('pending', 'partial', 'paid', 'overdue', 'refund_pending')),
    buyer_price     numeric,
    supplier_price  numeric,
    idempotency_key text,
    created_at      timestamptz DEFAULT now(),
    updated_at      timestamptz DEFAULT now()
);

CREATE TABLE IF NOT EXISTS batch_contributions (
    id                   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    batch_id             uuid CONSTRAINT batch_contributions_batch_id_fkey REFERENCES production_batches (id),
    order_id             uuid CONSTRAINT batch_contributions_order_id_fkey REFERENCES orders (id),
    quantity             integer NOT NULL,
    style_details        jsonb NOT NULL,
    buyer_price_per_unit numeric(10,2) NOT NULL,
    contribution_margin  numeric(10,2),
    committed_at         timestamptz DEFAULT now(),
    CONSTRAINT batch_contributions_batch_id_order_id_key UNIQUE (batch_id, order_id)
);

CREATE TABLE IF NOT EXISTS order_status_history (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    order_id   uuid,
    old_status order_workflow_status,
    new_status order_workflow_status NOT NULL,
    changed_by uuid,
    notes      text,
    created_at timestamptz DEFAULT now()
);

CREATE TABLE IF NOT EXISTS supplier_orders (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    order_number   text NOT NULL CONSTRAINT supplier_orders_order_number_key UNIQUE,
    supplier_id    uuid,
    batch_id       uuid CONSTRAINT supplier_orders_batch_id_fkey REFERENCES production_batches (id),
    buyer_order_id uuid,
    product_type   text NOT NULL,
    quantity       integer NOT NULL,
    buyer_price    numeric,
    supplier_price numeric,
    margin         numeric GENERATED ALWAYS AS (buyer_price - supplier_price) STORED,
    target_date    date,
    status         text NOT NULL DEFAULT 'pending',
    created_by     uuid,
    created_at     timestamptz DEFAULT now(),
    updated_at     timestamptz DEFAULT now()
);
