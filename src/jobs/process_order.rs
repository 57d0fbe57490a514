//! `process-order` (behaviour §6): places one buyer order into a batch, creating a
//! batch when none fits — all in one transaction.
//!
//! Concurrency, in lock order (key → category → batch row, never the reverse):
//!
//! - Requests with one idempotency key take turns on a transaction-scoped
//!   advisory lock of that key: exactly one order per key.
//! - Orders of one category take turns on an advisory lock of the category.
//!   Fullest-first sends them to the same batch anyway, so this costs little
//!   parallelism, and it buys two things: two first orders of a category share
//!   one new batch instead of opening two, and no deadlock. (Without it, an
//!   order whose `FOR UPDATE` locked a batch that then failed the re-check keeps
//!   that row lock — Postgres does not release it — and could wait for the
//!   category while another order holding the category waits for the row.)
//! - The chosen batch row is locked (`FOR UPDATE`) before it is read for
//!   pricing and until commit. orchestrate locks batches too (`SKIP LOCKED`),
//!   so an order and an orchestrate on one batch serialize on its row: an
//!   order never lands in a batch that was just cancelled or confirmed (the
//!   locked re-check sees the new status and the order moves on), none pushes
//!   a batch past `target_quantity` or `max_styles`, no increment is lost.

use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::input::Data;
use super::{Access, BoxFuture, Job, JobContext, Report, Run};
use crate::auth::Principal;
use crate::domain::pricing::{quote, PriceInput, Quote};
use crate::domain::{Counts, Fill};
use crate::error::ApiError;
use crate::outbox::{Ask, Scope};
use crate::store::orders::{self, NewOrder};
use crate::store::{OwnedTx, Sql};
use tokio_postgres::error::SqlState;

pub const JOB: Job = Job {
    name: "process-order",
    access: Access::Buyers {
        acting_for: "buyerId",
    },
    plain_fields: &["productCategory", "productVariantBase", "quantity"],
    parse: |data, principal| Ok(Box::new(ProcessOrderRequest::parse(data, principal)?)),
};

pub const MAX_NAME_CHARS: usize = 100;
pub const MAX_QUANTITY: i64 = 1_000_000;
pub const MAX_STYLE_DETAILS_BYTES: usize = 16 * 1024;
pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = 128;
/// A style name; the style lookup index hashes it, but a name is short.
pub const MAX_VARIANT_CHARS: usize = 200;

#[derive(Debug, Clone, PartialEq)]
pub struct ProcessOrderRequest {
    pub product_category: String,
    pub product_variant_base: String,
    pub quantity: i32,
    /// As the buyer sent it; stored verbatim.
    pub style_details: Value,
    /// `styleDetails.variant`: what makes two orders the same style.
    pub variant: String,
    pub buyer_id: Uuid,
    pub idempotency_key: Option<String>,
}

impl ProcessOrderRequest {
    /// Validates `data`; a buyer may order only for themself (`buyerId`
    /// omitted means them, another id is a 403).
    pub fn parse(data: &Data, principal: &Principal) -> Result<Self, ApiError> {
        let bad = |msg: &str| ApiError::BadRequest(msg.to_owned());
        let product_category = data.req_str("productCategory", MAX_NAME_CHARS)?.to_owned();
        let product_variant_base = data
            .req_str("productVariantBase", MAX_NAME_CHARS)?
            .to_owned();
        let quantity = i32::try_from(data.req_int("quantity", 1, MAX_QUANTITY)?)
            .map_err(|_| bad("quantity must be an integer from 1 to 1000000"))?;
        let style_details = match data.get("styleDetails") {
            None => return Err(bad("styleDetails is required")),
            Some(v @ Value::Object(_)) => v.clone(),
            Some(_) => return Err(bad("styleDetails must be an object")),
        };
        let variant = style_details
            .get("variant")
            .and_then(Value::as_str)
            .filter(|v| !v.trim().is_empty())
            .ok_or_else(|| bad("styleDetails.variant must be a non-empty string"))?
            .to_owned();
        if variant.chars().count() > MAX_VARIANT_CHARS {
            return Err(bad("styleDetails.variant must be at most 200 characters"));
        }
        let serialized = serde_json::to_string(&style_details).unwrap_or_default();
        if serialized.len() > MAX_STYLE_DETAILS_BYTES {
            return Err(bad("styleDetails must be at most 16 KiB"));
        }
        // Postgres cannot store NUL in text or jsonb; say so rather than fail on insert.
        if serialized.contains("\\u0000") {
            return Err(bad("styleDetails must not contain NUL characters"));
        }
        let given = data.opt_uuid("buyerId")?;
        let buyer_id = match principal {
            Principal::Buyer { user_id } => match given {
                None => *user_id,
                Some(id) if id == *user_id => id,
                Some(_) => {
                    return Err(ApiError::Forbidden(
                        "A buyer may place orders only for themself".into(),
                    ))
                }
            },
            _ => given.ok_or_else(|| bad("buyerId is required"))?,
        };
        let idempotency_key = match data.get("idempotencyKey") {
            None => None,
            Some(Value::String(k))
                if !k.is_empty()
                    && k.chars().count() <= MAX_IDEMPOTENCY_KEY_CHARS
                    && !k.contains('\0') =>
            {
                Some(k.clone())
            }
            Some(_) => {
                return Err(bad(
                    "idempotencyKey must be a string of 1 to 128 characters, without NUL",
                ))
            }
        };
        Ok(ProcessOrderRequest {
            product_category,
            product_variant_base,
            quantity,
            style_details,
            variant,
            buyer_id,
            idempotency_key,
        })
    }

    /// What "the same request" means for an idempotency key: every validated
    /// field but the key itself.
    pub fn fingerprint(&self) -> Value {
        json!({
            "productCategory": self.product_category,
            "productVariantBase": self.product_variant_base,
            "quantity": self.quantity,
            "styleDetails": self.style_details,
            "buyerId": self.buyer_id,
        })
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessOrderResponse {
    pub success: bool,
    pub order_id: Uuid,
    pub order_number: String,
    pub batch_id: Uuid,
    pub is_new_batch: bool,
    pub pricing: Pricing,
    pub savings: Savings,
    #[serde(with = "rust_decimal::serde::float")]
    pub batch_fill_percentage: Decimal,
    /// The same value again: the app's own frontend (`useCreateAggregatedOrder`)
    /// reads `fillPercentage` when an order joins an existing batch.
    #[serde(with = "rust_decimal::serde::float")]
    pub fill_percentage: Decimal,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Pricing {
    #[serde(with = "rust_decimal::serde::float")]
    pub factory_price: Decimal,
    #[serde(with = "rust_decimal::serde::float")]
    pub buyer_price: Decimal,
    #[serde(with = "rust_decimal::serde::float")]
    pub solo_order_price: Decimal,
    #[serde(with = "rust_decimal::serde::float")]
    pub unit_margin: Decimal,
    #[serde(with = "rust_decimal::serde::float")]
    pub total_margin: Decimal,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Savings {
    #[serde(with = "rust_decimal::serde::float")]
    pub per_unit: Decimal,
    #[serde(with = "rust_decimal::serde::float")]
    pub total: Decimal,
    #[serde(with = "rust_decimal::serde::float")]
    pub percentage: Decimal,
}

impl Pricing {
    fn of(q: &Quote) -> Self {
        Pricing {
            factory_price: q.factory_price,
            buyer_price: q.buyer_price,
            solo_order_price: q.solo_order_price,
            unit_margin: q.unit_margin,
            total_margin: q.total_margin,
        }
    }
}

impl Savings {
    fn of(q: &Quote) -> Self {
        Savings {
            per_unit: q.savings_per_unit,
            total: q.savings_total,
            percentage: q.savings_percentage,
        }
    }
}

impl Run for ProcessOrderRequest {
    /// Counts the order placed (none on a replay) and asks for its own
    /// `order.placed` only, within the order's budget, so a backlog never
    /// slows a buyer down.
    fn run<'a>(
        self: Box<Self>,
        ctx: &'a JobContext<'a>,
    ) -> BoxFuture<'a, Result<Report, ApiError>> {
        Box::pin(async move {
            let (body, event) = run(*self, ctx).await?;
            let report = Report::answer(body)?;
            Ok(match event {
                Some(id) => report
                    .counted(Counts {
                        orders_placed: 1,
                        ..Counts::default()
                    })
                    .delivering(Ask {
                        scope: Scope::Only(vec![id]),
                        budget: ctx.settings.order_publish_budget,
                    }),
                None => report,
            })
        })
    }
}

/// The batch the order goes into, with what pricing needs of it.
struct Placement {
    batch_id: Uuid,
    is_new: bool,
    current_quantity: i64,
    target_quantity: i64,
    style_count_before: i64,
    has_variant: bool,
    unit_price_base: Decimal,
    premium_percent: Option<Decimal>,
}

/// The answer, and the id of the `order.placed` event when an order was
/// placed (a replay places none).
pub async fn run(
    req: ProcessOrderRequest,
    ctx: &JobContext<'_>,
) -> Result<(Value, Option<i64>), ApiError> {
    let tx = ctx.db.get().await?.begin_owned().await?;
    // Everything up to the last write; any failure or a replay writes nothing.
    let (order, response) = match prepare(&tx, &req, ctx).await {
        Ok(Prepared::Order(order, response)) => (order, response),
        Ok(Prepared::Replay(response)) => {
            tx.rollback().await;
            return Ok((response, None));
        }
        Err(e) => {
            tx.rollback().await;
            return Err(e);
        }
    };
    let order_id = order.order_id;
    let batch_id = order.placement.batch_id;
    let is_new_batch = order.placement.is_new;
    let fingerprint = req.fingerprint();
    let qty = Decimal::from(req.quantity);
    let new_order = NewOrder {
        order_id,
        order_number: &order.order_number,
        buyer_id: req.buyer_id,
        category: &req.product_category,
        quantity: req.quantity,
        buyer_total: order.quote.buyer_price * qty,
        supplier_total: order.quote.factory_price * qty,
        batch_id,
        is_new_batch,
        style_details: &req.style_details,
        variant: &req.variant,
        buyer_price_per_unit: order.quote.buyer_price,
        contribution_margin: order.quote.total_margin,
        idempotency: req
            .idempotency_key
            .as_deref()
            .map(|k| (k, &fingerprint, &response)),
    };
    let event = orders::place_order_and_commit(tx, &new_order)
        .await
        .map_err(|e| {
            if e.code() == Some(&SqlState::FOREIGN_KEY_VIOLATION) {
                ApiError::Unprocessable("buyerId does not name a known buyer".into())
            } else {
                e.into()
            }
        })?;
    tracing::info!(
        orderId = %order_id,
        batchId = %batch_id,
        buyerId = %req.buyer_id,
        quantity = req.quantity,
        isNewBatch = is_new_batch,
        "order placed"
    );
    Ok((response, Some(event)))
}

/// What the transaction decided before its last write.
enum Prepared {
    /// The order to write, and the answer to give (and record for replays).
    Order(Box<PricedOrder>, Value),
    /// An earlier answer under the same idempotency key.
    Replay(Value),
}

struct PricedOrder {
    order_id: Uuid,
    order_number: String,
    placement: Placement,
    quote: Quote,
}

/// Idempotency check, placement and pricing (§6 steps 1–4), in `tx`.
async fn prepare(
    tx: &OwnedTx,
    req: &ProcessOrderRequest,
    ctx: &JobContext<'_>,
) -> Result<Prepared, ApiError> {
    let sql = tx.sql();
    if let Some(key) = &req.idempotency_key {
        // The key's lock, then the lookup, in one round trip.
        if let Some(earlier) = orders::lock_key_and_find(&sql, req.buyer_id, key).await? {
            return match earlier.recorded {
                Some((request, mut response)) if request == req.fingerprint() => {
                    if let Value::Object(map) = &mut response {
                        map.insert("idempotentReplay".into(), Value::Bool(true));
                        // Answers recorded before `fillPercentage` was sent have only
                        // `batchFillPercentage`: the same value, so the app reads it too.
                        if let Some(fill) = map.get("batchFillPercentage").cloned() {
                            map.entry("fillPercentage").or_insert(fill);
                        }
                    }
                    Ok(Prepared::Replay(response))
                }
                _ => Err(ApiError::Conflict(
                    "idempotencyKey was already used with a different request".into(),
                )),
            };
        }
    }

    let placement = place(&sql, req, ctx).await?;
    let fill_before = Fill::new(placement.current_quantity, placement.target_quantity)
        .map_err(|e| ApiError::Internal(format!("chosen batch has an {e}")))?;
    let quantity = i64::from(req.quantity);
    let quote = quote(&PriceInput {
        unit_price_base: placement.unit_price_base,
        premium_percent: placement.premium_percent,
        style_count: placement.style_count_before + i64::from(!placement.has_variant),
        fill_before,
        quantity,
    });
    let fill_after = Fill::new(
        placement.current_quantity + quantity,
        placement.target_quantity,
    )
    .map_err(|e| ApiError::Internal(format!("chosen batch has an {e}")))?;

    let order_id = Uuid::new_v4();
    let order_number = order_number(order_id);
    let response = ProcessOrderResponse {
        success: true,
        order_id,
        order_number: order_number.clone(),
        batch_id: placement.batch_id,
        is_new_batch: placement.is_new,
        pricing: Pricing::of(&quote),
        savings: Savings::of(&quote),
        batch_fill_percentage: fill_after.percentage(),
        fill_percentage: fill_after.percentage(),
    };
    let response = serde_json::to_value(&response)
        .map_err(|e| ApiError::Internal(format!("serialize response: {e}")))?;
    Ok(Prepared::Order(
        Box::new(PricedOrder {
            order_id,
            order_number,
            placement,
            quote,
        }),
        response,
    ))
}

/// Finds and locks the batch for the order, or opens one (behaviour §6 steps 2–3).
async fn place(
    sql: &Sql<'_>,
    req: &ProcessOrderRequest,
    ctx: &JobContext<'_>,
) -> Result<Placement, ApiError> {
    let quantity = i64::from(req.quantity);
    // Orders of one category take turns (see the module docs): the category's
    // lock, then the search, in one round trip.
    let found =
        orders::lock_category_and_find_batch(sql, &req.product_category, quantity, &req.variant)
            .await?;
    if let Some(f) = found {
        // Postgres checked these on the locked row; this guards the query's future.
        let fits = f.current_quantity + quantity <= f.target_quantity
            && (f.has_variant || f.style_count < f.max_styles);
        if !fits {
            return Err(ApiError::Internal(format!(
                "locked batch {} does not fit the order",
                f.id
            )));
        }
        return Ok(Placement {
            batch_id: f.id,
            is_new: false,
            current_quantity: f.current_quantity,
            target_quantity: f.target_quantity,
            style_count_before: f.style_count,
            has_variant: f.has_variant,
            unit_price_base: f.unit_price_base,
            premium_percent: f.premium_percent,
        });
    }
    let terms = orders::cheapest_supplier(sql, quantity)
        .await?
        .ok_or_else(|| ApiError::Unprocessable("No suitable supplier found".into()))?;
    let (batch_id, _window) = orders::create_batch(
        sql,
        &req.product_category,
        &req.product_variant_base,
        &terms,
        ctx.settings.batch_window_days,
    )
    .await?;
    Ok(Placement {
        batch_id,
        is_new: true,
        current_quantity: 0,
        target_quantity: i64::from(terms.moq_per_batch),
        style_count_before: 0,
        has_variant: false,
        unit_price_base: terms.base_price,
        premium_percent: terms.premium_percent,
    })
}

/// `BO-<UTC date>-<12 hex digits>`: readable, sortable by day, and with 48
/// random bits from the order's v4 id, unique in practice (the column's unique
/// constraint is the guarantee).
fn order_number(order_id: Uuid) -> String {
    let hex = order_id.simple().to_string().to_uppercase();
    format!("BO-{}-{}", chrono::Utc::now().format("%Y%m%d"), &hex[..12])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: Value, p: &Principal) -> Result<ProcessOrderRequest, ApiError> {
        ProcessOrderRequest::parse(&Data::new(Some(&v)).unwrap(), p)
    }

    fn valid() -> Value {
        json!({"productCategory": "t-shirts", "productVariantBase": "crew-neck", "quantity": 50,
               "styleDetails": {"variant": "navy-m"}, "buyerId": "550e8400-e29b-41d4-a716-446655440000"})
    }

    #[test]
    fn order_numbers_start_with_bo() {
        let n = order_number(Uuid::new_v4());
        assert!(n.starts_with("BO-") && n.len() == 3 + 8 + 1 + 12, "{n}");
    }

    #[test]
    fn a_valid_request_parses() {
        let r = parse(valid(), &Principal::Trusted).unwrap();
        assert_eq!(r.quantity, 50);
        assert_eq!(r.variant, "navy-m");
        assert_eq!(r.idempotency_key, None);
    }

    #[test]
    fn variants_are_at_most_200_characters() {
        let mut v = valid();
        v["styleDetails"]["variant"] = json!("é".repeat(200));
        assert!(
            parse(v.clone(), &Principal::Trusted).is_ok(),
            "200 characters, 400 bytes"
        );
        v["styleDetails"]["variant"] = json!("x".repeat(201));
        let err = parse(v, &Principal::Trusted).unwrap_err();
        assert_eq!(err.status(), 400);
        assert!(err.to_string().starts_with("styleDetails.variant"), "{err}");
    }

    #[test]
    fn buyers_order_for_themselves_only() {
        let me = Uuid::parse_str("550e8400-e29b-41d4-a716-446655440000").unwrap();
        let buyer = Principal::Buyer { user_id: me };
        let mut v = valid();
        assert_eq!(parse(v.clone(), &buyer).unwrap().buyer_id, me);
        v.as_object_mut().unwrap().remove("buyerId");
        assert_eq!(
            parse(v.clone(), &buyer).unwrap().buyer_id,
            me,
            "omitted means the buyer"
        );
        assert_eq!(
            parse(v.clone(), &Principal::Trusted).unwrap_err().status(),
            400
        );
        v["buyerId"] = json!(Uuid::new_v4());
        assert_eq!(parse(v, &buyer).unwrap_err().status(), 403);
    }
}
