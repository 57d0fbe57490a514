//! The outbox delivered to EventBridge (behaviour §10), against a real local
//! EventBridge: moto, started by `scripts/with-moto.sh`, with a bus, rules
//! whose event patterns route to SQS queues, and the queues read back. Where
//! a test needs EventBridge to misbehave on purpose (refuse every other entry,
//! or let the test kill the publisher's connection mid-delivery), it speaks
//! the `PutEvents` protocol with a small endpoint of its own.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use aws_sdk_eventbridge::types::Target;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use uuid::Uuid;

use crate::helpers::*;

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
    let lines = t.metric_lines();
    let last: Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    assert!(last["PublishFailures"].as_u64().unwrap() >= 1, "{last}");
    assert_eq!(last["EventsPending"], 8);

    // EventBridge back: publish-events delivers all of them, each once.
    let back = t
        .another_instance(&[("EVENT_BUS_NAME", bus.name.as_str())])
        .await;
    let published = back.direct("publish-events", json!({})).await.unwrap();
    assert_eq!(
        published,
        json!({"success": true, "published": 8, "failed": 0, "pending": 0, "deliveryEnabled": true,
               "hasMore": false})
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

/// An EventBridge endpoint of the test's own: answers `PutEvents` accepting
/// entries or refusing every other one, records what it accepted, and can
/// run a hook (the test kills a connection there) before it answers.
#[derive(Clone, Default)]
struct FakeBus {
    refuse_every_other: Arc<AtomicBool>,
    accepted: Arc<Mutex<Vec<i64>>>,
    calls: Arc<AtomicUsize>,
    before_answer: Arc<Mutex<Option<tokio::sync::mpsc::UnboundedSender<()>>>>,
    answer_gate: Arc<Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<()>>>>,
}

impl FakeBus {
    async fn start(&self) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let me = self.clone();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let me = me.clone();
                tokio::spawn(async move { me.serve(conn).await });
            }
        });
        url
    }

    async fn serve(&self, mut conn: tokio::net::TcpStream) {
        loop {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 8192];
            let head_end = loop {
                if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break p + 4;
                }
                match conn.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            };
            let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap_or(0))
                })
                .unwrap_or(0);
            while buf.len() < head_end + length {
                match conn.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let request: Value =
                serde_json::from_slice(&buf[head_end..head_end + length]).unwrap_or(Value::Null);
            let call = self.calls.fetch_add(1, Ordering::SeqCst);
            let hook = self.before_answer.lock().unwrap().take();
            if let Some(hook) = hook {
                let _ = hook.send(());
                let gate = self.answer_gate.lock().unwrap().take();
                if let Some(mut gate) = gate {
                    gate.recv().await;
                }
            }
            let mut results = Vec::new();
            let mut failed = 0;
            for (i, entry) in request["Entries"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .enumerate()
            {
                let detail: Value = serde_json::from_str(entry["Detail"].as_str().unwrap_or("{}"))
                    .unwrap_or(Value::Null);
                let id = detail["eventId"].as_i64().unwrap_or(-1);
                if self.refuse_every_other.load(Ordering::SeqCst) && i % 2 == 1 {
                    failed += 1;
                    results
                        .push(json!({"ErrorCode": "InternalFailure", "ErrorMessage": "try again"}));
                } else {
                    self.accepted.lock().unwrap().push(id);
                    results.push(json!({"EventId": format!("fake-{call}-{i}")}));
                }
            }
            let body = json!({"FailedEntryCount": failed, "Entries": results}).to_string();
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            if conn.write_all(response.as_bytes()).await.is_err() {
                return;
            }
        }
    }

    fn accepted(&self) -> Vec<i64> {
        self.accepted.lock().unwrap().clone()
    }
}

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

#[tokio::test]
async fn refused_entries_stay_pending_and_the_rest_are_marked() {
    let fake = FakeBus::default();
    fake.refuse_every_other.store(true, Ordering::SeqCst);
    let url = fake.start().await;
    let t = app_on(
        "fake-bus",
        &[("AWS_ENDPOINT_URL_EVENTBRIDGE", url.as_str())],
    )
    .await;
    seed_pending(&t, 20).await;
    let answer = t.direct("publish-events", json!({})).await.unwrap();
    assert_eq!(answer["published"], 10);
    assert_eq!(answer["failed"], 10);
    assert_eq!(answer["pending"], 10);
    let accepted: HashSet<i64> = fake.accepted().into_iter().collect();
    let published: HashSet<i64> =
        t.db.query(
            "SELECT id FROM batch_events WHERE published_at IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        published, accepted,
        "exactly the accepted entries are marked"
    );

    // A too-large entry is never sent; it is set aside, the rest go out.
    fake.refuse_every_other.store(false, Ordering::SeqCst);
    t.db.execute(
        "INSERT INTO batch_events (batch_id, event_type, payload)
         VALUES (gen_random_uuid(), 'batch.confirmed', jsonb_build_object('blob', repeat('x', 300000)))",
        &[],
    )
    .await
    .unwrap();
    let answer = t.direct("publish-events", json!({})).await.unwrap();
    assert_eq!(answer["published"], 10);
    assert_eq!(answer["failed"], 1);
    assert_eq!(
        answer["pending"], 1,
        "the oversized row is still unpublished"
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
    let fake = FakeBus::default();
    let url = fake.start().await;
    let env = [("AWS_ENDPOINT_URL_EVENTBRIDGE", url.as_str())];
    let t = app_on("fake-bus", &env).await;
    seed_pending(&t, 5000).await;
    let mut instances = Vec::new();
    for _ in 0..4 {
        instances.push(
            t.another_instance(&[("EVENT_BUS_NAME", "fake-bus"), env[0]])
                .await,
        );
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
    let accepted = fake.accepted();
    let distinct: HashSet<i64> = accepted.iter().copied().collect();
    assert_eq!(
        (accepted.len(), distinct.len()),
        (5000, 5000),
        "every row delivered, none twice"
    );
    assert_eq!(pending(&t).await, 0);
}

#[tokio::test]
async fn a_connection_killed_between_send_and_mark_sends_the_row_again() {
    let fake = FakeBus::default();
    let (hook_tx, mut hook_rx) = tokio::sync::mpsc::unbounded_channel();
    let (gate_tx, gate_rx) = tokio::sync::mpsc::unbounded_channel();
    *fake.before_answer.lock().unwrap() = Some(hook_tx);
    *fake.answer_gate.lock().unwrap() = Some(gate_rx);
    let url = fake.start().await;
    let t = app_on(
        "fake-bus",
        &[("AWS_ENDPOINT_URL_EVENTBRIDGE", url.as_str())],
    )
    .await;
    seed_pending(&t, 3).await;
    let killer = {
        let url = t.url.clone();
        tokio::spawn(async move {
            hook_rx.recv().await;
            // The events reached EventBridge; the publisher's connection dies before it marks them.
            let c = connect(&url).await;
            c.batch_execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                  WHERE datname = current_database() AND pid <> pg_backend_pid()
                    AND application_name = 'batch-processor'",
            )
            .await
            .unwrap();
            let _ = gate_tx.send(());
        })
    };
    let first = t.direct("publish-events", json!({})).await;
    killer.await.unwrap();
    let err = first.expect_err("the publisher lost its connection");
    assert_eq!(err.status, 503);
    assert_eq!(pending(&t).await, 3, "nothing was marked");
    let second = t.direct("publish-events", json!({})).await.unwrap();
    assert_eq!(second["published"], 3);
    let accepted = fake.accepted();
    assert_eq!(
        accepted.len(),
        6,
        "each row sent twice: a duplicate, never a loss"
    );
    assert_eq!(accepted.iter().copied().collect::<HashSet<_>>().len(), 3);
    assert_eq!(pending(&t).await, 0);
}
