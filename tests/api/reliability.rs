//! Reliability drills (RELIABILITY.md): faults, races and hostile input against
//! a real Postgres, with nothing lost.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::*;

const BULK_SUPPLIER: &str = "00000000-0000-4000-8000-00000000aaaa";

/// `n` filling batches of mixed tiers — every fill from 0 to 100 %, half the
/// windows closed, a tenth far in the future — and, for every batch under half
/// full, two live orders (one paid, one pending) that a cancellation must take.
async fn seed_mixed(t: &TestApp, n: i32) {
    t.db.batch_execute(&format!(
        "INSERT INTO suppliers (id, company_name) VALUES ('{BULK_SUPPLIER}', 'Bulk') ON CONFLICT DO NOTHING;
         INSERT INTO production_batches
             (product_category, product_variant_base, target_quantity, current_quantity,
              supplier_id, unit_price_base, window_closes_at)
         SELECT 'bulk', 'v', 200, (g * 37) % 201, '{BULK_SUPPLIER}', 9.50,
                CASE WHEN g % 2 = 0 THEN now() - make_interval(secs => g)
                     WHEN g % 10 = 1 THEN now() + interval '30 days'
                     ELSE now() + make_interval(secs => 600 + g) END
           FROM generate_series(1, {n}) g;
         INSERT INTO orders (id, order_number, buyer_id, product_type, quantity, status,
                             workflow_status, payment_status, buyer_price)
         SELECT md5(b.id::text || k)::uuid, 'T-' || md5(b.id::text || k), gen_random_uuid(), 'bulk', 10,
                'pending', 'awaiting_payment', CASE k WHEN 'a' THEN 'paid' ELSE 'pending' END, 125.00
           FROM production_batches b CROSS JOIN (VALUES ('a'), ('b')) AS o(k)
          WHERE b.current_quantity < 100;
         INSERT INTO batch_contributions (batch_id, order_id, quantity, style_details, buyer_price_per_unit)
         SELECT b.id, md5(b.id::text || k)::uuid, 10, '{{\"variant\": \"v\"}}', 12.50
           FROM production_batches b CROSS JOIN (VALUES ('a'), ('b')) AS o(k)
          WHERE b.current_quantity < 100;"
    ))
    .await
    .expect("seed");
}

/// Nothing torn, whatever happened: every batch's status matches its events,
/// its supplier order and its orders; every cancelled order has its history.
async fn assert_consistent(t: &TestApp, when: &str) {
    let checks = [
        (
            "a batch's status events match its status",
            "SELECT count(*) FROM production_batches b, LATERAL (
                 SELECT count(*) FILTER (WHERE event_type = 'batch.confirmed') AS confirmed,
                        count(*) FILTER (WHERE event_type = 'batch.cancelled') AS cancelled,
                        count(*) FILTER (WHERE event_type = 'batch.needs_review') AS held
                   FROM batch_events e WHERE e.batch_id = b.id) ev
              WHERE ev.confirmed <> (b.batch_status = 'confirmed')::int
                 OR ev.cancelled <> (b.batch_status = 'cancelled')::int
                 OR ev.held > 1
                 OR (b.batch_status = 'needs_review' AND ev.held <> 1)
                 OR (b.batch_status = 'filling' AND ev.held <> 0)",
        ),
        (
            "one supplier order per confirmed batch, none for others",
            "SELECT count(*) FROM production_batches b
              WHERE (SELECT count(*) FROM supplier_orders s WHERE s.batch_id = b.id) <> (b.batch_status = 'confirmed')::int",
        ),
        (
            "a cancelled batch has no live order",
            "SELECT count(*) FROM batch_contributions c JOIN production_batches b ON b.id = c.batch_id
               JOIN orders o ON o.id = c.order_id
              WHERE b.batch_status = 'cancelled' AND o.status <> 'cancelled'",
        ),
        (
            "a live batch has no cancelled order",
            "SELECT count(*) FROM batch_contributions c JOIN production_batches b ON b.id = c.batch_id
               JOIN orders o ON o.id = c.order_id
              WHERE b.batch_status <> 'cancelled' AND o.status = 'cancelled'",
        ),
        (
            "every cancelled order has one history row and one order.cancelled event",
            "SELECT count(*) FROM orders o WHERE o.status = 'cancelled' AND (
                (SELECT count(*) FROM order_status_history h WHERE h.order_id = o.id) <> 1
             OR (SELECT count(*) FROM batch_events e WHERE e.order_id = o.id AND e.event_type = 'order.cancelled') <> 1)",
        ),
        (
            "refunds requested exactly for the paid cancelled orders",
            "SELECT count(*) FROM orders o WHERE
                (o.payment_status = 'refund_pending')
             <> (SELECT count(*) = 1 FROM batch_events e WHERE e.order_id = o.id AND e.event_type = 'order.refund_requested')",
        ),
        (
            "current_quantity is the sum of contributions where orders were placed by the function",
            "SELECT count(*) FROM production_batches b WHERE b.product_category <> 'bulk'
               AND b.current_quantity <> (SELECT COALESCE(sum(quantity), 0) FROM batch_contributions c WHERE c.batch_id = b.id)",
        ),
    ];
    for (what, sql) in checks {
        assert_eq!(t.count(sql).await, 0, "{when}: {what}");
    }
}

async fn undecided(t: &TestApp) -> i64 {
    // Filling batches the tier table says must move: closed windows, or >= 75 %.
    t.count(
        "SELECT count(*) FROM production_batches WHERE batch_status = 'filling' AND target_quantity > 0
           AND window_closes_at < now() + interval '24 hours'
           AND (window_closes_at <= now() OR current_quantity * 4 >= target_quantity * 3)",
    )
    .await
}

/// Four orchestrators at once over 4,000 mixed batches; then the same
/// scheduled event delivered twice.
#[tokio::test]
async fn drill_four_parallel_orchestrators_and_a_duplicated_schedule() {
    let env = [("ORCHESTRATE_CHUNK_SIZE", "64")];
    let t = TestApp::spawn_with(&env).await;
    seed_mixed(&t, 4000).await;
    let to_decide = undecided(&t).await;
    assert!(to_decide > 1000, "the drill has work: {to_decide}");
    let mut instances = Vec::new();
    for _ in 0..4 {
        instances.push(t.another_instance(&env).await);
    }
    let runs = futures::future::join_all(instances.iter().map(|i| i.orchestrate(json!({})))).await;

    let mut acted: Vec<(String, String)> = Vec::new();
    for r in &runs {
        for x in r["results"].as_array().unwrap() {
            let action = x["action"].as_str().unwrap();
            if action != "nearing_target" && action != "skipped" {
                acted.push((x["batchId"].as_str().unwrap().to_owned(), action.to_owned()));
            }
        }
    }
    let listed = acted.len();
    let mut ids: Vec<&String> = acted.iter().map(|(id, _)| id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), listed, "no batch acted on by two orchestrators");
    // An answer lists at most 1,000 results (one run may act on more); the
    // summaries count every one.
    let total: u64 = runs
        .iter()
        .map(|r| {
            let s = &r["summary"];
            s["confirmed"].as_u64().unwrap()
                + s["needsReview"].as_u64().unwrap()
                + s["cancelled"].as_u64().unwrap()
        })
        .sum();
    assert_eq!(
        total as i64, to_decide,
        "every batch that had to move moved once"
    );
    assert!(
        runs.iter()
            .filter(|r| r["processed"].as_u64().unwrap() > 0)
            .count()
            >= 2,
        "they ran together"
    );
    assert_eq!(undecided(&t).await, 0);
    assert_consistent(&t, "after four parallel runs").await;

    // EventBridge delivers at least once: the same event twice changes nothing the second time.
    let event = aws_sample("example-eventbridge-schedule.json");
    t.invoke(event.clone()).await.unwrap();
    let before = t.fingerprint().await;
    let again = t.invoke(event).await.unwrap();
    assert_eq!(
        t.fingerprint().await,
        before,
        "a duplicated schedule writes nothing"
    );
    assert!(again["results"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["action"] == "nearing_target" || r["action"] == "skipped"));
}

/// Orders stream into batches whose windows close during the drill while
/// orchestrators run: a cancelled batch never gains a contribution, every
/// order is in a live batch or cancelled, quantities always add up.
#[tokio::test]
async fn drill_orders_racing_orchestrate_on_closing_windows() {
    let t = TestApp::spawn().await;
    t.terms("active", 200, 4, "10.00", None, 10).await;
    // Twelve batches closing one after another over the drill, 10–35 % full (seeded through
    // real orders so quantities add up).
    for k in 0..12 {
        let batch = t
            .batch_in("race", 0, 200, 0.15 + 0.1 * f64::from(k), "filling")
            .await;
        let qty = 20 + 5 * (k % 6);
        t.db.execute("UPDATE production_batches SET current_quantity = $2, current_style_count = 1 WHERE id = $1", &[&batch, &qty])
            .await
            .unwrap();
        t.order(
            batch,
            qty,
            "12.00",
            if k % 2 == 0 { "paid" } else { "pending" },
        )
        .await;
    }
    let mut buyers = Vec::new();
    for _ in 0..6 {
        buyers.push(t.another_instance(&[]).await);
    }
    let mut orchestrators = Vec::new();
    for _ in 0..2 {
        orchestrators.push(t.another_instance(&[]).await);
    }
    // The drill ends on facts, not on a clock: every seeded window has closed
    // (by the database's clock), each buyer has placed its orders, and each
    // orchestrator has run a few times — however slow the machine.
    let closed = Arc::new(AtomicBool::new(false));
    let buyers_done = Arc::new(AtomicU64::new(0));
    const ORDERS_EACH: usize = 10;
    const RUNS_EACH: i32 = 5;
    let watcher = {
        let (closed, db) = (closed.clone(), connect(&t.url).await);
        async move {
            while !closed.load(Ordering::SeqCst) {
                let open: i64 = db
                    .query_one(
                        "SELECT count(*) FROM production_batches
                          WHERE product_category = 'race' AND window_closes_at > now()
                            AND window_closes_at < now() + interval '1 hour'",
                        &[],
                    )
                    .await
                    .unwrap()
                    .get(0);
                closed.store(open == 0, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let placed = Arc::new(AtomicU64::new(0));
    let order_tasks = buyers.iter().enumerate().map(|(i, app)| {
        let (placed, closed, buyers_done) = (placed.clone(), closed.clone(), buyers_done.clone());
        async move {
            let mut n = 0;
            while n < ORDERS_EACH || !closed.load(Ordering::SeqCst) {
                let data = order_data(
                    "race",
                    3 + (n % 5) as i64,
                    ["a", "b", "c"][(i + n) % 3],
                    BUYER_SUB,
                );
                app.direct("process-order", data)
                    .await
                    .unwrap_or_else(|e| panic!("order failed: {}", e.message));
                placed.fetch_add(1, Ordering::SeqCst);
                n += 1;
            }
            buyers_done.fetch_add(1, Ordering::SeqCst);
        }
    });
    let orchestrate_tasks = orchestrators.iter().map(|app| {
        let buyers_done = buyers_done.clone();
        async move {
            let mut runs = 0;
            while runs < RUNS_EACH || buyers_done.load(Ordering::SeqCst) < 6 {
                app.orchestrate(json!({})).await;
                runs += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            runs
        }
    });
    let (_, runs, ()) = tokio::join!(
        futures::future::join_all(order_tasks),
        futures::future::join_all(orchestrate_tasks),
        watcher
    );
    t.orchestrate(json!({})).await;

    let placed = placed.load(Ordering::SeqCst) as i64;
    assert!(
        placed >= 6 * ORDERS_EACH as i64,
        "the drill placed orders: {placed}"
    );
    assert!(
        runs.iter().all(|r| *r >= RUNS_EACH),
        "orchestrate ran throughout: {runs:?}"
    );
    assert_eq!(
        t.count("SELECT count(*) FROM orders WHERE product_type = 'race'")
            .await,
        placed,
        "every order placed is there"
    );
    assert!(
        t.count("SELECT count(*) FROM production_batches WHERE product_category = 'race' AND batch_status = 'cancelled'").await
            > 0,
        "some windows closed under the orders"
    );
    assert_eq!(
        t.count(
            "SELECT count(*) FROM batch_contributions c JOIN production_batches b ON b.id = c.batch_id
               JOIN batch_events e ON e.batch_id = b.id AND e.event_type = 'batch.cancelled'
               JOIN orders o ON o.id = c.order_id
              WHERE o.created_at > e.created_at"
        )
        .await,
        0,
        "no order placed after its batch was cancelled"
    );
    assert_eq!(
        t.count("SELECT count(*) FROM production_batches WHERE current_quantity <> (SELECT COALESCE(sum(quantity),0) FROM batch_contributions c WHERE c.batch_id = production_batches.id)").await,
        0
    );
    assert_consistent(&t, "after the race").await;
}

/// `pg_terminate_backend` on the function's connections, in a loop, while
/// orchestrate works through 5,000 batches: runs fail or finish, no batch is
/// ever torn, and the next run finishes the rest.
#[tokio::test]
async fn drill_connections_killed_mid_run() {
    let env = [("ORCHESTRATE_CHUNK_SIZE", "40")];
    let t = TestApp::spawn_with(&env).await;
    seed_mixed(&t, 5000).await;
    let to_decide = undecided(&t).await;
    let app = t.another_instance(&env).await;
    let killer_db = connect(&t.url).await;
    let db_name: String = killer_db
        .query_one("SELECT current_database()", &[])
        .await
        .unwrap()
        .get(0);
    let stop = Arc::new(AtomicBool::new(false));
    let kills = Arc::new(AtomicU64::new(0));
    let killer = {
        let (stop, kills) = (stop.clone(), kills.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                if let Ok(rows) = killer_db
                    .query(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                          WHERE datname = $1 AND application_name = 'batch-processor' AND pid <> pg_backend_pid()",
                        &[&db_name],
                    )
                    .await
                {
                    kills.fetch_add(rows.iter().filter(|r| r.get::<_, bool>(0)).count() as u64, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(60)).await;
            }
        })
    };
    let (mut failed, mut finished) = (0, 0);
    for attempt in 0..12 {
        match app.direct("orchestrate", json!({})).await {
            Ok(_) => finished += 1,
            Err(e) => {
                assert!(
                    e.status == 503 || e.status == 500,
                    "attempt {attempt}: {}",
                    e.message
                );
                failed += 1;
            }
        }
        assert_consistent(&t, &format!("after attempt {attempt} under kills")).await;
    }
    stop.store(true, Ordering::SeqCst);
    killer.await.unwrap();
    let kills = kills.load(Ordering::SeqCst);
    assert!(kills >= 5, "connections were killed: {kills}");
    assert!(
        failed > 0,
        "some runs died ({failed} failed, {finished} finished, {kills} kills)"
    );
    let decided_under_fire = to_decide - undecided(&t).await;
    assert!(decided_under_fire > 0, "chunks committed between the kills");

    // Left alone, the next run finishes the rest.
    let last = app.orchestrate(json!({})).await;
    assert_eq!(last["hasMore"], false);
    assert_eq!(
        undecided(&t).await,
        0,
        "nothing left undecided of {to_decide}"
    );
    assert_consistent(&t, "after the final run").await;
    eprintln!(
        "drill: 5000 batches, {to_decide} to decide, {kills} connections killed, {failed} runs failed, \
         {finished} finished, {decided_under_fire} decided under fire, the rest by the next run"
    );
}

/// No job deletes a row: every table refuses DELETE for the drill, and every
/// job path runs (confirm, review, cancel, reject, approve, orders, replays, 409, 422).
#[tokio::test]
async fn drill_no_job_ever_deletes_a_row() {
    let t = TestApp::spawn().await;
    t.db.batch_execute(
        "CREATE FUNCTION forbid_delete() RETURNS trigger LANGUAGE plpgsql AS
           $$ BEGIN RAISE EXCEPTION 'DELETE on % is forbidden in this drill', TG_TABLE_NAME; END $$;
         DO $$ DECLARE t text; BEGIN
           FOREACH t IN ARRAY ARRAY['suppliers','supplier_mou_terms','production_batches','batch_contributions',
                                    'orders','order_status_history','supplier_orders','batch_events',
                                    'order_idempotency'] LOOP
             EXECUTE format('CREATE TRIGGER no_delete BEFORE DELETE OR TRUNCATE ON %I
                             FOR EACH STATEMENT EXECUTE FUNCTION forbid_delete()', t);
           END LOOP; END $$;",
    )
    .await
    .unwrap();
    t.terms("active", 200, 4, "10.00", None, 10).await;
    seed_mixed(&t, 300).await;
    let mut keyed = order_data("drill", 10, "a", BUYER_SUB);
    keyed["idempotencyKey"] = json!("drill-1");
    t.direct("process-order", keyed.clone()).await.unwrap();
    t.direct("process-order", keyed.clone()).await.unwrap();
    keyed["quantity"] = json!(11);
    assert_eq!(
        t.direct("process-order", keyed).await.unwrap_err().status,
        409
    );
    assert_eq!(
        t.direct(
            "process-order",
            order_data("drill", 999_999, "a", BUYER_SUB)
        )
        .await
        .unwrap_err()
        .status,
        422
    );
    let run = t.orchestrate(json!({})).await;
    let held: Vec<Uuid> = run["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "needs_review")
        .map(|r| Uuid::parse_str(r["batchId"].as_str().unwrap()).unwrap())
        .collect();
    assert!(held.len() >= 2);
    t.direct(
        "review-batch",
        json!({"batchId": held[0], "decision": "approve"}),
    )
    .await
    .unwrap();
    t.direct(
        "review-batch",
        json!({"batchId": held[1], "decision": "reject"}),
    )
    .await
    .unwrap();
    t.orchestrate(json!({})).await;
    assert_consistent(&t, "after every job path").await;
    // And the code has no DELETE to run: no SQL in src/ deletes.
    let mut offenders = Vec::new();
    for entry in walk(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src"
    ))) {
        let text = std::fs::read_to_string(&entry).unwrap();
        if text.to_uppercase().contains("DELETE FROM") || text.to_uppercase().contains("TRUNCATE ")
        {
            offenders.push(entry.display().to_string());
        }
    }
    assert!(offenders.is_empty(), "{offenders:?}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// SQL-looking input is data: stored verbatim, never executed.
#[tokio::test]
async fn drill_sql_looking_strings_are_stored_verbatim() {
    let t = TestApp::spawn().await;
    t.terms("active", 200, 4, "10.00", None, 10).await;
    let nasty = "t-shirts'); DROP TABLE orders; --";
    let variant = "navy\"; DELETE FROM batch_events; --\u{202e}ü漢字";
    let mut data = order_data(nasty, 5, variant, BUYER_SUB);
    // Postgres cannot store NUL: a 400 that says so, nothing written.
    data["styleDetails"]["notes"] = json!("$1 $2 ' \\ \u{0000}");
    let err = t.direct("process-order", data.clone()).await.unwrap_err();
    assert_eq!(err.status, 400, "{}", err.message);
    assert_eq!(t.count("SELECT count(*) FROM orders").await, 0);
    data["styleDetails"]["notes"] = json!("$1 $2 ' \\ plain");
    let resp = t.direct("process-order", data).await.unwrap();
    let row =
        t.db.query_one(
            "SELECT o.product_type, c.style_details ->> 'variant' FROM orders o
               JOIN batch_contributions c ON c.order_id = o.id WHERE o.id = $1",
            &[&Uuid::parse_str(resp["orderId"].as_str().unwrap()).unwrap()],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), nasty);
    assert_eq!(row.get::<_, String>(1), variant);
    assert_eq!(
        t.count("SELECT count(*) FROM orders").await,
        1,
        "the orders table is still there"
    );
}

mod hostile {
    //! Property tests: arbitrary events, bodies and tokens never panic and
    //! always answer in the documented shape with a 4xx (or a 2xx for valid input).

    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            ".*".prop_map(Value::from),
            prop_oneof![
                Just("orchestrate"),
                Just("process-order"),
                Just("review-batch"),
                Just("migrate"),
                Just("' OR 1=1 --"),
                Just("550e8400-e29b-41d4-a716-446655440000"),
                Just("approve"),
            ]
            .prop_map(Value::from),
        ];
        leaf.prop_recursive(6, 48, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("jobType".to_owned()),
                        Just("data".to_owned()),
                        Just("quantity".to_owned()),
                        Just("styleDetails".to_owned()),
                        Just("buyerId".to_owned()),
                        Just("limit".to_owned()),
                        Just("dryRun".to_owned()),
                        Just("batchId".to_owned()),
                        Just("decision".to_owned()),
                        Just("productCategory".to_owned()),
                        Just("productVariantBase".to_owned()),
                        Just("variant".to_owned()),
                        Just("httpMethod".to_owned()),
                        Just("requestContext".to_owned()),
                        Just("http".to_owned()),
                        Just("method".to_owned()),
                        Just("body".to_owned()),
                        Just("detail-type".to_owned()),
                        Just("source".to_owned()),
                        ".{0,12}",
                    ],
                    inner,
                    0..6
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn check_error_shape(body: &Value) {
        let obj = body.as_object().expect("error body is an object");
        assert_eq!(obj.len(), 3, "{body}");
        assert!(
            obj["error"].is_string()
                && obj["timestamp"].is_string()
                && obj["requestId"].is_string()
        );
        let msg = obj["error"].as_str().unwrap();
        assert!(
            !msg.contains("SELECT") && !msg.contains("panicked"),
            "{msg}"
        );
    }

    /// Runs `cases` cases of `strategy` through `check` on one database.
    fn run<S: Strategy>(
        cases: u32,
        strategy: S,
        check: impl Fn(&TestApp, &tokio::runtime::Runtime, S::Value),
    ) where
        S::Value: std::fmt::Debug,
    {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let t = rt.block_on(async {
            let t = TestApp::spawn().await;
            t.terms("active", 200, 4, "10.00", None, 10).await;
            t
        });
        let mut runner = TestRunner::new(Config {
            cases,
            failure_persistence: None,
            ..Config::default()
        });
        runner
            .run(&strategy, |v| {
                check(&t, &rt, v);
                Ok(())
            })
            .unwrap();
        rt.block_on(async move { drop(t) });
    }

    /// Arbitrary JSON as a direct invocation: never a panic, never a 5xx.
    #[test]
    fn arbitrary_json_events() {
        run(1500, arb_json(), |t, rt, event| {
            match rt.block_on(t.invoke(event.clone())) {
                Ok(_) => {}
                Err(e) => {
                    assert!((400..500).contains(&e.status), "{event}: {}", e.message);
                    check_error_shape(&error_json(&e));
                }
            }
        });
    }

    /// Arbitrary JSON `data` for every job: validation answers 4xx, never 5xx.
    #[test]
    fn arbitrary_job_data() {
        let jobs = prop_oneof![
            Just("orchestrate"),
            Just("process-order"),
            Just("review-batch")
        ];
        run(1500, (jobs, arb_json()), |t, rt, (job, data)| {
            let event = json!({"jobType": job, "data": {"dryRun": true, "buyerId": BUYER_SUB, "x": data.clone()}});
            for event in [event, json!({"jobType": job, "data": data})] {
                if let Err(e) = rt.block_on(t.invoke(event.clone())) {
                    assert!((400..500).contains(&e.status), "{event}: {}", e.message);
                    check_error_shape(&error_json(&e));
                }
            }
        });
    }

    /// Arbitrary bytes as an HTTP body (plain or claimed base64), arbitrary
    /// headers and forged tokens: a proxy response with a 4xx and the error shape.
    #[test]
    fn arbitrary_http_bodies_and_tokens() {
        let token = prop_oneof![
            Just(None),
            ".{0,40}".prop_map(Some),
            Just(Some(format!("Bearer {}", admin_token()).replace("ey", "eY"))),
            Just(Some("Bearer eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJyb2xlIjoic2VydmljZV9yb2xlIiwiZXhwIjo5OTk5OTk5OTk5fQ.".to_owned())),
            Just(Some(format!("Bearer {}", token_with(json!({"role": "service_role", "exp": 9_999_999_999u64}), "forged-secret-that-is-long-enough!", jsonwebtoken::Algorithm::HS256)))),
        ];
        let body = prop::collection::vec(any::<u8>(), 0..300);
        let method = prop_oneof![
            Just("POST"),
            Just("GET"),
            Just("PUT"),
            Just("DELETE"),
            Just("PATCH")
        ];
        run(
            1500,
            (body, any::<bool>(), token, method, any::<bool>()),
            |t, rt, (bytes, b64, token, method, v1)| {
                use base64::Engine;
                let text = if b64 {
                    base64::engine::general_purpose::STANDARD.encode(&bytes)
                } else {
                    String::from_utf8_lossy(&bytes).into_owned()
                };
                let headers: Vec<(&str, &str)> = token
                    .as_deref()
                    .map(|t| vec![("authorization", t)])
                    .unwrap_or_default();
                let mut event = if v1 {
                    http_v1(method, Some(&text), &headers)
                } else {
                    http_v2(method, Some(&text), &headers)
                };
                event["isBase64Encoded"] = json!(b64);
                let resp = rt
                    .block_on(t.invoke(event))
                    .expect("HTTP always answers with a proxy response");
                let (status, body) = proxy(&resp);
                assert!((400..500).contains(&status), "{status} {body}");
                check_error_shape(&body);
            },
        );
    }

    /// Oversized bodies, deep nesting and huge numbers: clean 4xx.
    #[tokio::test]
    async fn edge_shapes() {
        let t = TestApp::spawn().await;
        let admin = bearer(&admin_token());
        let deep = format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000));
        let deep_obj = format!(
            "{{\"jobType\":\"orchestrate\",\"data\":{}}}",
            "{\"a\":".repeat(5000) + "1" + &"}".repeat(5000)
        );
        for body in [
            deep.as_str(),
            deep_obj.as_str(),
            r#"{"jobType":"orchestrate","data":{"limit":1e400}}"#,
            r#"{"jobType":"orchestrate","data":{"limit":18446744073709551616}}"#,
            r#"{"jobType":"process-order","data":{"quantity":-0.0}}"#,
            "{\"jobType\":\"orchestrate\u{0000}\"}",
            "\u{feff}{\"jobType\":\"orchestrate\"}",
        ] {
            let resp = t
                .invoke(http_v2("POST", Some(body), &[("authorization", &admin)]))
                .await
                .unwrap();
            let (status, err) = proxy(&resp);
            assert!(
                (400..500).contains(&status),
                "{status} for {}",
                &body[..body.len().min(60)]
            );
            check_error_shape(&err);
        }
        let huge = "x".repeat(10 * 1024 * 1024);
        let resp = t.invoke(http_v2("POST", Some(&huge), &[])).await.unwrap();
        assert_eq!(proxy(&resp).0, 413);
    }
}
