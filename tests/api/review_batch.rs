use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::*;

const HOUR: f64 = 3600.0;

/// A batch orchestrate has put in `needs_review`.
async fn held_batch(t: &TestApp) -> Uuid {
    let batch = t.batch(120, 200, -HOUR).await;
    let resp = t.orchestrate(json!({})).await;
    assert_eq!(by_batch(&resp)[&batch]["action"], "needs_review");
    batch
}

#[tokio::test]
async fn approve_confirms_like_orchestrate() {
    let t = TestApp::spawn().await;
    let batch = held_batch(&t).await;
    t.order(batch, 120, "12.25", "paid").await;

    let resp = t
        .direct(
            "review-batch",
            json!({"batchId": batch, "decision": "approve", "note": "ok by ops"}),
        )
        .await
        .unwrap();
    assert_eq!(resp["processed"], 1);
    assert_eq!(resp["evaluated"], 1);
    assert_eq!(resp["hasMore"], false);
    let r = &resp["results"][0];
    assert_eq!(r["batchId"], json!(batch.to_string()));
    assert_eq!(r["action"], "confirmed");
    assert_eq!(r["fillPercentage"], json!(60.0));
    let so: Uuid = Uuid::parse_str(r["supplierOrderId"].as_str().unwrap()).unwrap();

    assert_eq!(t.status_of(batch).await, "confirmed");
    let row = t
        .db
        .query_one(
            "SELECT quantity, supplier_price::text, buyer_price::text, order_number FROM supplier_orders WHERE id = $1",
            &[&so],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 200);
    assert_eq!(row.get::<_, String>(1), "2000.00");
    assert_eq!(row.get::<_, String>(2), "1470.00");
    assert_eq!(row.get::<_, String>(3), format!("BATCH-{batch}"));
    let payload: Value = t
        .db
        .query_one(
            "SELECT payload FROM batch_events WHERE batch_id = $1 AND event_type = 'batch.confirmed'",
            &[&batch],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(payload["note"], "ok by ops");

    // Approving again is a conflict: the batch is no longer waiting.
    let again = t
        .direct(
            "review-batch",
            json!({"batchId": batch, "decision": "approve"}),
        )
        .await
        .unwrap_err();
    assert_eq!(again.status, 409);
    assert_eq!(t.count("SELECT count(*) FROM supplier_orders").await, 1);
}

#[tokio::test]
async fn reject_cancels_with_the_note_and_the_admin_in_history() {
    let t = TestApp::spawn().await;
    let batch = held_batch(&t).await;
    let paid = t.order(batch, 100, "15.00", "paid").await;
    let pending = t.order(batch, 20, "15.00", "pending").await;
    // The buyer rewrote their order's total; the refund is still the contribution.
    t.db.execute("UPDATE orders SET buyer_price = 1 WHERE id = $1", &[&paid])
        .await
        .unwrap();

    let body = json!({"jobType": "review-batch",
                      "data": {"batchId": batch, "decision": "reject", "note": "supplier strike"}})
    .to_string();
    let admin = token(json!({"role": "authenticated", "sub": ADMIN_SUB,
                             "app_metadata": {"role": "admin"}, "exp": now_secs() + 600}));
    let resp = t
        .invoke(http_v2(
            "POST",
            Some(&body),
            &[("authorization", &bearer(&admin))],
        ))
        .await
        .unwrap();
    let (status, body) = proxy(&resp);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][0]["action"], "cancelled");
    assert_eq!(body["results"][0]["ordersCancelled"], 2);

    assert_eq!(t.status_of(batch).await, "cancelled");
    let rows =
        t.db.query(
            "SELECT o.id, o.payment_status, h.notes, h.changed_by
               FROM orders o JOIN order_status_history h ON h.order_id = o.id",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    for r in rows {
        let id: Uuid = r.get(0);
        let payment: String = r.get(1);
        assert_eq!(
            payment,
            if id == paid {
                "refund_pending"
            } else {
                "pending"
            }
        );
        assert!(id == paid || id == pending);
        let notes: String = r.get(2);
        assert!(notes.contains("supplier strike"), "{notes}");
        assert_eq!(
            r.get::<_, Option<Uuid>>(3),
            Some(Uuid::parse_str(ADMIN_SUB).unwrap())
        );
    }
    assert_eq!(
        t.events_of(batch).await,
        [
            "batch.needs_review",
            "batch.cancelled",
            "order.cancelled",
            "order.cancelled",
            "order.refund_requested"
        ]
    );
    let refund: Value =
        t.db.query_one(
            "SELECT payload FROM batch_events WHERE event_type = 'order.refund_requested'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(refund["amount"].as_f64(), Some(1500.0), "{refund}");
}

#[tokio::test]
async fn review_errors_have_their_status_and_change_nothing() {
    let t = TestApp::spawn().await;
    let filling = t.batch(120, 200, HOUR).await;
    let before = t.fingerprint().await;
    let cases = [
        (
            json!({"batchId": Uuid::new_v4(), "decision": "approve"}),
            404,
            "not found",
        ),
        (
            json!({"batchId": filling, "decision": "approve"}),
            409,
            "filling",
        ),
        (
            json!({"batchId": "not-a-uuid", "decision": "approve"}),
            400,
            "batchId",
        ),
        (json!({"decision": "approve"}), 400, "batchId"),
        (
            json!({"batchId": filling, "decision": "maybe"}),
            400,
            "decision",
        ),
        (json!({"batchId": filling}), 400, "decision"),
        (
            json!({"batchId": filling, "decision": "reject", "note": "x".repeat(2001)}),
            400,
            "note",
        ),
    ];
    for (data, status, needle) in cases {
        let err = t.direct("review-batch", data.clone()).await.unwrap_err();
        assert_eq!(err.status, status, "{data}");
        let body = error_json(&err);
        assert!(body["error"].as_str().unwrap().contains(needle), "{body}");
    }
    assert_eq!(t.fingerprint().await, before);
}

/// Two admins deciding at once: one wins, the other gets 409; one supplier order.
#[tokio::test]
async fn concurrent_reviews_decide_once() {
    let t = TestApp::spawn().await;
    let batch = held_batch(&t).await;
    let other = t.another_instance(&[]).await;
    let approve = json!({"batchId": batch, "decision": "approve"});
    let reject = json!({"batchId": batch, "decision": "reject"});
    let (a, b) = tokio::join!(
        t.direct("review-batch", approve),
        other.direct("review-batch", reject)
    );
    let statuses = [
        a.as_ref().err().map(|e| e.status),
        b.as_ref().err().map(|e| e.status),
    ];
    assert!(
        statuses.contains(&None) && statuses.contains(&Some(409)),
        "{statuses:?}"
    );
    let status = t.status_of(batch).await;
    let supplier_orders = t.count("SELECT count(*) FROM supplier_orders").await;
    assert_eq!(supplier_orders, i64::from(status == "confirmed"));
    assert!(status == "confirmed" || status == "cancelled");
}
