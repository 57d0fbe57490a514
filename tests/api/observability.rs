//! What operators see (behaviour §9): JSON log lines with the request id, personal
//! data masked wherever it appears, batch ids whole, one EMF line per job.

use std::sync::{Arc, Mutex};

use batch_processor::telemetry::metrics::MetricsSink;
use batch_processor::telemetry::{self, Capture, Format};
use batch_processor::Invocation;
use serde_json::{json, Value};
use tracing_subscriber::EnvFilter;

use crate::helpers::*;

const BUYER: &str = "550e8400-e29b-41d4-a716-446655440000";
const EMAIL: &str = "john.doe@example.com";
const SHORT_EMAIL: &str = "abc@example.com";
const PHONE: &str = "+8801234567890";
const OTHER_ID: &str = "7c9e6679-7425-40de-944b-e07fc1f90ae7";

/// Log lines captured as JSON at `filter`, and a migrated database with a
/// fresh app instance on it (its next invocation is a cold start) whose
/// metric lines are kept.
async fn observed(
    filter: &str,
) -> (
    Capture,
    tracing::subscriber::DefaultGuard,
    Arc<Mutex<Vec<String>>>,
    TestApp,
) {
    let capture = Capture::default();
    let guard = tracing::subscriber::set_default(telemetry::subscriber(
        Format::Json,
        EnvFilter::new(filter),
        capture.clone(),
    ));
    let metrics = Arc::new(Mutex::new(Vec::new()));
    let mut t = TestApp::spawn().await;
    t.app = batch_processor::App::new(settings(&t.url, &[]))
        .expect("app builds")
        .with_metrics(MetricsSink::Buffer(metrics.clone()));
    (capture, guard, metrics, t)
}

#[tokio::test]
async fn logs_are_json_with_personal_data_masked_and_one_metric_line_per_job() {
    let (capture, _logs, metrics, t) =
        observed("info,batch_processor=debug,tokio_postgres=warn").await;
    t.terms("active", 200, 4, "10.00", None, 10).await;

    // A process-order carrying personal data at several depths.
    let style = json!({"variant": "navy-m",
                       "contact": {"email": EMAIL, "backup": [SHORT_EMAIL, {"phone": PHONE}]},
                       "notes": format!("call {PHONE} or write {EMAIL}; ref {OTHER_ID}")});
    let placed = t
        .invoke_with(
            json!({"jobType": "process-order", "data": {"productCategory": "t-shirts", "productVariantBase": "crew",
                   "quantity": 50, "styleDetails": style.clone(), "buyerId": BUYER}}),
            &Invocation::new("req-order-1", None),
        )
        .await
        .unwrap();
    let batch = placed["batchId"].as_str().unwrap().to_owned();
    let order = placed["orderId"].as_str().unwrap().to_owned();

    // An invalid request that echoes the same data back into the logs.
    let err = t
        .invoke_with(
            json!({"jobType": "process-order", "data": {"productCategory": "t-shirts", "productVariantBase": "crew",
                   "quantity": 2.5, "styleDetails": style, "buyerId": BUYER}}),
            &Invocation::new("req-bad-2", None),
        )
        .await
        .unwrap_err();
    assert_eq!(err.status, 400);

    // An orchestrate with cancellations: the batch's window has closed at 25 %.
    t.db.execute(
        "UPDATE production_batches SET window_closes_at = now() - interval '1 minute' WHERE id = $1",
        &[&uuid::Uuid::parse_str(&batch).unwrap()],
    )
    .await
    .unwrap();
    let run = t
        .invoke_with(
            json!({"jobType": "orchestrate"}),
            &Invocation::new("req-orch-3", None),
        )
        .await
        .unwrap();
    assert_eq!(run["results"][0]["ordersCancelled"], 1);

    let text = capture.text();
    for raw in [
        EMAIL,
        "john.doe",
        SHORT_EMAIL,
        PHONE,
        "1234567890",
        BUYER,
        OTHER_ID,
        &order,
    ] {
        assert!(!text.contains(raw), "{raw} leaked into the logs:\n{text}");
    }
    for masked in [
        "joh***@example.com",
        "***@example.com",
        "+880****90",
        "550e8400-****",
        "7c9e6679-****",
    ] {
        assert!(text.contains(masked), "{masked} missing:\n{text}");
    }
    assert!(
        text.contains(&format!("{}-****", &order[..8])),
        "the order id, masked"
    );
    assert!(text.contains(&batch), "batch ids stay whole:\n{text}");

    let lines: Vec<Value> = capture
        .lines()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    // (The test database's own migrate ran before; its request id is not ours.)
    let summaries: Vec<&Value> = lines
        .iter()
        .filter(|l| l["message"] == "invocation finished")
        .filter(|l| {
            l["requestId"]
                .as_str()
                .is_some_and(|r| r.starts_with("req-"))
        })
        .collect();
    assert_eq!(summaries.len(), 3);
    for (s, (req, job, outcome)) in summaries.iter().zip([
        ("req-order-1", "process-order", "ok"),
        ("req-bad-2", "process-order", "400"),
        ("req-orch-3", "orchestrate", "ok"),
    ]) {
        assert_eq!(s["requestId"], req);
        assert_eq!(s["jobType"], job);
        assert_eq!(s["source"], "direct");
        assert_eq!(s["outcome"], outcome);
        assert!(s["durationMs"].is_u64());
    }
    assert_eq!(summaries[0]["ordersPlaced"], 1);
    assert_eq!(summaries[2]["cancelled"], 1);
    assert_eq!(summaries[2]["ordersCancelled"], 1);
    // Every line written during an invocation carries its request id.
    for l in lines
        .iter()
        .filter(|l| l["message"] != "invocation finished")
    {
        let id = l["span"]["requestId"].as_str().or(l["requestId"].as_str());
        assert!(id.is_some(), "{l}");
    }
    assert!(lines
        .iter()
        .any(|l| l["span"]["requestId"] == "req-order-1" && l["message"] == "order placed"));

    let metrics = metrics.lock().unwrap().clone();
    assert_eq!(metrics.len(), 3, "one EMF line per job");
    let emf: Vec<Value> = metrics
        .iter()
        .map(|m| serde_json::from_str(m).unwrap())
        .collect();
    for m in &emf {
        let def = &m["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(def["Namespace"], "BatchProcessor");
        assert_eq!(def["Dimensions"], json!([["JobType"]]));
        for d in def["Metrics"].as_array().unwrap() {
            let name = d["Name"].as_str().unwrap();
            assert!(m[name].is_u64(), "{name} in {m}");
        }
        assert!(m["_aws"]["Timestamp"].is_i64());
    }
    assert_eq!(
        (emf[0]["JobType"].as_str(), emf[0]["OrdersPlaced"].as_u64()),
        (Some("process-order"), Some(1))
    );
    assert_eq!(
        emf[1]["Errors"], 0,
        "a 400 is the caller's error, not the function's"
    );
    assert_eq!(
        (
            emf[2]["Cancelled"].as_u64(),
            emf[2]["OrdersCancelled"].as_u64()
        ),
        (Some(1), Some(1))
    );
}

/// A dry run reports what it would do but did nothing: its metrics count nothing.
#[tokio::test]
async fn a_dry_run_counts_no_actions_in_its_metrics() {
    let metrics = Arc::new(Mutex::new(Vec::new()));
    let mut t = TestApp::spawn().await;
    t.app = batch_processor::App::new(settings(&t.url, &[]))
        .unwrap()
        .with_metrics(MetricsSink::Buffer(metrics.clone()));
    t.batch(20, 200, -60.0).await;
    let dry = t.orchestrate(json!({"dryRun": true})).await;
    assert_eq!(
        dry["summary"]["cancelled"], 1,
        "the answer says what it would do"
    );
    let real = t.orchestrate(json!({})).await;
    assert_eq!(real["summary"]["cancelled"], 1);
    let lines: Vec<Value> = metrics
        .lock()
        .unwrap()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["Cancelled"], 0, "the dry run");
    assert_eq!(lines[1]["Cancelled"], 1, "the real run");
}

/// At `info` — what production logs — a request's free-form buyer data never
/// appears, not even masked: the `job request` line names the job, its plain
/// fields and the keys sent. The whole request is there only at `debug`.
#[tokio::test]
async fn at_info_the_request_line_carries_no_buyer_data() {
    let capture = Capture::default();
    let _logs = tracing::subscriber::set_default(telemetry::subscriber(
        Format::Json,
        EnvFilter::new("info,tokio_postgres=warn"),
        capture.clone(),
    ));
    let t = TestApp::spawn().await;
    t.terms("active", 200, 4, "10.00", None, 10).await;
    let style = json!({"variant": "sunset-orange-xl",
                       "notes": "ring 017 1234 5678 or (415) 555-0123, josé@exämple.com"});
    t.invoke_with(
        json!({"jobType": "process-order", "data": {"productCategory": "hoodies", "productVariantBase": "zip",
               "quantity": 7, "styleDetails": style, "buyerId": BUYER}}),
        &Invocation::new("req-info-1", None),
    )
    .await
    .unwrap();
    let text = capture.text();
    let request_line: Value = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["message"] == "job request" && v["span"]["requestId"] == "req-info-1")
        .expect("a job request line at info");
    let request = request_line["request"].as_str().unwrap();
    let summary: Value = serde_json::from_str(request).unwrap();
    assert_eq!(summary["productCategory"], "hoodies");
    assert_eq!(summary["quantity"], 7);
    assert_eq!(
        summary["keys"],
        json!([
            "buyerId",
            "productCategory",
            "productVariantBase",
            "quantity",
            "styleDetails"
        ])
    );
    for never in [
        "sunset-orange",
        "017 1234",
        "5678",
        "555-0123",
        "josé",
        "exämple",
        "\"notes\"",
    ] {
        assert!(!text.contains(never), "{never} reached the info logs");
    }
}

/// Every line of an invocation carries its X-Ray trace id, and the summary
/// and metric lines say where the time went: measured, not estimated.
#[tokio::test]
async fn every_line_carries_the_trace_id_and_the_summary_the_phase_timings() {
    // A fresh instance: its first invocation is a cold start.
    let (capture, _logs, metrics, t) =
        observed("info,batch_processor=debug,tokio_postgres=warn").await;
    t.terms("active", 200, 4, "10.00", None, 10).await;
    let trace = "Root=1-67d2a1b4-5d8f3c2e1a0b9c8d7e6f5a4b;Parent=53995c3f42cd8ad8;Sampled=1";
    let order =
        json!({"jobType": "process-order", "data": order_data("t-shirts", 10, "navy-m", BUYER)});
    t.invoke_with(
        order.clone(),
        &Invocation::new("req-trace-1", None).with_trace(trace),
    )
    .await
    .unwrap();
    t.invoke_with(
        order,
        &Invocation::new("req-trace-2", None).with_trace(trace),
    )
    .await
    .unwrap();

    let lines: Vec<Value> = capture
        .lines()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|l: &Value| l["span"]["requestId"] == "req-trace-1")
        .collect();
    assert!(
        lines.len() >= 3,
        "job request, order placed, summary: {lines:?}"
    );
    for l in &lines {
        assert_eq!(l["span"]["xrayTraceId"], trace, "{l}");
    }
    let summary = lines
        .iter()
        .find(|l| l["message"] == "invocation finished")
        .expect("a summary line");
    assert_eq!(summary["xrayTraceId"], trace);
    assert_eq!(summary["coldStart"], true);
    let ms = |k: &str| {
        summary[k]
            .as_u64()
            .unwrap_or_else(|| panic!("{k} in {summary}"))
    };
    assert!(ms("dbMs") >= 1, "statements ran: {summary}");
    assert!(ms("dbMs") <= ms("durationMs"));
    assert!(ms("connectMs") <= ms("durationMs"));
    assert_eq!(ms("secretMs"), 0, "DATABASE_URL: no secret to fetch");
    assert_eq!(ms("publishMs"), 0, "delivery is off");

    let emf: Vec<Value> = metrics
        .lock()
        .unwrap()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(emf.len(), 2);
    assert_eq!(emf[0]["ColdStart"], 1);
    assert_eq!(
        emf[1]["ColdStart"], 0,
        "the second invocation of the instance is warm"
    );
    assert_eq!(emf[0]["xrayTraceId"], trace);
    assert_eq!(emf[0]["dbMs"], summary["dbMs"]);
}
