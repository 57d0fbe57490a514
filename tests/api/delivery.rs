//! The outbox delivered to EventBridge (behaviour §10), against a real local
//! EventBridge: moto, started by `scripts/with-moto.sh`, with a bus, rules
//! whose event patterns route to SQS queues, and the queues read back. Where
//! a test needs EventBridge to behave like the real service — tens of
//! milliseconds a call, entries refused under throttling, a request never
//! answered — it uses a `PutEvents` endpoint of its own
//! (`crate::put_events`), programmed per test.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

use aws_sdk_eventbridge::types::Target;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::*;
use crate::put_events::{PutEvents, Refuse};

async fn sdk() -> aws_config::SdkConfig {
    assert!(
        std::env::var("AWS_ENDPOINT_URL").is_ok(),
        "AWS_ENDPOINT_URL is not set: run the suite with `make test` (it starts moto_server)"
    );
    aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await
}

/// A bus in moto with the template's consumers: admin alerts, refunds,
/// supplier notifications, and one queue that gets everything.
struct Bus {
    name: String,
    sqs: aws_sdk_sqs::Client,
    queues: HashMap<&'static str, String>,
}

impl Bus {
    async fn create() -> Self {
        let config = sdk().await;
        let eb = aws_sdk_eventbridge::Client::new(&config);
        let sqs = aws_sdk_sqs::Client::new(&config);
        let name = format!("bp-test-{}", Uuid::new_v4().simple());
        eb.create_event_bus()
            .name(&name)
            .send()
            .await
            .expect("create bus");
        let routes: [(&str, Value); 4] = [
            (
                "alerts",
                json!({"source": ["batch-processor"], "detail-type": ["batch.needs_review", "batch.nearing_target"]}),
            ),
            (
                "refunds",
                json!({"source": ["batch-processor"], "detail-type": ["order.refund_requested"]}),
            ),
            (
                "confirmed",
                json!({"source": ["batch-processor"], "detail-type": ["batch.confirmed"]}),
            ),
            ("all", json!({"source": ["batch-processor"]})),
        ];
        let mut queues = HashMap::new();
        for (route, pattern) in routes {
            let queue = sqs
                .create_queue()
                .queue_name(format!("{name}-{route}"))
                .send()
                .await
                .expect("create queue");
            let url = queue.queue_url().expect("queue url").to_owned();
            let arn = sqs
                .get_queue_attributes()
                .queue_url(&url)
                .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
                .send()
                .await
                .expect("queue arn")
                .attributes()
                .and_then(|a| {
                    a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn)
                        .cloned()
                })
                .expect("arn");
            eb.put_rule()
                .name(format!("{name}-{route}"))
                .event_bus_name(&name)
                .event_pattern(pattern.to_string())
                .send()
                .await
                .expect("rule");
            eb.put_targets()
                .rule(format!("{name}-{route}"))
                .event_bus_name(&name)
                .targets(
                    Target::builder()
                        .id(route)
                        .arn(arn)
                        .build()
                        .expect("target"),
                )
                .send()
                .await
                .expect("target");
            queues.insert(route, url);
        }
        Bus { name, sqs, queues }
    }

    /// Every event waiting in a queue (removed as read).
    async fn drain(&self, route: &str) -> Vec<Value> {
        let url = &self.queues[route];
        let mut out = Vec::new();
        loop {
            let got = self
                .sqs
                .receive_message()
                .queue_url(url)
                .max_number_of_messages(10)
                .send()
                .await
                .expect("receive");
            let messages = got.messages();
            if messages.is_empty() {
                return out;
            }
            for m in messages {
                out.push(serde_json::from_str(m.body().expect("body")).expect("event JSON"));
                self.sqs
                    .delete_message()
                    .queue_url(url)
                    .receipt_handle(m.receipt_handle().expect("handle"))
                    .send()
                    .await
                    .expect("delete");
            }
        }
    }
}

async fn app_on(bus: &str, extra: &[(&str, &str)]) -> TestApp {
    let mut env = vec![("EVENT_BUS_NAME", bus)];
    env.extend_from_slice(extra);
    TestApp::spawn_with(&env).await
}

async fn pending(t: &TestApp) -> i64 {
    t.count("SELECT count(*) FROM batch_events WHERE published_at IS NULL")
        .await
}

/// The metric lines written so far, parsed.
fn metrics(t: &TestApp) -> Vec<Value> {
    t.metric_lines()
        .iter()
        .map(|l| serde_json::from_str(l).expect("a JSON metric line"))
        .collect()
}

/// Delivery adds nothing to an answer: orchestrate's keys are the usual ones.
fn assert_orchestrate_keys(answer: &Value) {
    let keys: HashSet<&str> = answer
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    let usual = [
        "success",
        "processed",
        "evaluated",
        "hasMore",
        "results",
        "summary",
    ];
    assert_eq!(keys, HashSet::from(usual), "{answer}");
}

/// Batches of every tier, with paid and pending orders under the one to cancel.
async fn seed_every_tier(t: &TestApp) {
    let confirm = t.batch(160, 200, -3600.0).await;
    t.order(confirm, 160, "12.50", "paid").await;
    t.batch(120, 200, -3600.0).await; // needs review
    let cancel = t.batch(40, 200, -3600.0).await;
    t.order(cancel, 20, "12.50", "paid").await;
    t.order(cancel, 20, "12.50", "pending").await;
    t.batch(130, 200, 3600.0).await; // nearing target
}

#[tokio::test]
async fn every_event_arrives_where_its_rule_routes_it_and_is_marked_published() {
    let bus = Bus::create().await;
    let t = app_on(&bus.name, &[]).await;
    seed_every_tier(&t).await;
    let answer = t.orchestrate(json!({})).await;
    assert_orchestrate_keys(&answer);
    assert_eq!(pending(&t).await, 0, "nothing pending");

    let rows =
        t.db.query(
            "SELECT id, event_type, batch_id, order_id, payload FROM batch_events ORDER BY id",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        rows.len(),
        7,
        "confirmed, needs_review, cancelled + 2 orders + 1 refund, nearing"
    );
    let all = bus.drain("all").await;
    assert_eq!(all.len(), rows.len(), "each row once");
    let by_id: HashMap<i64, &Value> = all
        .iter()
        .map(|e| (e["detail"]["eventId"].as_i64().unwrap(), e))
        .collect();
    for r in &rows {
        let id: i64 = r.get(0);
        let event_type: String = r.get(1);
        let e = by_id
            .get(&id)
            .unwrap_or_else(|| panic!("event {id} delivered"));
        assert_eq!(e["source"], "batch-processor");
        assert_eq!(e["detail-type"], event_type.as_str());
        let d = &e["detail"];
        assert_eq!(d["eventType"], event_type.as_str());
        assert_eq!(d["batchId"], json!(r.get::<_, Uuid>(2)));
        assert_eq!(d["orderId"], json!(r.get::<_, Option<Uuid>>(3)));
        assert_eq!(d["payload"], r.get::<_, Value>(4));
        assert!(chrono::DateTime::parse_from_rfc3339(d["occurredAt"].as_str().unwrap()).is_ok());
    }
    let types = |events: &[Value]| -> Vec<String> {
        let mut v: Vec<String> = events
            .iter()
            .map(|e| e["detail-type"].as_str().unwrap().to_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        types(&bus.drain("alerts").await),
        ["batch.nearing_target", "batch.needs_review"]
    );
    let refunds = bus.drain("refunds").await;
    assert_eq!(types(&refunds), ["order.refund_requested"]);
    assert_eq!(refunds[0]["detail"]["payload"]["amount"], json!(250.0));
    assert_eq!(types(&bus.drain("confirmed").await), ["batch.confirmed"]);

    // The metrics say what delivery did.
    let lines = t.metric_lines();
    let last: Value = serde_json::from_str(lines.last().expect("a metric line")).unwrap();
    assert_eq!(last["EventsPublished"], 7);
    assert_eq!(last["PublishFailures"], 0);
    assert_eq!(last["EventsPending"], 0);
}

#[tokio::test]
async fn an_order_sends_order_placed_and_a_replay_sends_nothing() {
    let bus = Bus::create().await;
    let t = app_on(&bus.name, &[]).await;
    t.terms("active", 500, 4, "10.00", None, 10).await;
    let mut data = order_data("t-shirts", 20, "navy-m", BUYER_SUB);
    data["idempotencyKey"] = json!("placed-once");
    let placed = t.direct("process-order", data.clone()).await.unwrap();
    let events = bus.drain("all").await;
    assert_eq!(events.len(), 1);
    let d = &events[0]["detail"];
    assert_eq!(events[0]["detail-type"], "order.placed");
    assert_eq!(d["orderId"], placed["orderId"]);
    assert_eq!(d["batchId"], placed["batchId"]);
    assert_eq!(
        d["payload"],
        json!({"orderId": placed["orderId"], "batchId": placed["batchId"], "quantity": 20,
               "buyerPrice": 250.0, "isNewBatch": true})
    );
    let replay = t.direct("process-order", data).await.unwrap();
    assert_eq!(replay["idempotentReplay"], true);
    assert!(bus.drain("all").await.is_empty(), "a replay sends nothing");
    assert_eq!(t.count("SELECT count(*) FROM batch_events").await, 1);
    assert_eq!(pending(&t).await, 0);
}

#[tokio::test]
async fn eventbridge_down_changes_no_answer_and_a_later_run_delivers_everything_once() {
    let bus = Bus::create().await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let down = format!("http://127.0.0.1:{closed}");
    let t = app_on(
        &bus.name,
        &[("AWS_ENDPOINT_URL_EVENTBRIDGE", down.as_str())],
    )
    .await;
    seed_every_tier(&t).await;
    t.terms("active", 500, 4, "10.00", None, 10).await;

    let answer = t.orchestrate(json!({})).await;
    assert_eq!(answer["summary"]["confirmed"], 1);
    assert_eq!(answer["summary"]["cancelled"], 1);
    assert_orchestrate_keys(&answer);
    let order = t
        .direct(
            "process-order",
            order_data("hoodies", 5, "navy-m", BUYER_SUB),
        )
        .await
        .expect("process-order still answers 200");
    assert_eq!(order["success"], true);
    assert_eq!(pending(&t).await, 8, "every event stays pending");
    let lines = metrics(&t);
    let (run, order) = (&lines[0], &lines[1]);
    assert!(run["PublishFailures"].as_u64().unwrap() >= 1, "{run}");
    assert_eq!(run["EventsPending"], 7, "{run}");
    assert_eq!(order["PublishFailures"], 1, "{order}");
    assert!(
        order.get("EventsPending").is_none(),
        "the buyer's path counts no backlog: {order}"
    );

    // EventBridge back: publish-events delivers all of them, each once.
    let back = t
        .another_instance(&[("EVENT_BUS_NAME", bus.name.as_str())])
        .await;
    let published = back.direct("publish-events", json!({})).await.unwrap();
    assert_eq!(
        published,
        json!({"success": true, "published": 8, "failed": 0, "setAside": 0, "pending": 0,
               "deliveryEnabled": true, "hasMore": false})
    );
    let all = bus.drain("all").await;
    let ids: HashSet<i64> = all
        .iter()
        .map(|e| e["detail"]["eventId"].as_i64().unwrap())
        .collect();
    assert_eq!((all.len(), ids.len()), (8, 8));
    let again = back.direct("publish-events", json!({})).await.unwrap();
    assert_eq!(again["published"], 0);
    assert!(bus.drain("all").await.is_empty());
}

// ---- Against a PutEvents endpoint of our own -----------------------------------

/// An app delivering to `url`, each call bounded by 1 s (a hung call costs
/// that, not the 5 s default), with `extra` settings.
async fn app_at(url: &str, extra: &[(&str, &str)]) -> TestApp {
    let mut env = vec![
        ("AWS_ENDPOINT_URL_EVENTBRIDGE", url),
        ("PUBLISH_CALL_TIMEOUT_MS", "1000"),
    ];
    env.extend_from_slice(extra);
    app_on("fake-bus", &env).await
}

/// `n` pending rows, each of its own batch.
async fn seed_pending(t: &TestApp, n: i64) {
    t.db.execute(
        "INSERT INTO batch_events (batch_id, event_type, payload)
         SELECT gen_random_uuid(), 'batch.confirmed', jsonb_build_object('n', g)
           FROM generate_series(1::int8, $1::int8) g",
        &[&n],
    )
    .await
    .unwrap();
}

/// `n` pending rows over `batches` batches, interleaved (row g is batch g mod `batches`).
async fn seed_in_batches(t: &TestApp, n: i64, batches: i64) {
    t.db.execute(
        "INSERT INTO batch_events (batch_id, event_type, payload)
         SELECT md5('batch' || (g % $2))::uuid, 'order.cancelled', jsonb_build_object('n', g)
           FROM generate_series(1::int8, $1::int8) g",
        &[&n, &batches],
    )
    .await
    .unwrap();
}

async fn ids(t: &TestApp, sql: &str) -> Vec<i64> {
    column(&t.db, sql, &[]).await
}

/// What has passed of a row's backoff: the tests move the database's clock
/// for the rows instead of waiting.
async fn make_due(t: &TestApp) {
    t.db.execute(
        "UPDATE batch_events SET next_attempt_at = now() WHERE published_at IS NULL",
        &[],
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn a_refused_first_fifty_never_keep_the_rows_behind_them_waiting() {
    let bus = PutEvents::default();
    let url = bus.start().await;
    // One lane: the rows behind the refused ones come from later claims.
    let t = app_at(&url, &[("PUBLISH_CONCURRENCY", "1")]).await;
    seed_pending(&t, 100).await;
    let all = ids(&t, "SELECT id FROM batch_events ORDER BY id").await;
    let (first, rest) = all.split_at(50);
    bus.refuse(Refuse::Ids(first.iter().copied().collect()));

    let answer = t.direct("publish-events", json!({})).await.unwrap();
    assert_eq!(
        answer,
        json!({"success": true, "published": 50, "failed": 50, "setAside": 0, "pending": 50,
               "deliveryEnabled": true, "hasMore": true})
    );
    let mut accepted = bus.accepted();
    accepted.sort();
    assert_eq!(accepted, rest, "rows 51–100 went out");
    assert_eq!(bus.refused().len(), 50, "each refused row was sent once");
    assert_eq!(
        t.count(
            "SELECT count(*) FROM batch_events WHERE published_at IS NULL AND publish_attempts = 1
                AND next_attempt_at > now() AND leased_until IS NULL AND publish_error IS NULL"
        )
        .await,
        50,
        "refused rows wait out a backoff, their lease given back"
    );

    // Right away, a second run sends nothing: the throttled bus is not hammered.
    let calls = bus.calls().len();
    let again = t.direct("publish-events", json!({})).await.unwrap();
    assert_eq!(
        (again["published"].clone(), again["failed"].clone()),
        (json!(0), json!(0))
    );
    assert_eq!(again["pending"], 50, "still pending, not set aside");
    assert_eq!(
        bus.calls().len(),
        calls,
        "no call for rows that are not due"
    );

    // Once their backoff has passed, they go out.
    bus.refuse(Refuse::Nothing);
    make_due(&t).await;
    let later = t.direct("publish-events", json!({})).await.unwrap();
    assert_eq!(later["published"], 50);
    assert_eq!(pending(&t).await, 0);
}

#[tokio::test]
async fn no_transaction_is_open_while_a_call_is_in_flight() {
    let bus = PutEvents::default();
    let url = bus.start().await;
    let t = app_at(&url, &[]).await;
    seed_pending(&t, 30).await;
    bus.hold();
    let watch = async {
        bus.wait_in_flight(1).await;
        // The call is held: what do the function's sessions do meanwhile?
        let sessions =
            t.db.query(
                "SELECT state, xact_start IS NOT NULL, backend_xid IS NOT NULL,
                        (SELECT count(*) FROM pg_locks l WHERE l.pid = a.pid)
                   FROM pg_stat_activity a
                  WHERE datname = current_database() AND application_name = 'batch-processor'",
                &[],
            )
            .await
            .unwrap();
        assert!(!sessions.is_empty(), "the publisher is connected");
        for s in &sessions {
            let state: Option<String> = s.get(0);
            assert_eq!(
                state.as_deref(),
                Some("idle"),
                "no session idle in transaction"
            );
            assert!(
                !s.get::<_, bool>(1) && !s.get::<_, bool>(2),
                "no open transaction"
            );
            assert_eq!(s.get::<_, i64>(3), 0, "no lock held, no row lock");
        }
        assert_eq!(
            t.count("SELECT count(*) FROM batch_events WHERE leased_until > now()")
                .await,
            30,
            "the rows are leased instead"
        );
        bus.release();
    };
    let (answer, ()) = tokio::join!(t.direct("publish-events", json!({})), watch);
    assert_eq!(answer.unwrap()["published"], 30);
    assert_eq!(
        t.count("SELECT count(*) FROM batch_events WHERE leased_until IS NOT NULL")
            .await,
        0
    );
}

#[tokio::test]
async fn a_hung_endpoint_costs_seconds_and_changes_no_answer() {
    let bus = PutEvents::default();
    let url = bus.start().await;
    let t = app_at(&url, &[]).await;
    t.terms("active", 500, 4, "10.00", None, 10).await;
    seed_pending(&t, 25).await;
    bus.hang(true);

    let answer = t.direct("publish-events", json!({})).await.unwrap();
    assert_eq!(answer["success"], true);
    assert_eq!(answer["published"], 0);
    assert_eq!(answer["pending"], 25);
    assert!(answer["failed"].as_u64().unwrap() >= 1, "{answer}");
    bus.wait_hung(1).await;
    let line = metrics(&t).pop().unwrap();
    let spent = line["publishMs"].as_u64().unwrap();
    assert!(
        spent < 30_000,
        "bounded by the call timeout (1 s here), not PUBLISH_JOB_BUDGET_MS: {spent} ms"
    );
    // Nothing was refused: no attempt is burned, and the leases are given back.
    assert_eq!(
        t.count(
            "SELECT count(*) FROM batch_events
              WHERE publish_attempts = 0 AND leased_until IS NULL AND publish_error IS NULL"
        )
        .await,
        25
    );

    // The buyer and the orchestrator get their usual answers.
    let order = t
        .direct(
            "process-order",
            order_data("hoodies", 5, "navy-m", BUYER_SUB),
        )
        .await
        .expect("process-order answers");
    assert_eq!(order["success"], true);
    seed_every_tier(&t).await;
    assert_orchestrate_keys(&t.orchestrate(json!({})).await);
    assert_eq!(pending(&t).await, 25 + 1 + 7, "every event stays pending");
    assert_eq!(
        t.count("SELECT count(*) FROM batch_events WHERE leased_until IS NOT NULL OR publish_attempts > 0")
            .await,
        0
    );

    // Answering again, it gets everything.
    bus.hang(false);
    let back = t.direct("publish-events", json!({})).await.unwrap();
    assert_eq!(back["published"], 33);
    assert_eq!(pending(&t).await, 0);
}

/// Reads of `batch_events` (sequential scans, index entries) and its row
/// writes, from the statistics views.
async fn table_reads(t: &TestApp) -> (i64, i64, i64, i64) {
    t.db.batch_execute("SELECT pg_stat_clear_snapshot()")
        .await
        .unwrap();
    let r =
        t.db.query_one(
            "SELECT s.seq_scan, (SELECT sum(idx_tup_read)::int8 FROM pg_stat_user_indexes i
                                  WHERE i.relid = s.relid),
                    s.n_tup_ins, s.n_tup_upd
               FROM pg_stat_user_tables s WHERE s.relname = 'batch_events'",
            &[],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1), r.get(2), r.get(3))
}

#[tokio::test]
async fn a_backlog_of_50_000_undeliverable_rows_costs_the_buyer_nothing() {
    let bus = PutEvents::default();
    let url = bus.start().await;
    bus.refuse(Refuse::All);
    let t = app_at(&url, &[]).await;
    t.terms("active", 500, 4, "10.00", None, 10).await;
    seed_pending(&t, 50_000).await;
    t.db.batch_execute("ANALYZE batch_events").await.unwrap();
    // A first order prepares the statements.
    t.direct(
        "process-order",
        order_data("hoodies", 5, "navy-m", BUYER_SUB),
    )
    .await
    .unwrap();
    let wait_for = |ins: i64, upd: i64| {
        let t = &t;
        async move {
            loop {
                let now = table_reads(t).await;
                if now.2 >= ins && now.3 >= upd {
                    return now;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    // The statistics of a session arrive once it is idle (at most a second later).
    let before = wait_for(50_001, 2).await;

    let order = t
        .direct(
            "process-order",
            order_data("hoodies", 3, "navy-m", BUYER_SUB),
        )
        .await
        .unwrap();
    assert_eq!(order["success"], true);
    // Its insert, its lease and its refusal have been counted.
    let after = wait_for(before.2 + 1, before.3 + 2).await;
    assert_eq!(after.0 - before.0, 0, "no sequential scan of batch_events");
    let entries = after.1 - before.1;
    assert!(
        entries <= 10,
        "the order read {entries} index entries of batch_events, not the backlog"
    );
    let refused = bus.refused();
    assert_eq!(
        refused.len(),
        2,
        "each order sent its own order.placed only"
    );
    let line = metrics(&t).pop().unwrap();
    assert_eq!(line["JobType"], "process-order");
    assert_eq!(line["PublishFailures"], 1);
    assert!(line.get("EventsPending").is_none(), "{line}");
    assert!(line.get("OldestPendingEventAgeSeconds").is_none(), "{line}");
}

#[tokio::test]
async fn a_row_refused_too_often_is_set_aside_and_retry_set_aside_puts_it_back() {
    let bus = PutEvents::default();
    let url = bus.start().await;
    let t = app_at(&url, &[("PUBLISH_MAX_ATTEMPTS", "3")]).await;
    seed_pending(&t, 5).await;
    let poison = ids(&t, "SELECT min(id) FROM batch_events").await[0];
    t.db.execute(
        "UPDATE batch_events SET created_at = now() - interval '1 hour' WHERE id = $1",
        &[&poison],
    )
    .await
    .unwrap();
    bus.refuse(Refuse::Ids(HashSet::from([poison])));

    for run in 1..=3 {
        let answer = t.direct("publish-events", json!({})).await.unwrap();
        let line = metrics(&t).pop().unwrap();
        assert_eq!(answer["failed"], 1, "run {run}: {answer}");
        if run < 3 {
            assert_eq!(
                (answer["pending"].clone(), answer["setAside"].clone()),
                (json!(1), json!(0))
            );
            assert!(line["OldestPendingEventAgeSeconds"].as_u64().unwrap() >= 3600);
            assert_eq!(line["EventsSetAside"], 0);
        } else {
            // Set aside: no longer pending, so the oldest-pending alarm clears; counted.
            assert_eq!(
                (answer["pending"].clone(), answer["setAside"].clone()),
                (json!(0), json!(1))
            );
            assert_eq!(line["EventsSetAside"], 1);
            assert_eq!(line["EventsPending"], 0);
            assert_eq!(line["OldestPendingEventAgeSeconds"], 0);
        }
        make_due(&t).await;
    }
    assert_eq!(bus.refused(), vec![poison, poison, poison]);
    let row =
        t.db.query_one(
            "SELECT publish_attempts, publish_error FROM batch_events WHERE id = $1",
            &[&poison],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 3);
    let reason: String = row.get(1);
    assert!(
        reason.contains("refused it 3 times") && reason.contains("ThrottlingException"),
        "{reason}"
    );

    // Set aside, it is not tried again.
    let calls = bus.calls().len();
    let quiet = t.direct("publish-events", json!({})).await.unwrap();
    assert_eq!(quiet["failed"], 0);
    assert_eq!(bus.calls().len(), calls);

    // Fixed, an operator puts it back in line; the same run delivers it.
    bus.refuse(Refuse::Nothing);
    let retried = t
        .direct("publish-events", json!({"retrySetAside": true}))
        .await
        .unwrap();
    assert_eq!(
        retried,
        json!({"success": true, "published": 1, "failed": 0, "setAside": 0, "pending": 0,
               "deliveryEnabled": true, "hasMore": false, "requeued": 1})
    );
    assert_eq!(pending(&t).await, 0);
    let bad = t
        .direct("publish-events", json!({"retrySetAside": "yes"}))
        .await
        .unwrap_err();
    assert_eq!(bad.status, 400);
}

#[tokio::test]
async fn calls_in_flight_stay_within_publish_concurrency_and_a_batch_keeps_one_lane() {
    let bus = PutEvents::default();
    bus.set_latency(Duration::from_millis(20));
    let url = bus.start().await;
    let t = app_at(&url, &[("PUBLISH_CONCURRENCY", "4")]).await;
    seed_in_batches(&t, 1000, 40).await;
    let answer = t
        .direct("publish-events", json!({"limit": 1000}))
        .await
        .unwrap();
    assert_eq!(answer["published"], 1000);
    assert_eq!(pending(&t).await, 0);
    let peak = bus.peak_in_flight();
    assert!(
        peak <= 4,
        "at most PUBLISH_CONCURRENCY calls at once: {peak}"
    );
    assert!(peak >= 2, "calls did run side by side: {peak}");

    // Every row in one call, accepted and marked once.
    let calls = bus.calls();
    let sent: Vec<i64> = calls.iter().flat_map(|c| c.ids.clone()).collect();
    let distinct: HashSet<i64> = sent.iter().copied().collect();
    assert_eq!((sent.len(), distinct.len()), (1000, 1000));
    assert!(calls.iter().all(|c| c.ids.len() <= 10));
    assert_eq!(
        t.count("SELECT count(*) FROM batch_events WHERE published_at IS NOT NULL AND publish_attempts = 0")
            .await,
        1000
    );

    // One batch's rows: never in two calls at once, and in id order.
    let mut by_batch: BTreeMap<&str, Vec<(usize, i64)>> = BTreeMap::new();
    for (n, call) in calls.iter().enumerate() {
        for (id, batch) in call.ids.iter().zip(&call.batches) {
            by_batch.entry(batch).or_default().push((n, *id));
        }
    }
    assert_eq!(by_batch.len(), 40);
    for (batch, rows) in &by_batch {
        let ids: Vec<i64> = rows.iter().map(|r| r.1).collect();
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "{batch} in id order: {ids:?}"
        );
        let its: BTreeSet<usize> = rows.iter().map(|r| r.0).collect();
        for a in &its {
            for b in its.range(a + 1..) {
                assert!(
                    !calls[*a].overlaps(&calls[*b]),
                    "{batch}: calls {a} and {b} overlap"
                );
            }
        }
    }
}

#[tokio::test]
async fn refused_entries_wait_and_an_oversized_one_is_set_aside_at_once() {
    let bus = PutEvents::default();
    bus.refuse(Refuse::EveryOther);
    let url = bus.start().await;
    let t = app_at(&url, &[]).await;
    seed_pending(&t, 20).await;
    let answer = t.direct("publish-events", json!({})).await.unwrap();
    let published = answer["published"].as_u64().unwrap();
    assert_eq!(published + answer["failed"].as_u64().unwrap(), 20);
    assert_eq!(answer["pending"].as_u64().unwrap(), 20 - published);
    let accepted: HashSet<i64> = bus.accepted().into_iter().collect();
    let marked: HashSet<i64> = ids(
        &t,
        "SELECT id FROM batch_events WHERE published_at IS NOT NULL",
    )
    .await
    .into_iter()
    .collect();
    assert_eq!(marked, accepted, "exactly the accepted entries are marked");

    // A too-large entry is never sent; it is set aside, the rest go out.
    bus.refuse(Refuse::Nothing);
    make_due(&t).await;
    t.db.execute(
        "INSERT INTO batch_events (batch_id, event_type, payload)
         VALUES (gen_random_uuid(), 'batch.confirmed', jsonb_build_object('blob', repeat('x', 300000)))",
        &[],
    )
    .await
    .unwrap();
    let answer = t.direct("publish-events", json!({})).await.unwrap();
    assert_eq!(answer["published"].as_u64().unwrap(), 20 - published);
    assert_eq!(
        (answer["failed"].clone(), answer["setAside"].clone()),
        (json!(1), json!(1))
    );
    assert_eq!(
        answer["pending"], 0,
        "the oversized row is set aside, not pending"
    );
    assert_eq!(
        t.count("SELECT count(*) FROM batch_events WHERE publish_error LIKE '%EventBridge accepts at most%'").await,
        1
    );
    let again = t.direct("publish-events", json!({})).await.unwrap();
    assert_eq!(
        (again["published"].clone(), again["failed"].clone()),
        (json!(0), json!(0)),
        "not retried in a loop"
    );
}

#[tokio::test]
async fn four_concurrent_publishers_deliver_5000_rows_each_once() {
    let bus = PutEvents::default();
    bus.set_latency(Duration::from_millis(5));
    let url = bus.start().await;
    let env = [
        ("EVENT_BUS_NAME", "fake-bus"),
        ("AWS_ENDPOINT_URL_EVENTBRIDGE", url.as_str()),
    ];
    let t = app_on("fake-bus", &env[1..]).await;
    seed_pending(&t, 5000).await;
    let mut instances = Vec::new();
    for _ in 0..4 {
        instances.push(t.another_instance(&env).await);
    }
    let runs = futures::future::join_all(
        instances
            .iter()
            .map(|i| i.direct("publish-events", json!({"limit": 5000}))),
    )
    .await;
    let published: u64 = runs
        .iter()
        .map(|r| r.as_ref().unwrap()["published"].as_u64().unwrap())
        .sum();
    assert_eq!(published, 5000);
    assert!(
        runs.iter()
            .filter(|r| r.as_ref().unwrap()["published"].as_u64().unwrap() > 0)
            .count()
            >= 2,
        "they ran together"
    );
    let accepted = bus.accepted();
    let distinct: HashSet<i64> = accepted.iter().copied().collect();
    assert_eq!(
        (accepted.len(), distinct.len()),
        (5000, 5000),
        "every row delivered, none twice"
    );
    assert!(bus.peak_in_flight() <= 4 * 8, "each instance within its 8");
    assert_eq!(pending(&t).await, 0);
}

#[tokio::test]
async fn a_connection_killed_between_send_and_mark_sends_the_row_again() {
    let bus = PutEvents::default();
    let url = bus.start().await;
    let t = app_at(&url, &[]).await;
    seed_pending(&t, 3).await;
    bus.hold();
    let kill = async {
        bus.wait_in_flight(1).await;
        // The events reached EventBridge; the publisher's connection dies before it marks them.
        t.db.batch_execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
              WHERE datname = current_database() AND pid <> pg_backend_pid()
                AND application_name = 'batch-processor'",
        )
        .await
        .unwrap();
        bus.release();
    };
    let (first, ()) = tokio::join!(t.direct("publish-events", json!({})), kill);
    let err = first.expect_err("the publisher lost its connection");
    assert_eq!(err.status, 503);
    assert_eq!(pending(&t).await, 3, "nothing was marked");
    // Leased: no other run sends them while the lease lasts…
    let second = t.direct("publish-events", json!({})).await.unwrap();
    assert_eq!(second["published"], 0);
    // …and once it has run out (the test moves the clock), they go again.
    t.db.batch_execute("UPDATE batch_events SET leased_until = now() - interval '1 second'")
        .await
        .unwrap();
    let third = t.direct("publish-events", json!({})).await.unwrap();
    assert_eq!(third["published"], 3);
    let accepted = bus.accepted();
    assert_eq!(
        accepted.len(),
        6,
        "each row sent twice: a duplicate, never a loss"
    );
    assert_eq!(accepted.iter().copied().collect::<HashSet<_>>().len(), 3);
    assert_eq!(pending(&t).await, 0);
}

/// The function's least-privilege role (sql/function-role.sql) may do
/// everything delivery does: lease, mark, count refusals, set aside, requeue.
#[tokio::test]
async fn the_function_role_may_deliver_refuse_set_aside_and_requeue() {
    let bus = PutEvents::default();
    let url = bus.start().await;
    let t = app_at(&url, &[]).await;
    t.db.batch_execute(include_str!("../../sql/function-role.sql"))
        .await
        .expect("function role");
    let as_fn = t
        .url
        .replacen("postgres://postgres@", "postgres://batch_processor_fn@", 1);
    let f = t
        .another_instance(&[
            ("DATABASE_URL", as_fn.as_str()),
            ("EVENT_BUS_NAME", "fake-bus"),
            ("AWS_ENDPOINT_URL_EVENTBRIDGE", url.as_str()),
            ("PUBLISH_MAX_ATTEMPTS", "1"),
        ])
        .await;
    seed_pending(&t, 4).await;
    let first = ids(&t, "SELECT min(id) FROM batch_events").await[0];
    bus.refuse(Refuse::Ids(HashSet::from([first])));
    let answer = f.direct("publish-events", json!({})).await.unwrap();
    assert_eq!(
        (answer["published"].clone(), answer["setAside"].clone()),
        (json!(3), json!(1))
    );
    bus.refuse(Refuse::Nothing);
    let retried = f
        .direct("publish-events", json!({"retrySetAside": true}))
        .await
        .unwrap();
    assert_eq!(
        (retried["requeued"].clone(), retried["published"].clone()),
        (json!(1), json!(1))
    );
}
