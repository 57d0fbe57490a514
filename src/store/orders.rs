//! SQL for placing one buyer order (process-order). The job holds one
//! transaction across all of these; the batch row it fills stays locked from
//! the moment it is chosen to the commit, so concurrent orders on one batch
//! queue on that row and never overfill it or lose an increment.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde_json::Value;
use tokio_postgres::types::Type;
use uuid::Uuid;

use super::sql::named;
use super::{OwnedTx, Sql, StoreError};
use crate::domain::terms::{DEFAULT_LEAD_TIME_DAYS, DEFAULT_MAX_STYLES, DEFAULT_MOQ_PER_BATCH};

/// Advisory-lock namespaces (the two-key form), so locks of different kinds never meet.
const LOCK_IDEMPOTENCY_KEY: i32 = 0x6270_0001;
const LOCK_CATEGORY: i32 = 0x6270_0002;
const LOCK_SQL: &str = "SELECT pg_advisory_xact_lock($1, hashtext($2))";

/// Takes the lock of the buyer's idempotency key (requests with one key of
/// one buyer take turns until commit) and then, in the same round trip, looks
/// the key up among that buyer's orders. Keys are scoped to the buyer.
pub async fn lock_key_and_find(
    client: &Sql<'_>,
    buyer_id: Uuid,
    key: &str,
) -> Result<Option<Earlier>, StoreError> {
    let lock_name = format!("{buyer_id}:{key}");
    let (_, rows) = client
        .pipeline(
            (
                LOCK_SQL,
                &[
                    (&LOCK_IDEMPOTENCY_KEY, Type::INT4),
                    (&lock_name, Type::TEXT),
                ],
            ),
            (
                "SELECT i.request, i.response
                   FROM orders o LEFT JOIN order_idempotency i ON i.order_id = o.id
                  WHERE o.buyer_id = $1 AND o.idempotency_key = $2",
                &[(&buyer_id, Type::UUID), (&key, Type::TEXT)],
            ),
        )
        .await?;
    if rows.len() > 1 {
        return Err(StoreError::Unexpected(
            "two orders of one buyer with one idempotency key",
        ));
    }
    Ok(rows.first().map(|r| {
        let request: Option<Value> = r.get(0);
        let response: Option<Value> = r.get(1);
        Earlier {
            recorded: request.zip(response),
        }
    }))
}

/// An earlier order placed under an idempotency key.
#[derive(Debug, Clone)]
pub struct Earlier {
    /// The request and response recorded with it; `None` when the order was
    /// keyed by something other than this function.
    pub recorded: Option<(Value, Value)>,
}

/// What pricing needs of a batch, read from its locked row.
#[derive(Debug, Clone)]
pub struct BatchFacts {
    pub id: Uuid,
    pub current_quantity: i64,
    pub target_quantity: i64,
    pub style_count: i64,
    pub max_styles: i64,
    pub unit_price_base: Decimal,
    pub premium_percent: Option<Decimal>,
    pub has_variant: bool,
}

/// Locks the fullest `filling` batch of `category` whose window is open and
/// that has room for `quantity` and for the style (behaviour §6 step 2), and reads
/// what pricing needs of it.
///
/// First it takes the category's lock (orders of one category take turns, see
/// `jobs::process_order`); the search is pipelined behind it, so its snapshot
/// sees every order committed in the category and no other order can add to
/// these batches until commit: the style facts are exact. `FOR UPDATE` still
/// waits for an orchestrate holding the row; when it commits, Postgres
/// re-checks the row and moves on if it left `filling`.
pub async fn lock_category_and_find_batch(
    client: &Sql<'_>,
    category: &str,
    quantity: i64,
    variant: &str,
) -> Result<Option<BatchFacts>, StoreError> {
    // `has_variant` is a LATERAL subquery: evaluated per candidate batch
    // through the (batch_id, md5(variant)) index, never as a hashed scan of
    // every contribution with that variant. The index holds a hash so that a
    // long legacy variant cannot overflow a btree entry.
    let (search, search_params) = named(
        "SELECT b.id, COALESCE(b.current_quantity, 0)::int8, b.target_quantity::int8,
                COALESCE(b.current_style_count, 0)::int8, COALESCE(b.max_styles, :default_max_styles)::int8,
                b.unit_price_base, t.complexity_premium_percent, v.has_variant
           FROM production_batches b
           LEFT JOIN supplier_mou_terms t ON t.supplier_id = b.supplier_id
          CROSS JOIN LATERAL (
                SELECT EXISTS (SELECT 1 FROM batch_contributions c
                                WHERE c.batch_id = b.id
                                  AND md5(c.style_details ->> 'variant') = md5(:variant)
                                  AND c.style_details ->> 'variant' = :variant)
                       AS has_variant) v
          WHERE b.batch_status = 'filling'
            AND b.product_category = :category
            AND b.window_closes_at > now()
            AND COALESCE(b.current_quantity, 0)::int8 + :quantity <= b.target_quantity
            AND (COALESCE(b.current_style_count, 0) < COALESCE(b.max_styles, :default_max_styles) OR v.has_variant)
          ORDER BY COALESCE(b.current_quantity, 0) DESC, b.window_closes_at, b.id
          LIMIT 1
          FOR UPDATE OF b",
        &[
            ("category", &category, Type::TEXT),
            ("quantity", &quantity, Type::INT8),
            ("variant", &variant, Type::TEXT),
            ("default_max_styles", &DEFAULT_MAX_STYLES, Type::INT4),
        ],
    )?;
    let (_, rows) = client
        .pipeline(
            (
                LOCK_SQL,
                &[(&LOCK_CATEGORY, Type::INT4), (&category, Type::TEXT)],
            ),
            (search.as_str(), search_params.as_slice()),
        )
        .await?;
    Ok(rows.first().map(|r| BatchFacts {
        id: r.get(0),
        current_quantity: r.get(1),
        target_quantity: r.get(2),
        style_count: r.get(3),
        max_styles: r.get(4),
        unit_price_base: r.get(5),
        premium_percent: r.get(6),
        has_variant: r.get(7),
    }))
}

/// The terms a new batch is made from.
#[derive(Debug, Clone)]
pub struct SupplierTerms {
    pub supplier_id: Uuid,
    pub moq_per_batch: i32,
    pub max_styles_allowed: i32,
    pub base_price: Decimal,
    pub premium_percent: Option<Decimal>,
    pub lead_time_days: i32,
}

/// The cheapest active supplier that can take `quantity` in one batch
/// (ties: lead time, then supplier id) — behaviour §6 step 3. A term the
/// supplier left out takes its default ([`crate::domain::terms`]).
pub async fn cheapest_supplier(
    client: &Sql<'_>,
    quantity: i64,
) -> Result<Option<SupplierTerms>, StoreError> {
    let (sql, params) = named(
        "SELECT t.supplier_id, COALESCE(t.moq_per_batch, :default_moq), COALESCE(t.max_styles_allowed, :default_max_styles),
                t.base_price, t.complexity_premium_percent, COALESCE(t.lead_time_days, :default_lead_time_days)
           FROM supplier_mou_terms t
          WHERE t.status = 'active' AND t.supplier_id IS NOT NULL
            AND COALESCE(t.moq_per_batch, :default_moq) >= :quantity
          ORDER BY t.base_price, COALESCE(t.lead_time_days, :default_lead_time_days), t.supplier_id
          LIMIT 1",
        &[
            ("quantity", &quantity, Type::INT8),
            ("default_moq", &DEFAULT_MOQ_PER_BATCH, Type::INT4),
            ("default_max_styles", &DEFAULT_MAX_STYLES, Type::INT4),
            ("default_lead_time_days", &DEFAULT_LEAD_TIME_DAYS, Type::INT4),
        ],
    )?;
    let row = client.query_opt(&sql, &params).await?;
    Ok(row.map(|r| SupplierTerms {
        supplier_id: r.get(0),
        moq_per_batch: r.get(1),
        max_styles_allowed: r.get(2),
        base_price: r.get(3),
        premium_percent: r.get(4),
        lead_time_days: r.get(5),
    }))
}

/// Opens a new `filling` batch from `terms`; returns its id and window.
pub async fn create_batch(
    client: &Sql<'_>,
    category: &str,
    variant_base: &str,
    terms: &SupplierTerms,
    window_days: i32,
) -> Result<(Uuid, DateTime<Utc>), StoreError> {
    let r = client
        .query_one(
            "INSERT INTO production_batches
                 (product_category, product_variant_base, target_quantity, current_quantity,
                  current_style_count, max_styles, supplier_id, batch_status, unit_price_base,
                  complexity_multiplier, estimated_start_date, window_closes_at)
             VALUES ($1, $2, $3, 0, 0, $4, $5, 'filling', $6, 1.0, current_date + $7,
                     now() + make_interval(days => $8))
             RETURNING id, window_closes_at",
            &[
                (&category, Type::TEXT),
                (&variant_base, Type::TEXT),
                (&terms.moq_per_batch, Type::INT4),
                (&terms.max_styles_allowed, Type::INT4),
                (&terms.supplier_id, Type::UUID),
                (&terms.base_price, Type::NUMERIC),
                (&terms.lead_time_days, Type::INT4),
                (&window_days, Type::INT4),
            ],
        )
        .await?;
    Ok((r.get(0), r.get(1)))
}

/// Everything one order writes.
#[derive(Debug, Clone)]
pub struct NewOrder<'a> {
    pub order_id: Uuid,
    pub order_number: &'a str,
    pub buyer_id: Uuid,
    pub category: &'a str,
    pub quantity: i32,
    pub buyer_total: Decimal,
    pub supplier_total: Decimal,
    pub batch_id: Uuid,
    /// The order opened this batch (for `order.placed`).
    pub is_new_batch: bool,
    pub style_details: &'a Value,
    pub variant: &'a str,
    pub buyer_price_per_unit: Decimal,
    pub contribution_margin: Decimal,
    /// With the request and the response to record for replays.
    pub idempotency: Option<(&'a str, &'a Value, &'a Value)>,
}

/// The order, its contribution, the batch's new totals and the idempotency
/// record, in one statement, sent with the `COMMIT` (see
/// [`OwnedTx::query_then_commit`]): the server runs both without waiting for
/// us, so the category and batch locks are held for one client round trip
/// less — what limits a hot category. The same statement writes the outbox's
/// `order.placed` (behaviour §10); its id is returned, for delivery after the
/// commit. Ends the transaction either way.
pub async fn place_order_and_commit(tx: OwnedTx, o: &NewOrder<'_>) -> Result<i64, StoreError> {
    let key = o.idempotency.map(|(k, _, _)| k);
    let request = o.idempotency.map(|(_, req, _)| req);
    let response = o.idempotency.map(|(_, _, resp)| resp);
    let (sql, params) = named(
        "WITH new_order AS (
             INSERT INTO orders (id, order_number, buyer_id, product_type, quantity, status,
                                 workflow_status, payment_status, buyer_price, supplier_price,
                                 idempotency_key)
             VALUES (:order_id, :order_number, :buyer_id, :category, :quantity, 'pending',
                     'awaiting_payment', 'pending', :buyer_total, :supplier_total, :key)
             RETURNING id
         ), contribution AS (
             INSERT INTO batch_contributions (batch_id, order_id, quantity, style_details,
                                              buyer_price_per_unit, contribution_margin)
             SELECT :batch_id, id, :quantity, :style_details, :unit_price, :margin FROM new_order
         ), batch AS (
             UPDATE production_batches b
                SET current_quantity = COALESCE(b.current_quantity, 0) + :quantity,
                    current_style_count = (
                        SELECT count(DISTINCT v) FROM (
                            SELECT c.style_details ->> 'variant' AS v
                              FROM batch_contributions c WHERE c.batch_id = :batch_id
                            UNION ALL SELECT :variant) styles),
                    updated_at = now()
              WHERE b.id = :batch_id
         ), idempotency AS (
             INSERT INTO order_idempotency (idempotency_key, order_id, request, response)
             SELECT :key, id, :request, :response FROM new_order WHERE :key::text IS NOT NULL
         )
         INSERT INTO batch_events (batch_id, order_id, event_type, payload)
         SELECT :batch_id, id, 'order.placed', jsonb_build_object(
                    'orderId', id, 'batchId', :batch_id, 'quantity', :quantity,
                    'buyerPrice', :buyer_total, 'isNewBatch', :is_new_batch)
           FROM new_order
         RETURNING id",
        &[
            ("order_id", &o.order_id, Type::UUID),
            ("order_number", &o.order_number, Type::TEXT),
            ("buyer_id", &o.buyer_id, Type::UUID),
            ("category", &o.category, Type::TEXT),
            ("quantity", &o.quantity, Type::INT4),
            ("buyer_total", &o.buyer_total, Type::NUMERIC),
            ("supplier_total", &o.supplier_total, Type::NUMERIC),
            ("key", &key, Type::TEXT),
            ("batch_id", &o.batch_id, Type::UUID),
            ("style_details", &o.style_details, Type::JSONB),
            ("unit_price", &o.buyer_price_per_unit, Type::NUMERIC),
            ("margin", &o.contribution_margin, Type::NUMERIC),
            ("variant", &o.variant, Type::TEXT),
            ("request", &request, Type::JSONB),
            ("response", &response, Type::JSONB),
            ("is_new_batch", &o.is_new_batch, Type::BOOL),
        ],
    )?;
    let rows = tx.query_then_commit(&sql, &params).await?;
    rows.first()
        .map(|r| r.get(0))
        .ok_or(StoreError::Unexpected("the order wrote no event"))
}
