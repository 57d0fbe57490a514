use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::*;

const BUYER: &str = "550e8400-e29b-41d4-a716-446655440000";

async fn place(t: &TestApp, data: Value) -> Value {
    t.direct("process-order", data)
        .await
        .unwrap_or_else(|e| panic!("process-order failed: {}", e.message))
}

fn id(v: &Value, key: &str) -> Uuid {
    Uuid::parse_str(v[key].as_str().unwrap_or_else(|| panic!("{key} in {v}"))).unwrap()
}

/// The whole flow with several suppliers, checking every column the job writes
/// and every pricing figure.
#[tokio::test]
async fn orders_walk_through_suppliers_batches_and_prices() {
    let t = TestApp::spawn().await;
    let _suspended = t.terms("suspended", 5000, 4, "5.00", Some("5.00"), 7).await;
    let slow = t.terms("active", 200, 4, "8.50", Some("5.00"), 21).await;
    let fast = t.terms("active", 200, 3, "8.50", Some("7.50"), 14).await;
    let big = t.terms("active", 1000, 6, "12.00", None, 30).await;
    let _pending = t.terms("pending", 200, 4, "1.00", None, 1).await;

    // 1. First order of a category: a new batch from the cheapest active
    //    supplier; the price tie with `slow` is broken by lead time.
    let first = place(&t, order_data("t-shirts", 50, "navy-m", BUYER)).await;
    assert_eq!(first["isNewBatch"], true);
    assert_eq!(first["success"], true);
    assert_eq!(
        first["pricing"],
        json!({"factoryPrice": 8.5, "buyerPrice": 10.63, "soloOrderPrice": 12.75,
               "unitMargin": 2.13, "totalMargin": 106.5})
    );
    assert_eq!(
        first["savings"],
        json!({"perUnit": 2.12, "total": 106.0, "percentage": 16.6})
    );
    assert_eq!(first["batchFillPercentage"], json!(25.0));
    assert!(first["orderNumber"].as_str().unwrap().starts_with("BO-"));
    assert!(first.get("idempotentReplay").is_none());
    let batch = id(&first, "batchId");
    let b = t
        .db
        .query_one(
            "SELECT supplier_id, target_quantity, current_quantity, current_style_count, max_styles,
                    unit_price_base::text, complexity_multiplier::text, batch_status, product_category,
                    product_variant_base, estimated_start_date = current_date + 14,
                    window_closes_at BETWEEN now() + interval '7 days' - interval '1 minute'
                                         AND now() + interval '7 days'
               FROM production_batches WHERE id = $1",
            &[&batch],
        )
        .await
        .unwrap();
    assert_eq!(b.get::<_, Uuid>(0), fast);
    assert_ne!(b.get::<_, Uuid>(0), slow);
    assert_eq!(b.get::<_, i32>(1), 200);
    assert_eq!(b.get::<_, i32>(2), 50);
    assert_eq!(b.get::<_, i32>(3), 1);
    assert_eq!(b.get::<_, i32>(4), 3, "max_styles from the terms");
    assert_eq!(b.get::<_, String>(5), "8.50");
    assert_eq!(b.get::<_, String>(6), "1.00");
    assert_eq!(b.get::<_, String>(7), "filling");
    assert_eq!(b.get::<_, String>(8), "t-shirts");
    assert_eq!(b.get::<_, String>(9), "crew-neck");
    assert!(b.get::<_, bool>(10), "estimated start = today + lead time");
    assert!(b.get::<_, bool>(11), "window = now + BATCH_WINDOW_DAYS");

    let o =
        t.db.query_one(
            "SELECT order_number, buyer_id, product_type, quantity, status, workflow_status::text,
                    payment_status, buyer_price::text, supplier_price::text, idempotency_key
               FROM orders WHERE id = $1",
            &[&id(&first, "orderId")],
        )
        .await
        .unwrap();
    assert_eq!(
        o.get::<_, String>(0),
        first["orderNumber"].as_str().unwrap()
    );
    assert_eq!(o.get::<_, Uuid>(1), Uuid::parse_str(BUYER).unwrap());
    assert_eq!(o.get::<_, String>(2), "t-shirts");
    assert_eq!(o.get::<_, i32>(3), 50);
    assert_eq!(o.get::<_, String>(4), "pending");
    assert_eq!(o.get::<_, String>(5), "awaiting_payment");
    assert_eq!(o.get::<_, String>(6), "pending");
    assert_eq!(o.get::<_, String>(7), "531.50", "10.63 x 50");
    assert_eq!(o.get::<_, String>(8), "425.00", "8.50 x 50");
    assert_eq!(o.get::<_, Option<String>>(9), None);
    let c = t
        .db
        .query_one(
            "SELECT batch_id, quantity, style_details, buyer_price_per_unit::text, contribution_margin::text
               FROM batch_contributions WHERE order_id = $1",
            &[&id(&first, "orderId")],
        )
        .await
        .unwrap();
    assert_eq!(c.get::<_, Uuid>(0), batch);
    assert_eq!(c.get::<_, i32>(1), 50);
    assert_eq!(
        c.get::<_, Value>(2),
        json!({"variant": "navy-m", "notes": "as sent"})
    );
    assert_eq!(c.get::<_, String>(3), "10.63");
    assert_eq!(c.get::<_, String>(4), "106.50");

    // 2. A second style joins the batch: the supplier's own 7.5 % premium,
    //    factory 8.50 x 1.075 = 9.1375 -> 9.14, buyer 9.1375 x 1.25 = 11.42.
    let second = place(&t, order_data("t-shirts", 30, "white-l", BUYER)).await;
    assert_eq!(second["isNewBatch"], false);
    assert_eq!(id(&second, "batchId"), batch);
    assert_eq!(
        second["pricing"],
        json!({"factoryPrice": 9.14, "buyerPrice": 11.42, "soloOrderPrice": 12.75,
               "unitMargin": 2.28, "totalMargin": 68.4})
    );
    assert_eq!(
        second["savings"],
        json!({"perUnit": 1.33, "total": 39.9, "percentage": 10.4})
    );
    assert_eq!(second["batchFillPercentage"], json!(40.0));
    let (qty, styles): (i32, i32) = {
        let r = t
            .db
            .query_one(
                "SELECT current_quantity, current_style_count FROM production_batches WHERE id = $1",
                &[&batch],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!((qty, styles), (80, 2));

    // 3. Too big for the open batch and for the 200-unit suppliers: the big supplier.
    let third = place(&t, order_data("t-shirts", 600, "navy-m", BUYER)).await;
    assert_eq!(third["isNewBatch"], true);
    assert_ne!(id(&third, "batchId"), batch);
    assert_eq!(
        third["pricing"],
        json!({"factoryPrice": 12.0, "buyerPrice": 15.0, "soloOrderPrice": 18.0,
               "unitMargin": 3.0, "totalMargin": 1800.0})
    );
    assert_eq!(
        third["savings"],
        json!({"perUnit": 3.0, "total": 1800.0, "percentage": 16.7})
    );
    assert_eq!(third["batchFillPercentage"], json!(60.0));
    let supplier: Uuid =
        t.db.query_one(
            "SELECT supplier_id FROM production_batches WHERE id = $1",
            &[&id(&third, "batchId")],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(supplier, big);

    // 4. Nobody active can take 2000 (only the suspended one could): 422, nothing written.
    let before = t.fingerprint().await;
    let err = t
        .direct(
            "process-order",
            order_data("t-shirts", 2000, "navy-m", BUYER),
        )
        .await
        .unwrap_err();
    assert_eq!(err.status, 422);
    assert_eq!(error_json(&err)["error"], "No suitable supplier found");
    assert_eq!(t.fingerprint().await, before);
}

/// A batch full of styles takes no new style; the order opens another batch,
/// while a style the batch already has still joins it.
#[tokio::test]
async fn style_limits_force_a_new_batch() {
    let t = TestApp::spawn().await;
    t.terms("active", 100, 2, "10.00", Some("5"), 10).await;
    let a = place(&t, order_data("hoodies", 10, "a", BUYER)).await;
    let b = place(&t, order_data("hoodies", 10, "b", BUYER)).await;
    assert_eq!(id(&a, "batchId"), id(&b, "batchId"));
    let c = place(&t, order_data("hoodies", 10, "c", BUYER)).await;
    assert_eq!(
        c["isNewBatch"], true,
        "a third style does not fit max_styles 2"
    );
    let a_again = place(&t, order_data("hoodies", 10, "a", BUYER)).await;
    assert_eq!(
        id(&a_again, "batchId"),
        id(&a, "batchId"),
        "fullest batch with the style"
    );
    // An existing style costs no extra premium: 2 styles -> 1.05.
    assert_eq!(a_again["pricing"]["factoryPrice"], json!(10.5));
    assert_eq!(
        t.count(&format!(
            "SELECT current_style_count::int8 FROM production_batches WHERE id = '{}'",
            id(&a, "batchId")
        ))
        .await,
        2
    );
}

/// Fullest batch first; closed windows, other categories and non-filling
/// batches are never joined; a batch without room is passed over.
#[tokio::test]
async fn orders_join_the_fullest_open_batch_of_their_category() {
    let t = TestApp::spawn().await;
    t.terms("active", 200, 4, "10.00", Some("5"), 10).await;
    let emptier = t.batch_in("caps", 50, 200, 86_400.0, "filling").await;
    let fuller = t.batch_in("caps", 120, 200, 86_400.0, "filling").await;
    let _closed = t.batch_in("caps", 150, 200, -60.0, "filling").await;
    let _confirmed = t.batch_in("caps", 180, 200, 86_400.0, "confirmed").await;
    let _other = t.batch_in("socks", 190, 200, 86_400.0, "filling").await;

    let one = place(&t, order_data("caps", 10, "red", BUYER)).await;
    assert_eq!(id(&one, "batchId"), fuller);
    // 120/200 before (60 %: markup 1.20), first style of the seeded batch (1.00).
    assert_eq!(one["pricing"]["buyerPrice"], json!(12.0));
    assert_eq!(one["batchFillPercentage"], json!(65.0));
    let big = place(&t, order_data("caps", 90, "red", BUYER)).await;
    assert_eq!(
        id(&big, "batchId"),
        emptier,
        "130 + 90 > 200, so the next one"
    );
    let exact = place(&t, order_data("caps", 70, "red", BUYER)).await;
    assert_eq!(id(&exact, "batchId"), fuller, "130 + 70 = 200 fits exactly");
    assert_eq!(exact["batchFillPercentage"], json!(100.0));
    assert_eq!(
        t.count(&format!(
            "SELECT current_quantity::int8 FROM production_batches WHERE id = '{fuller}'"
        ))
        .await,
        200
    );
}

#[tokio::test]
async fn every_validation_rule_is_a_400_naming_the_field() {
    let t = TestApp::spawn().await;
    t.terms("active", 200, 4, "10.00", None, 10).await;
    let before = t.fingerprint().await;
    let base = order_data("t-shirts", 5, "navy-m", BUYER);
    let with = |key: &str, value: Value| {
        let mut v = base.clone();
        v[key] = value;
        v
    };
    let without = |key: &str| {
        let mut v = base.clone();
        v.as_object_mut().unwrap().remove(key);
        v
    };
    let cases = [
        (without("productCategory"), "productCategory"),
        (with("productCategory", json!("   ")), "productCategory"),
        (
            with("productCategory", json!("x".repeat(101))),
            "productCategory",
        ),
        (with("productCategory", json!(7)), "productCategory"),
        (without("productVariantBase"), "productVariantBase"),
        (with("productVariantBase", json!("")), "productVariantBase"),
        (
            with("productVariantBase", json!("y".repeat(101))),
            "productVariantBase",
        ),
        (without("quantity"), "quantity"),
        (with("quantity", json!(0)), "quantity"),
        (with("quantity", json!(-5)), "quantity"),
        (with("quantity", json!(1_000_001)), "quantity"),
        (with("quantity", json!(5.5)), "quantity"),
        (with("quantity", json!(5.0)), "quantity"),
        (with("quantity", json!("5")), "quantity"),
        (without("styleDetails"), "styleDetails"),
        (with("styleDetails", json!("navy")), "styleDetails"),
        (
            with("styleDetails", json!({"notes": "no variant"})),
            "styleDetails.variant",
        ),
        (
            with("styleDetails", json!({"variant": ""})),
            "styleDetails.variant",
        ),
        (
            with("styleDetails", json!({"variant": 3})),
            "styleDetails.variant",
        ),
        (
            with(
                "styleDetails",
                json!({"variant": "v", "notes": "n".repeat(16 * 1024)}),
            ),
            "styleDetails",
        ),
        (without("buyerId"), "buyerId"),
        (with("buyerId", json!("not-a-uuid")), "buyerId"),
        (with("idempotencyKey", json!("")), "idempotencyKey"),
        (
            with("idempotencyKey", json!("k".repeat(129))),
            "idempotencyKey",
        ),
        (with("idempotencyKey", json!(12)), "idempotencyKey"),
    ];
    for (data, field) in cases {
        let err = t.direct("process-order", data.clone()).await.unwrap_err();
        assert_eq!(err.status, 400, "{data}");
        let msg = error_json(&err)["error"].as_str().unwrap().to_owned();
        assert!(msg.starts_with(field), "{field}: {msg}");
    }
    // The limits themselves are accepted.
    let ok = with("productCategory", json!("c".repeat(100)));
    place(&t, with("idempotencyKey", json!("k".repeat(128)))).await;
    let err = t.direct("process-order", ok).await;
    assert!(err.is_ok(), "100 characters are allowed");
    assert_ne!(t.fingerprint().await, before);
}

#[tokio::test]
async fn idempotent_replay_returns_the_original_response_and_writes_nothing() {
    let t = TestApp::spawn().await;
    t.terms("active", 200, 4, "10.00", None, 10).await;
    let mut data = order_data("t-shirts", 20, "navy-m", BUYER);
    data["idempotencyKey"] = json!("order-7f3a");
    let first = place(&t, data.clone()).await;
    // Another order moves the batch on; the replay still answers as the first time.
    place(&t, order_data("t-shirts", 40, "navy-m", BUYER)).await;
    let before = t.fingerprint().await;

    let replay = place(&t, data.clone()).await;
    assert_eq!(replay["idempotentReplay"], true);
    let mut without_flag = replay.clone();
    without_flag
        .as_object_mut()
        .unwrap()
        .remove("idempotentReplay");
    assert_eq!(without_flag, first);
    assert_eq!(t.fingerprint().await, before, "a replay writes nothing");
    assert_eq!(first["fillPercentage"], first["batchFillPercentage"]);

    // An answer recorded before `fillPercentage` was sent: the replay has it too.
    t.db.execute(
        "UPDATE order_idempotency SET response = response - 'fillPercentage'",
        &[],
    )
    .await
    .unwrap();
    let old_replay = place(&t, data.clone()).await;
    assert_eq!(old_replay["fillPercentage"], first["batchFillPercentage"]);
    assert_eq!(old_replay["fillPercentage"].as_f64(), Some(10.0));

    // The same key with a different request: 409, nothing written.
    let mut other = data.clone();
    other["quantity"] = json!(21);
    let err = t.direct("process-order", other).await.unwrap_err();
    assert_eq!(err.status, 409);
    assert_eq!(t.fingerprint().await, before);

    // Over HTTP the Idempotency-Key header is the same key.
    data.as_object_mut().unwrap().remove("idempotencyKey");
    let body = json!({"jobType": "process-order", "data": data}).to_string();
    let admin = bearer(&admin_token());
    let resp = t
        .invoke(http_v2(
            "POST",
            Some(&body),
            &[("authorization", &admin), ("Idempotency-Key", "order-7f3a")],
        ))
        .await
        .unwrap();
    let (status, body) = proxy(&resp);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["idempotentReplay"], true);
    assert_eq!(body["orderId"], first["orderId"]);
    assert_eq!(
        t.count("SELECT count(*) FROM orders WHERE idempotency_key = 'order-7f3a'")
            .await,
        1
    );
}

/// Keys belong to their buyer: two buyers with one key get two orders, and
/// each buyer's replay answers with their own order (never a 409 that tells
/// one buyer the other's key exists).
#[tokio::test]
async fn idempotency_keys_are_scoped_to_the_buyer() {
    let t = TestApp::spawn().await;
    t.terms("active", 500, 4, "10.00", None, 10).await;
    let other_buyer = "00000000-0000-4000-8000-0000000b0002";
    let keyed = |buyer: &str, quantity: i64| {
        let mut d = order_data("t-shirts", quantity, "navy-m", buyer);
        d["idempotencyKey"] = json!("shared-key");
        d
    };
    let a = place(&t, keyed(BUYER, 10)).await;
    let b = place(&t, keyed(other_buyer, 30)).await;
    assert_ne!(a["orderId"], b["orderId"]);
    assert_eq!(
        b.get("idempotentReplay"),
        None,
        "B's first request is no replay of A's"
    );
    assert_eq!(
        t.count("SELECT count(*) FROM orders WHERE idempotency_key = 'shared-key'")
            .await,
        2
    );
    for (buyer, quantity, first) in [(BUYER, 10, &a), (other_buyer, 30, &b)] {
        let replay = place(&t, keyed(buyer, quantity)).await;
        assert_eq!(replay["idempotentReplay"], true);
        assert_eq!(
            replay["orderId"], first["orderId"],
            "{buyer} gets their own order"
        );
    }
    // A different request under a buyer's own key is still a 409, for that buyer only.
    let err = t
        .direct("process-order", keyed(BUYER, 11))
        .await
        .unwrap_err();
    assert_eq!(err.status, 409);
    assert_eq!(t.count("SELECT count(*) FROM orders").await, 2);
}

/// Eight instances send the same keyed request at once: one order.
#[tokio::test]
async fn concurrent_requests_with_one_key_make_one_order() {
    let t = TestApp::spawn().await;
    t.terms("active", 500, 4, "10.00", None, 10).await;
    let mut data = order_data("t-shirts", 20, "navy-m", BUYER);
    data["idempotencyKey"] = json!("same-key");
    let mut instances = Vec::new();
    for _ in 0..8 {
        instances.push(t.another_instance(&[]).await);
    }
    let answers = futures::future::join_all(
        instances
            .iter()
            .map(|app| app.direct("process-order", data.clone())),
    )
    .await;
    let mut order_ids = Vec::new();
    let mut replays = 0;
    for a in answers {
        let a = a.unwrap_or_else(|e| panic!("{}", e.message));
        order_ids.push(a["orderId"].clone());
        replays += usize::from(a["idempotentReplay"] == true);
    }
    order_ids.dedup();
    assert_eq!(order_ids.len(), 1, "{order_ids:?}");
    assert_eq!(replays, 7);
    assert_eq!(t.count("SELECT count(*) FROM orders").await, 1);
    assert_eq!(
        t.count("SELECT sum(current_quantity) FROM production_batches")
            .await,
        20
    );
}

/// 48 orders from 8 parallel instances into one category: no batch over its
/// target or its style limit, no increment lost, every order placed once.
#[tokio::test]
async fn racing_orders_keep_every_batch_invariant() {
    let t = TestApp::spawn().await;
    t.terms("active", 120, 3, "10.00", Some("5"), 10).await;
    let mut instances = Vec::new();
    for _ in 0..8 {
        instances.push(t.another_instance(&[]).await);
    }
    let variants = ["a", "b", "c", "d", "e"];
    let tasks = instances.iter().enumerate().map(|(i, app)| async move {
        let mut placed = Vec::new();
        for j in 0..6 {
            let qty = 5 + ((i * 7 + j * 13) % 30) as i64;
            let variant = variants[(i + j) % variants.len()];
            let resp = app
                .direct("process-order", order_data("jackets", qty, variant, BUYER))
                .await
                .unwrap_or_else(|e| panic!("order {i}/{j} failed: {}", e.message));
            placed.push((qty, resp));
        }
        placed
    });
    let results: Vec<(i64, Value)> = futures::future::join_all(tasks)
        .await
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(results.len(), 48);
    let total: i64 = results.iter().map(|(q, _)| q).sum();

    assert_eq!(t.count("SELECT count(*) FROM orders").await, 48);
    assert_eq!(
        t.count("SELECT count(*) FROM batch_contributions").await,
        48
    );
    assert_eq!(
        t.count("SELECT sum(current_quantity) FROM production_batches")
            .await,
        total,
        "no increment lost"
    );
    assert_eq!(
        t.count(
            "SELECT count(*) FROM production_batches b
              WHERE b.current_quantity <> (SELECT COALESCE(sum(quantity), 0) FROM batch_contributions c WHERE c.batch_id = b.id)
                 OR b.current_quantity > b.target_quantity
                 OR b.current_style_count <> (SELECT count(DISTINCT style_details->>'variant') FROM batch_contributions c WHERE c.batch_id = b.id)
                 OR b.current_style_count > b.max_styles"
        )
        .await,
        0,
        "every batch: quantity = sum of contributions <= target, styles = distinct variants <= max"
    );
    assert!(t.count("SELECT count(*) FROM production_batches").await >= (total + 119) / 120);
}

/// Buyers order for themselves over HTTP; a different buyerId is a 403.
#[tokio::test]
async fn buyers_place_orders_for_themselves_over_http() {
    let t = TestApp::spawn().await;
    t.terms("active", 200, 4, "10.00", None, 10).await;
    let buyer = bearer(&buyer_token());
    let mut data = order_data("t-shirts", 5, "navy-m", BUYER_SUB);
    data.as_object_mut().unwrap().remove("buyerId");
    let body = json!({"jobType": "process-order", "data": data}).to_string();
    let (status, resp) = proxy(
        &t.invoke(http_v1("POST", Some(&body), &[("Authorization", &buyer)]))
            .await
            .unwrap(),
    );
    assert_eq!(status, 200, "{resp}");
    let buyer_id: Uuid =
        t.db.query_one(
            "SELECT buyer_id FROM orders WHERE id = $1",
            &[&id(&resp, "orderId")],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(buyer_id, Uuid::parse_str(BUYER_SUB).unwrap());

    let before = t.fingerprint().await;
    let for_another = json!({"jobType": "process-order",
                             "data": order_data("t-shirts", 5, "navy-m", BUYER)})
    .to_string();
    let (status, resp) = proxy(
        &t.invoke(http_v2(
            "POST",
            Some(&for_another),
            &[("authorization", &buyer)],
        ))
        .await
        .unwrap(),
    );
    assert_eq!(status, 403, "{resp}");
    assert_eq!(t.fingerprint().await, before);
}

/// An order and an orchestrate race for the same batch many times: the order
/// either lands before the batch is confirmed (and is counted in its supplier
/// order) or goes elsewhere; never into a batch that has left `filling`.
#[tokio::test]
async fn orders_never_land_in_a_batch_orchestrate_just_decided() {
    let t = TestApp::spawn().await;
    t.terms("active", 200, 4, "10.00", None, 10).await;
    let other = t.another_instance(&[]).await;
    for round in 0..15 {
        let batch = t.batch_in("bags", 0, 200, 3600.0, "filling").await;
        // 150 units seeded through a real order keep current_quantity = Σ contributions.
        t.db.execute(
            "UPDATE production_batches SET current_quantity = 150 WHERE id = $1",
            &[&batch],
        )
        .await
        .unwrap();
        t.order(batch, 150, "12.00", "paid").await;
        let (order, run) = tokio::join!(
            other.direct("process-order", order_data("bags", 10, "navy-m", BUYER)),
            t.direct("orchestrate", json!({}))
        );
        let order = order.unwrap_or_else(|e| panic!("round {round}: {}", e.message));
        run.unwrap_or_else(|e| panic!("round {round}: {}", e.message));
        let joined = id(&order, "batchId") == batch;
        let row = t
            .db
            .query_one(
                "SELECT b.current_quantity, (SELECT sum(quantity) FROM batch_contributions WHERE batch_id = b.id)
                   FROM production_batches b WHERE b.id = $1",
                &[&batch],
            )
            .await
            .unwrap();
        let current: i32 = row.get(0);
        let summed: i64 = row.get(1);
        assert_eq!(i64::from(current), summed, "round {round}");
        assert_eq!(current, if joined { 160 } else { 150 }, "round {round}");
        // The batch was confirmed in every round, by this run or the next.
        t.direct("orchestrate", json!({})).await.unwrap();
        assert_eq!(t.status_of(batch).await, "confirmed");
        let buyer_total: String =
            t.db.query_one(
                "SELECT buyer_price::text FROM supplier_orders WHERE batch_id = $1",
                &[&batch],
            )
            .await
            .unwrap()
            .get(0);
        let expected = if joined {
            format!(
                "{:.2}",
                1800.0 + 10.0 * order["pricing"]["buyerPrice"].as_f64().unwrap()
            )
        } else {
            "1800.00".to_owned()
        };
        assert_eq!(
            buyer_total, expected,
            "round {round}: the supplier order counts what the batch holds"
        );
    }
}
