use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::*;

const HOUR: f64 = 3600.0;

/// Every tier of behaviour §5 at its exact boundaries, in one run.
#[tokio::test]
async fn every_tier_at_its_exact_boundary() {
    let t = TestApp::spawn().await;
    let confirm_open = t.batch(150, 200, 2.0 * HOUR).await; // exactly 75 %, window open
    let confirm_closed = t.batch(200, 200, -HOUR).await;
    let review_top = t.batch(149, 200, -HOUR).await; // 74.5 %
    let review_low = t.batch(100, 200, -HOUR).await; // exactly 50 %
    let cancel_top = t.batch(99, 200, -HOUR).await; // 49.5 %
    let cancel_empty = t.batch(0, 200, -0.5).await; // closed half a second ago
    let nearing = t.batch(3, 5, HOUR).await; // exactly 60 %
    let quiet = t.batch(119, 200, HOUR).await; // 59.5 %, open: not reported
    let just_open = t.batch(10, 200, 30.0).await; // closes in 30 s: open, nothing to do
    let skipped = t.batch(10, 0, -HOUR).await;
    let outside = t.batch(190, 200, 25.0 * HOUR).await; // beyond the 24 h look-ahead
    let not_filling = t
        .batch_in("t-shirts", 10, 200, -HOUR, "in_production")
        .await;

    let resp = t.orchestrate(json!({})).await;
    let r = by_batch(&resp);
    let action = |id: Uuid| r.get(&id).map(|v| v["action"].as_str().unwrap().to_owned());

    assert_eq!(action(confirm_open).as_deref(), Some("confirmed"));
    assert_eq!(action(confirm_closed).as_deref(), Some("confirmed"));
    assert_eq!(action(review_top).as_deref(), Some("needs_review"));
    assert_eq!(action(review_low).as_deref(), Some("needs_review"));
    assert_eq!(action(cancel_top).as_deref(), Some("cancelled"));
    assert_eq!(action(cancel_empty).as_deref(), Some("cancelled"));
    assert_eq!(action(nearing).as_deref(), Some("nearing_target"));
    assert_eq!(action(skipped).as_deref(), Some("skipped"));
    assert_eq!(action(quiet), None);
    assert_eq!(action(just_open), None);
    assert_eq!(action(outside), None);
    assert_eq!(action(not_filling), None);

    assert_eq!(r[&confirm_open]["fillPercentage"], json!(75.0));
    assert_eq!(r[&review_top]["fillPercentage"], json!(74.5));
    assert_eq!(
        r[&review_top]["message"],
        "Batch 50-75% filled, window closed"
    );
    assert_eq!(r[&cancel_top]["fillPercentage"], json!(49.5));
    assert_eq!(r[&nearing]["fillPercentage"], json!(60.0));
    assert_eq!(
        r[&nearing]["message"],
        "Batch nearing target - consider promotion"
    );
    assert_eq!(r[&skipped]["message"], "invalid target_quantity");

    // Candidates: all filling batches inside the look-ahead (10), not `outside`
    // nor `not_filling`.
    assert_eq!(resp["evaluated"], 10);
    assert_eq!(resp["processed"], 8);
    assert_eq!(resp["success"], true);
    assert_eq!(resp["hasMore"], false);
    assert!(resp.get("dryRun").is_none());

    assert_eq!(t.status_of(confirm_open).await, "confirmed");
    assert_eq!(t.status_of(review_low).await, "needs_review");
    assert_eq!(t.status_of(cancel_empty).await, "cancelled");
    assert_eq!(t.status_of(nearing).await, "filling");
    assert_eq!(t.status_of(skipped).await, "filling");
    assert_eq!(t.status_of(outside).await, "filling");
    assert_eq!(t.status_of(not_filling).await, "in_production");
    assert_eq!(t.events_of(nearing).await, ["batch.nearing_target"]);
    assert_eq!(t.events_of(review_top).await, ["batch.needs_review"]);
    assert!(t.events_of(quiet).await.is_empty());
    assert!(t.events_of(skipped).await.is_empty());

    // Results are ordered by window, then id.
    let windows: Vec<Uuid> = resp["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| Uuid::parse_str(r["batchId"].as_str().unwrap()).unwrap())
        .collect();
    let mut sorted = Vec::new();
    for row in
        t.db.query(
            "SELECT id FROM production_batches WHERE id = ANY($1) ORDER BY window_closes_at, id",
            &[&windows],
        )
        .await
        .unwrap()
    {
        sorted.push(row.get::<_, Uuid>(0));
    }
    assert_eq!(windows, sorted);
}

/// Confirm writes exactly what behaviour §5 lists, with decimal money.
#[tokio::test]
async fn confirm_creates_one_supplier_order_with_exact_totals() {
    let t = TestApp::spawn().await;
    let batch = t.batch(160, 200, -HOUR).await;
    t.order(batch, 100, "12.60", "paid").await;
    t.order(batch, 60, "13.15", "pending").await;

    let resp = t.orchestrate(json!({})).await;
    let result = &by_batch(&resp)[&batch];
    assert_eq!(result["action"], "confirmed");
    assert_eq!(result["fillPercentage"], json!(80.0));
    let so_id = Uuid::parse_str(result["supplierOrderId"].as_str().unwrap()).unwrap();

    let row =
        t.db.query_one(
            "SELECT so.batch_id, so.order_number, so.supplier_id = b.supplier_id, so.quantity,
                    so.product_type, so.status, so.supplier_price::text, so.buyer_price::text,
                    so.margin::text, so.created_by IS NULL,
                    b.batch_status, b.actual_start_date = current_date
               FROM supplier_orders so JOIN production_batches b ON b.id = so.batch_id
              WHERE so.id = $1",
            &[&so_id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, Uuid>(0), batch);
    assert_eq!(row.get::<_, String>(1), format!("BATCH-{batch}"));
    assert!(row.get::<_, bool>(2), "supplier is the batch's");
    assert_eq!(row.get::<_, i32>(3), 200, "quantity = target_quantity");
    assert_eq!(row.get::<_, String>(4), "t-shirts");
    assert_eq!(row.get::<_, String>(5), "pending");
    assert_eq!(row.get::<_, String>(6), "2000.00", "10.00 x 200");
    // 100 x 12.60 + 60 x 13.15 = 1260.00 + 789.00
    assert_eq!(row.get::<_, String>(7), "2049.00");
    assert_eq!(row.get::<_, String>(8), "49.00");
    assert!(row.get::<_, bool>(9));
    assert_eq!(row.get::<_, String>(10), "confirmed");
    assert!(row.get::<_, bool>(11), "actual_start_date is today");

    let ev = t
        .db
        .query_one(
            "SELECT payload FROM batch_events WHERE batch_id = $1 AND event_type = 'batch.confirmed'",
            &[&batch],
        )
        .await
        .unwrap();
    let payload: Value = ev.get(0);
    assert_eq!(payload["supplierOrderId"], json!(so_id.to_string()));
    assert_eq!(t.events_of(batch).await, ["batch.confirmed"]);
    // Orders of a confirmed batch are not touched.
    assert_eq!(
        t.count("SELECT count(*) FROM orders WHERE status = 'pending'")
            .await,
        2
    );
}

/// Cancel moves every live order, flags refunds and leaves history and events.
#[tokio::test]
async fn cancel_cancels_orders_flags_refunds_and_records_history() {
    let t = TestApp::spawn().await;
    let batch = t.batch(90, 200, -HOUR).await; // 45 %
    let paid = t.order(batch, 40, "12.50", "paid").await;
    let partial = t.order(batch, 30, "12.50", "partial").await;
    let pending = t.order(batch, 10, "12.50", "pending").await;
    let gone = t.order(batch, 10, "12.50", "paid").await;
    t.db.execute(
        "UPDATE orders SET status = 'cancelled', workflow_status = 'cancelled' WHERE id = $1",
        &[&gone],
    )
    .await
    .unwrap();
    let other_batch = t.batch(10, 200, 5.0 * HOUR).await;
    let bystander = t.order(other_batch, 10, "12.50", "paid").await;

    let resp = t.orchestrate(json!({})).await;
    let result = &by_batch(&resp)[&batch];
    assert_eq!(result["action"], "cancelled");
    assert_eq!(result["fillPercentage"], json!(45.0));
    assert_eq!(
        result["ordersCancelled"], 3,
        "the already-cancelled order is not counted"
    );

    assert_eq!(t.status_of(batch).await, "cancelled");
    for (order, payment) in [
        (paid, "refund_pending"),
        (partial, "refund_pending"),
        (pending, "pending"),
    ] {
        let row =
            t.db.query_one(
                "SELECT status, workflow_status::text, payment_status FROM orders WHERE id = $1",
                &[&order],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), "cancelled");
        assert_eq!(row.get::<_, String>(1), "cancelled");
        assert_eq!(row.get::<_, String>(2), payment, "order {order}");
        let hist = t
            .db
            .query(
                "SELECT old_status::text, new_status::text, notes FROM order_status_history WHERE order_id = $1",
                &[&order],
            )
            .await
            .unwrap();
        assert_eq!(hist.len(), 1);
        assert_eq!(hist[0].get::<_, String>(0), "awaiting_payment");
        assert_eq!(hist[0].get::<_, String>(1), "cancelled");
        let notes: String = hist[0].get(2);
        assert!(
            notes.contains(&batch.to_string()) && notes.contains("45"),
            "{notes}"
        );
    }
    // The order that was already cancelled is left alone: no history, payment as it was.
    assert_eq!(
        t.count(&format!(
            "SELECT count(*) FROM order_status_history WHERE order_id = '{gone}'"
        ))
        .await,
        0
    );
    assert_eq!(
        t.count(&format!(
            "SELECT count(*) FROM orders WHERE id = '{gone}' AND payment_status = 'paid'"
        ))
        .await,
        1
    );
    // Another batch's order is untouched.
    assert_eq!(
        t.count(&format!(
            "SELECT count(*) FROM orders WHERE id = '{bystander}' AND status = 'pending'"
        ))
        .await,
        1
    );

    let events = t
        .db
        .query(
            "SELECT event_type, order_id, payload FROM batch_events WHERE batch_id = $1 ORDER BY id",
            &[&batch],
        )
        .await
        .unwrap();
    let count = |ty: &str| {
        events
            .iter()
            .filter(|r| r.get::<_, String>(0) == ty)
            .count()
    };
    assert_eq!(count("batch.cancelled"), 1);
    assert_eq!(count("order.cancelled"), 3);
    assert_eq!(count("order.refund_requested"), 2);
    for r in events
        .iter()
        .filter(|r| r.get::<_, String>(0) == "order.refund_requested")
    {
        let order: Uuid = r.get(1);
        assert!(order == paid || order == partial);
        let payload: Value = r.get(2);
        let expected = if order == paid { 500.0 } else { 375.0 };
        assert_eq!(payload["amount"].as_f64(), Some(expected), "{payload}");
    }
}

/// Money comes from what buyers cannot edit (behaviour §4.3): the live app lets
/// a buyer rewrite any column of their own order, `buyer_price` included, so
/// the refund a cancel requests and the total of the supplier order a confirm
/// makes are the contributions' quantity × `buyer_price_per_unit`.
#[tokio::test]
async fn refunds_and_supplier_totals_ignore_a_buyer_edited_order_price() {
    let t = TestApp::spawn().await;
    let cancel = t.batch(40, 200, -HOUR).await; // 20 %
    let paid = t.order(cancel, 40, "12.50", "paid").await; // contributes 500.00
    let confirm = t.batch(160, 200, -HOUR).await; // 80 %
    let big = t.order(confirm, 160, "11.25", "paid").await; // contributes 1800.00
    for (order, edited) in [(paid, "0.01"), (big, "99999.99")] {
        let edited: rust_decimal::Decimal = edited.parse().unwrap();
        t.db.execute(
            "UPDATE orders SET buyer_price = $2 WHERE id = $1",
            &[&order, &edited],
        )
        .await
        .unwrap();
    }

    let resp = t.orchestrate(json!({})).await;
    let r = by_batch(&resp);
    assert_eq!(r[&cancel]["action"], "cancelled");
    assert_eq!(r[&confirm]["action"], "confirmed");

    let refund: Value = t
        .db
        .query_one(
            "SELECT payload FROM batch_events WHERE event_type = 'order.refund_requested' AND order_id = $1",
            &[&paid],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(refund["amount"].as_f64(), Some(500.0), "{refund}");
    assert_eq!(refund["previousPaymentStatus"], "paid");

    let total: String =
        t.db.query_one(
            "SELECT buyer_price::text FROM supplier_orders WHERE batch_id = $1",
            &[&confirm],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(total, "1800.00");
    let confirmed: Value = t
        .db
        .query_one(
            "SELECT payload FROM batch_events WHERE event_type = 'batch.confirmed' AND batch_id = $1",
            &[&confirm],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        confirmed["buyerPrice"].as_f64(),
        Some(1800.0),
        "{confirmed}"
    );
}

/// A second run acts on nothing twice: no second supplier order, no second
/// cancellation, no second nearing-target event.
#[tokio::test]
async fn a_second_run_acts_on_nothing_twice() {
    let t = TestApp::spawn().await;
    let confirm = t.batch(180, 200, -HOUR).await;
    let cancel = t.batch(20, 200, -HOUR).await;
    t.order(cancel, 20, "12.00", "paid").await;
    let nearing = t.batch(130, 200, HOUR).await;

    let first = t.orchestrate(json!({})).await;
    assert_eq!(first["processed"], 3);
    let before = t.fingerprint().await;

    let second = t.orchestrate(json!({})).await;
    let r = by_batch(&second);
    assert!(!r.contains_key(&confirm) && !r.contains_key(&cancel));
    assert_eq!(r[&nearing]["action"], "nearing_target", "still reported");
    assert_eq!(second["evaluated"], 1);
    assert_eq!(
        t.fingerprint().await,
        before,
        "the second run wrote nothing"
    );
    assert_eq!(t.events_of(nearing).await, ["batch.nearing_target"]);
}

#[tokio::test]
async fn dry_run_reports_the_same_decisions_and_writes_nothing() {
    let t = TestApp::spawn().await;
    t.batch(180, 200, -HOUR).await;
    let review = t.batch(110, 200, -HOUR).await;
    let cancel = t.batch(20, 200, -HOUR).await;
    t.order(cancel, 10, "12.00", "paid").await;
    t.order(cancel, 10, "12.00", "pending").await;
    t.batch(130, 200, HOUR).await;
    let before = t.fingerprint().await;

    let dry = t.orchestrate(json!({"dryRun": true})).await;
    assert_eq!(dry["dryRun"], true);
    assert_eq!(t.fingerprint().await, before, "a dry run writes nothing");
    let d = by_batch(&dry);
    assert_eq!(d[&cancel]["ordersCancelled"], 2);
    assert_eq!(d[&review]["action"], "needs_review");
    assert!(dry["results"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r.get("supplierOrderId").is_none()));

    let real = t.orchestrate(json!({})).await;
    let strip = |v: &Value| -> Vec<(String, String, String)> {
        v["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["batchId"].to_string(),
                    r["action"].to_string(),
                    r["fillPercentage"].to_string(),
                )
            })
            .collect()
    };
    assert_eq!(strip(&dry), strip(&real));
    assert_eq!(dry["evaluated"], real["evaluated"]);
    assert_eq!(by_batch(&real)[&cancel]["ordersCancelled"], 2);
}

/// `limit` caps evaluation; batches that need a write go first even when
/// report-only batches close earlier; `hasMore` says when writes remain.
#[tokio::test]
async fn limit_takes_writes_first_and_has_more_says_what_remains() {
    let t = TestApp::spawn().await;
    // Five report-only batches that close before anything else.
    for i in 0..5 {
        t.batch(10, 200, HOUR + f64::from(i)).await;
    }
    let mut writes = Vec::new();
    for i in 0..5 {
        writes.push(t.batch(20, 200, -HOUR + f64::from(i)).await);
    }

    let first = t.orchestrate(json!({"limit": 3})).await;
    assert_eq!(first["evaluated"], 3);
    assert_eq!(first["processed"], 3);
    assert_eq!(first["hasMore"], true);
    assert!(first["results"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["action"] == "cancelled"));
    // The three earliest write batches went first.
    let done: Vec<Uuid> = by_batch(&first).keys().copied().collect();
    for id in &writes[..3] {
        assert!(done.contains(id));
    }

    let second = t.orchestrate(json!({"limit": 3})).await;
    assert_eq!(
        second["evaluated"], 3,
        "two writes, then one report-only batch"
    );
    assert_eq!(second["processed"], 2);
    assert_eq!(second["hasMore"], false);

    let third = t.orchestrate(json!({"limit": 3})).await;
    assert_eq!(third["processed"], 0);
    assert_eq!(third["hasMore"], false);
    assert_eq!(
        t.count("SELECT count(*) FROM production_batches WHERE batch_status = 'cancelled'")
            .await,
        5
    );
}

/// Exactly at the limit with nothing left: no `hasMore`.
#[tokio::test]
async fn limit_equal_to_the_work_has_nothing_more() {
    let t = TestApp::spawn().await;
    t.batch(20, 200, -HOUR).await;
    t.batch(20, 200, -HOUR).await;
    let resp = t.orchestrate(json!({"limit": 2})).await;
    assert_eq!(resp["processed"], 2);
    assert_eq!(resp["hasMore"], false);
}

/// Chunks are transactions of their own; many chunks reach every batch.
#[tokio::test]
async fn small_chunks_cover_every_batch() {
    let t = TestApp::spawn_with(&[("ORCHESTRATE_CHUNK_SIZE", "7")]).await;
    for i in 0..40 {
        t.batch(if i % 2 == 0 { 180 } else { 20 }, 200, -HOUR + f64::from(i))
            .await;
    }
    for i in 0..9 {
        t.batch(10, 200, HOUR + f64::from(i)).await;
    }
    let resp = t.orchestrate(json!({})).await;
    assert_eq!(resp["processed"], 40);
    assert_eq!(resp["evaluated"], 49);
    assert_eq!(t.count("SELECT count(*) FROM supplier_orders").await, 20);
}

/// A run reads its candidates a slab at a time (100 chunks) and takes each slab
/// in id order: across several slabs every batch is still acted on once, and a
/// `limit` still takes the earliest windows first.
#[tokio::test]
async fn slabs_cover_every_batch_once_and_a_limit_takes_the_earliest_windows() {
    // Chunks of 2, so a slab is 200 batches and 450 make three slabs.
    let t = TestApp::spawn_with(&[("ORCHESTRATE_CHUNK_SIZE", "2")]).await;
    let mut by_window = Vec::new();
    for i in 0..450 {
        let fill = if i % 2 == 0 { 180 } else { 20 };
        by_window.push(t.batch(fill, 200, -HOUR + f64::from(i)).await);
    }

    let first = t.orchestrate(json!({"limit": 250})).await;
    assert_eq!(first["evaluated"], 250);
    assert_eq!(first["hasMore"], true);
    let mut statuses = Vec::new();
    for id in &by_window {
        statuses.push(t.status_of(*id).await);
    }
    let (taken, left) = statuses.split_at(250);
    assert!(
        taken.iter().all(|s| s != "filling"),
        "the 250 earliest windows"
    );
    assert!(left.iter().all(|s| s == "filling"), "and no other");

    let rest = t.orchestrate(json!({})).await;
    assert_eq!(rest["processed"], 200);
    assert_eq!(rest["hasMore"], false);
    assert_eq!(t.count("SELECT count(*) FROM supplier_orders").await, 225);
    assert_eq!(
        t.count("SELECT count(*) FROM batch_events WHERE event_type = 'batch.cancelled'")
            .await,
        225
    );
    assert_eq!(
        t.count("SELECT count(*) FROM production_batches WHERE batch_status = 'filling'")
            .await,
        0
    );
}

/// Less than `DEADLINE_MARGIN_MS` left: no chunk is started, and `hasMore` says so.
#[tokio::test]
async fn stops_before_the_lambda_deadline() {
    let t = TestApp::spawn_with(&[("DEADLINE_MARGIN_MS", "5000")]).await;
    let batch = t.batch(20, 200, -HOUR).await;
    let inv = batch_processor::Invocation::new("deadline-test", deadline_in(1000));
    let resp = t
        .invoke_with(json!({"jobType": "orchestrate"}), &inv)
        .await
        .expect("answers before the deadline");
    assert_eq!(resp["evaluated"], 0);
    assert_eq!(resp["hasMore"], true);
    assert_eq!(t.status_of(batch).await, "filling");

    // With time to spare the same batch is done.
    let inv = batch_processor::Invocation::new("deadline-test-2", deadline_in(60_000));
    let resp = t
        .invoke_with(json!({"jobType": "orchestrate"}), &inv)
        .await
        .unwrap();
    assert_eq!(resp["processed"], 1);
    assert_eq!(resp["hasMore"], false);
}

#[tokio::test]
async fn bad_orchestrate_input_is_a_400_naming_the_field_and_changes_nothing() {
    let t = TestApp::spawn().await;
    t.batch(20, 200, -HOUR).await;
    let before = t.fingerprint().await;
    for (data, needle) in [
        (json!({"limit": 0}), "limit"),
        (json!({"limit": 2.5}), "limit"),
        (json!({"limit": "10"}), "limit"),
        (json!({"dryRun": "yes"}), "dryRun"),
        (json!([1]), "data"),
    ] {
        let err = t.direct("orchestrate", data.clone()).await.unwrap_err();
        assert_eq!(err.status, 400, "{data}");
        let body = error_json(&err);
        assert!(body["error"].as_str().unwrap().contains(needle), "{body}");
    }
    assert_eq!(t.fingerprint().await, before);
}

/// Two orchestrators at once over a few thousand batches (a schedule retry and
/// a manual run): every batch acted on once, one supplier order per confirmed
/// batch, nothing left undecided.
#[tokio::test]
async fn parallel_orchestrators_act_on_each_batch_exactly_once() {
    let env = [("ORCHESTRATE_CHUNK_SIZE", "50")];
    let t = TestApp::spawn_with(&env).await;
    // 3000 batches: a third confirm, a third review, a third cancel, all closed.
    t.db
        .batch_execute(
            "INSERT INTO suppliers (id, company_name) VALUES ('00000000-0000-4000-8000-00000000aaaa', 'Bulk');
             INSERT INTO production_batches
                 (product_category, product_variant_base, target_quantity, current_quantity,
                  supplier_id, unit_price_base, window_closes_at)
             SELECT 'bulk', 'v', 200, CASE g % 3 WHEN 0 THEN 160 WHEN 1 THEN 110 ELSE 40 END,
                    '00000000-0000-4000-8000-00000000aaaa', 9.50,
                    now() - make_interval(secs => g)
               FROM generate_series(1, 3000) g;",
        )
        .await
        .unwrap();
    let other = t.another_instance(&env).await;
    let (a, b) = tokio::join!(t.orchestrate(json!({})), other.orchestrate(json!({})));

    let mut acted: Vec<String> = Vec::new();
    for resp in [&a, &b] {
        for r in resp["results"].as_array().unwrap() {
            acted.push(r["batchId"].as_str().unwrap().to_owned());
        }
    }
    let listed = acted.len();
    acted.sort();
    acted.dedup();
    assert_eq!(acted.len(), listed, "no batch listed by both runs");
    let processed = a["processed"].as_u64().unwrap() + b["processed"].as_u64().unwrap();
    assert_eq!(
        processed, 3000,
        "together they acted on every batch, each once"
    );
    assert!(
        a["processed"].as_u64().unwrap() > 0 && b["processed"].as_u64().unwrap() > 0,
        "both runs took part: {} / {}",
        a["processed"],
        b["processed"]
    );

    assert_eq!(t.count("SELECT count(*) FROM supplier_orders").await, 1000);
    assert_eq!(
        t.count("SELECT count(*) FROM (SELECT batch_id FROM supplier_orders GROUP BY batch_id HAVING count(*) > 1) d").await,
        0
    );
    assert_eq!(
        t.count("SELECT count(*) FROM production_batches WHERE batch_status = 'filling'")
            .await,
        0,
        "nothing left undecided"
    );
    // One status event per batch.
    assert_eq!(
        t.count(
            "SELECT count(*) FROM (SELECT batch_id FROM batch_events
               WHERE event_type IN ('batch.confirmed', 'batch.needs_review', 'batch.cancelled')
               GROUP BY batch_id HAVING count(*) <> 1) d"
        )
        .await,
        0
    );
    assert_eq!(
        t.count("SELECT count(DISTINCT batch_id) FROM batch_events")
            .await,
        3000
    );
    // A third run afterwards finds nothing to do.
    let after = t.orchestrate(json!({})).await;
    assert_eq!(after["evaluated"], 0);
}

/// A run over more batches than an answer lists: the first ones by window are
/// listed, all are counted, and the answer says it was cut.
#[tokio::test]
async fn large_runs_list_the_first_results_and_count_them_all() {
    let t = TestApp::spawn().await;
    t.db
        .batch_execute(
            "INSERT INTO suppliers (id, company_name) VALUES ('00000000-0000-4000-8000-00000000bbbb', 'Bulk');
             INSERT INTO production_batches
                 (product_category, product_variant_base, target_quantity, current_quantity,
                  supplier_id, unit_price_base, window_closes_at)
             SELECT 'bulk', 'v', 200, CASE WHEN g % 2 = 0 THEN 10 ELSE 190 END,
                    '00000000-0000-4000-8000-00000000bbbb', 9.50, now() - make_interval(secs => g)
               FROM generate_series(1, 1500) g;",
        )
        .await
        .unwrap();
    let first_listed: Vec<String> = column(
        &t.db,
        "SELECT id::text FROM production_batches ORDER BY window_closes_at, id LIMIT 1000",
        &[],
    )
    .await;

    let resp = t.orchestrate(json!({})).await;
    assert_eq!(resp["processed"], 1500);
    assert_eq!(resp["evaluated"], 1500);
    assert_eq!(resp["resultsTruncated"], true);
    assert_eq!(resp["summary"]["cancelled"], 750);
    assert_eq!(resp["summary"]["confirmed"], 750);
    let listed: Vec<String> = resp["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["batchId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(listed, first_listed, "the first 1000 by window, then id");
    assert_eq!(
        t.count("SELECT count(*) FROM production_batches WHERE batch_status = 'filling'")
            .await,
        0,
        "listing is cut, the work is not"
    );

    // A run that fits lists everything and says nothing about truncation.
    let small = t.orchestrate(json!({})).await;
    assert!(small.get("resultsTruncated").is_none());
    assert_eq!(small["summary"]["cancelled"], 0);
}

/// A chunk looks for its batches where its slab found them; a batch updated
/// in between (here by a trigger on the first batch's confirmation; in life by
/// a buyer's order) is no longer there, and must be found by id instead, not
/// left out of the run.
///
/// On one connection: the chunks go one after the other, so the second is
/// locked only after the first's trigger moved its batch.
#[tokio::test]
async fn a_batch_updated_after_its_slab_was_read_is_still_taken() {
    let t = TestApp::spawn_with(&[
        ("ORCHESTRATE_CHUNK_SIZE", "1"),
        ("ORCHESTRATE_CONNECTIONS", "1"),
    ])
    .await;
    let first = t.batch(160, 200, -HOUR).await; // 80 %
    let second = t.batch(170, 200, HOUR).await; // 85 %, window open
    t.db.batch_execute(
        "CREATE FUNCTION touch_others() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             UPDATE production_batches SET updated_at = updated_at
              WHERE batch_status = 'filling' AND id <> NEW.batch_id;
             RETURN NULL;
         END $$;
         CREATE TRIGGER touch_others AFTER INSERT ON batch_events
             FOR EACH ROW WHEN (NEW.event_type = 'batch.confirmed') EXECUTE FUNCTION touch_others();",
    )
    .await
    .unwrap();

    let resp = t.orchestrate(json!({})).await;
    let results = by_batch(&resp);
    assert_eq!(results[&first]["action"], "confirmed", "{resp}");
    assert_eq!(results[&second]["action"], "confirmed", "{resp}");
    assert_eq!(resp["evaluated"], 2);
    assert_eq!(resp["hasMore"], false);
    assert_eq!(t.status_of(first).await, "confirmed");
    assert_eq!(t.status_of(second).await, "confirmed");
    assert_eq!(t.count("SELECT count(*) FROM supplier_orders").await, 2);
    assert_eq!(
        t.count("SELECT count(*) FROM batch_events WHERE event_type = 'batch.confirmed'")
            .await,
        2
    );
}

/// The apply statements find a chunk's batches where its lock found them
/// (their `ctid`), not by key. A batch that something else in the chunk's own
/// transaction moved in between — here a trigger that touches the batch to
/// be cancelled when the other batch's `batch.confirmed` is written — is not
/// skipped: the chunk is rolled back and taken again by id, and both batches
/// end as the rules say, each once.
#[tokio::test]
async fn a_batch_moved_within_its_chunk_is_still_decided() {
    let t = TestApp::spawn().await;
    let confirmed = t.batch(160, 200, -HOUR).await; // 80 %
    let cancelled = t.batch(40, 200, -HOUR).await; // 20 %
    let paid = t.order(cancelled, 40, "12.50", "paid").await;
    t.db.batch_execute(&format!(
        "CREATE FUNCTION touch_batch() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             UPDATE production_batches SET updated_at = updated_at WHERE id = '{cancelled}';
             RETURN NULL;
         END $$;
         CREATE TRIGGER touch_batch AFTER INSERT ON batch_events
             FOR EACH ROW WHEN (NEW.event_type = 'batch.confirmed') EXECUTE FUNCTION touch_batch();"
    ))
    .await
    .unwrap();

    let resp = t.orchestrate(json!({})).await;
    let results = by_batch(&resp);
    assert_eq!(results[&confirmed]["action"], "confirmed");
    assert_eq!(results[&cancelled]["action"], "cancelled");
    assert_eq!(results[&cancelled]["ordersCancelled"], 1);
    assert_eq!(resp["summary"]["failed"], 0, "{resp}");
    assert_eq!(t.status_of(confirmed).await, "confirmed");
    assert_eq!(t.status_of(cancelled).await, "cancelled");
    assert_eq!(
        t.count(&format!(
            "SELECT count(*) FROM orders WHERE id = '{paid}'
               AND status = 'cancelled' AND payment_status = 'refund_pending'"
        ))
        .await,
        1
    );
    assert_eq!(
        t.count("SELECT count(*) FROM supplier_orders").await,
        1,
        "one supplier order, the retry made no second"
    );
    assert_eq!(
        t.count(&format!(
            "SELECT count(*) FROM batch_events WHERE batch_id = '{cancelled}' AND event_type = 'batch.cancelled'"
        ))
        .await,
        1
    );
}

/// Records, for every batch-level event, the backend that wrote it: which
/// connection did each chunk.
const NOTE_BACKENDS: &str = "
    CREATE TABLE chunk_backends (pid int NOT NULL, batch_id uuid NOT NULL);
    CREATE FUNCTION note_backend() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO chunk_backends VALUES (pg_backend_pid(), NEW.batch_id);
        RETURN NULL;
    END $$;
    CREATE TRIGGER note_backend AFTER INSERT ON batch_events
        FOR EACH ROW WHEN (NEW.order_id IS NULL) EXECUTE FUNCTION note_backend();";

/// A run works on two chunks at once, each on its own connection
/// (`ORCHESTRATE_CONNECTIONS`, default 2), and on one when told so or when
/// the pool has only one (`DB_POOL_SIZE=1`: it never waits for a second).
/// However many, every batch is decided and written once, and the answer
/// counts them all.
#[tokio::test]
async fn chunks_run_on_two_connections_and_each_batch_is_written_once() {
    for (env, connections) in [
        (vec![("ORCHESTRATE_CHUNK_SIZE", "2")], 2),
        (
            vec![
                ("ORCHESTRATE_CHUNK_SIZE", "2"),
                ("ORCHESTRATE_CONNECTIONS", "1"),
            ],
            1,
        ),
        (
            vec![("ORCHESTRATE_CHUNK_SIZE", "2"), ("DB_POOL_SIZE", "1")],
            1,
        ),
    ] {
        let t = TestApp::spawn_with(&env).await;
        let mut batches: Vec<(Uuid, &str)> = Vec::new();
        for _ in 0..3 {
            batches.push((t.batch(160, 200, -HOUR).await, "confirmed")); // 80 %
            let cancelled = t.batch(40, 200, -HOUR).await; // 20 %
            t.order(cancelled, 40, "12.50", "paid").await;
            batches.push((cancelled, "cancelled"));
            batches.push((t.batch(110, 200, -HOUR).await, "needs_review")); // 55 %
            batches.push((t.batch(130, 200, HOUR).await, "filling")); // 65 %, open: nearing
        }
        t.db.batch_execute(NOTE_BACKENDS).await.unwrap();

        let resp = t.orchestrate(json!({})).await;
        assert_eq!(resp["evaluated"], 12, "{env:?}: {resp}");
        assert_eq!(resp["hasMore"], false, "{env:?}");
        assert_eq!(
            resp["summary"],
            json!({"confirmed": 3, "needsReview": 3, "cancelled": 3, "nearingTarget": 3,
                   "skipped": 0, "failed": 0, "ordersCancelled": 3}),
            "{env:?}"
        );
        for (batch, status) in &batches {
            assert_eq!(t.status_of(*batch).await, *status, "{env:?}");
        }
        assert_eq!(
            t.count("SELECT count(DISTINCT pid) FROM chunk_backends")
                .await,
            connections,
            "{env:?}: the connections that wrote the chunks"
        );
        assert_eq!(
            t.count("SELECT count(DISTINCT batch_id) FROM chunk_backends")
                .await,
            12,
            "{env:?}"
        );
        assert_eq!(
            t.count("SELECT count(*) FROM chunk_backends").await,
            12,
            "{env:?}: one batch-level event per batch"
        );
        assert_eq!(
            t.count("SELECT count(*) FROM supplier_orders").await,
            3,
            "{env:?}"
        );
        assert_eq!(
            t.count("SELECT count(*) FROM orders WHERE status = 'cancelled' AND payment_status = 'refund_pending'")
                .await,
            3,
            "{env:?}"
        );
        let again = t.orchestrate(json!({})).await;
        assert_eq!(again["summary"]["confirmed"], 0, "{env:?}");
        assert_eq!(again["summary"]["cancelled"], 0, "{env:?}");
    }
}

/// The deadline can come while two connections are working through a slab:
/// neither starts another chunk, both finish the one they hold, and the
/// answer says `hasMore`. What was done is done once; the next run does the
/// rest.
#[tokio::test]
async fn the_deadline_stops_both_connections_within_a_slab() {
    let t = TestApp::spawn_with(&[
        ("ORCHESTRATE_CHUNK_SIZE", "1"),
        ("DEADLINE_MARGIN_MS", "5000"),
    ])
    .await;
    let mut batches = Vec::new();
    for _ in 0..8 {
        batches.push(t.batch(160, 200, -HOUR).await); // 80 %: confirm
    }
    // Each chunk takes half a second, so the deadline comes after a few.
    t.db.batch_execute(
        "CREATE FUNCTION slow_chunk() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN PERFORM pg_sleep(0.5); RETURN NULL; END $$;
         CREATE TRIGGER slow_chunk AFTER INSERT ON batch_events
             FOR EACH ROW WHEN (NEW.event_type = 'batch.confirmed') EXECUTE FUNCTION slow_chunk();",
    )
    .await
    .unwrap();

    let inv = batch_processor::Invocation::new("deadline-within-slab", deadline_in(5800));
    let resp = t
        .invoke_with(json!({"jobType": "orchestrate"}), &inv)
        .await
        .expect("answers before the deadline");
    let done = resp["evaluated"].as_i64().expect("evaluated");
    assert!(done > 0 && done < 8, "stopped part way: {resp}");
    assert_eq!(resp["hasMore"], true, "{resp}");
    assert_eq!(resp["summary"]["confirmed"], done, "{resp}");
    assert_eq!(
        t.count("SELECT count(*) FROM production_batches WHERE batch_status = 'confirmed'")
            .await,
        done,
        "every chunk taken was finished and committed, no other"
    );

    let inv = batch_processor::Invocation::new("deadline-within-slab-2", deadline_in(60_000));
    let rest = t
        .invoke_with(json!({"jobType": "orchestrate"}), &inv)
        .await
        .unwrap();
    assert_eq!(rest["summary"]["confirmed"], 8 - done, "{rest}");
    assert_eq!(rest["hasMore"], false);
    for batch in batches {
        assert_eq!(t.status_of(batch).await, "confirmed");
    }
    assert_eq!(t.count("SELECT count(*) FROM supplier_orders").await, 8);
}
