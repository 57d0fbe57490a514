//! One CloudWatch Embedded Metric Format line per job (behaviour §9).
//!
//! The EMF specification: a JSON object whose `_aws` member declares, for a
//! timestamp in milliseconds, the namespace, the dimension sets and the metric
//! names and units; the values are top-level members of the same object.
//! CloudWatch Logs turns the line into metrics without any API call, which is
//! what a Lambda wants. No crate is needed for something this small.

use std::io::Write;
use std::sync::{Arc, Mutex};

use serde_json::{json, Map, Value};

use crate::domain::{Counts, Delivery};
use crate::telemetry::phases::Timings;

pub const NAMESPACE: &str = "BatchProcessor";

/// The metric line for one job. `job_type` is `unknown` when the request had none.
/// What one metric line says of one invocation.
#[derive(Debug, Clone, Copy)]
pub struct Line<'a> {
    /// `unknown` when the request had none.
    pub job_type: &'a str,
    pub counts: &'a Counts,
    pub delivery: Option<&'a Delivery>,
    pub duration_ms: u64,
    /// The answer was a 5xx.
    pub error: bool,
    /// The instance's first invocation.
    pub cold_start: bool,
    pub timings: Timings,
    pub request_id: &'a str,
    pub trace_id: Option<&'a str>,
}

/// Every metric name a line can carry (the dashboard and alarms may name only these).
pub const METRIC_NAMES: &[&str] = &[
    "Confirmed",
    "NeedsReview",
    "Cancelled",
    "NearingTarget",
    "Skipped",
    "Failed",
    "OrdersCancelled",
    "OrdersPlaced",
    "DurationMs",
    "Errors",
    "ColdStart",
    "EventsPublished",
    "PublishFailures",
    "EventsSetAside",
    "EventsPending",
    "OldestPendingEventAgeSeconds",
];

pub fn emf_line(l: &Line<'_>) -> String {
    let (job_type, counts, delivery, duration_ms, error, request_id) = (
        l.job_type,
        l.counts,
        l.delivery,
        l.duration_ms,
        l.error,
        l.request_id,
    );
    let mut metrics: Vec<(&str, u64, &str)> = vec![
        ("Confirmed", counts.confirmed, "Count"),
        ("NeedsReview", counts.needs_review, "Count"),
        ("Cancelled", counts.cancelled, "Count"),
        ("NearingTarget", counts.nearing_target, "Count"),
        ("Skipped", counts.skipped, "Count"),
        ("Failed", counts.failed, "Count"),
        ("OrdersCancelled", counts.orders_cancelled, "Count"),
        ("OrdersPlaced", counts.orders_placed, "Count"),
        ("DurationMs", duration_ms, "Milliseconds"),
        ("Errors", u64::from(error), "Count"),
        ("ColdStart", u64::from(l.cold_start), "Count"),
    ];
    // Outbox delivery (behaviour §10), when the job tried it; the backlog
    // only when the delivery read it (never on the buyer's path).
    if let Some(d) = delivery {
        metrics.extend([
            ("EventsPublished", d.published, "Count"),
            ("PublishFailures", d.failed, "Count"),
            ("EventsSetAside", d.set_aside, "Count"),
        ]);
        if let Some(b) = d.backlog {
            metrics.extend([
                ("EventsPending", b.pending, "Count"),
                (
                    "OldestPendingEventAgeSeconds",
                    b.oldest_pending_secs,
                    "Seconds",
                ),
            ]);
        }
    }
    let mut line = Map::new();
    line.insert(
        "_aws".into(),
        json!({
            "Timestamp": chrono::Utc::now().timestamp_millis(),
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [["JobType"]],
                "Metrics": metrics.iter().map(|(name, _, unit)| json!({"Name": name, "Unit": unit})).collect::<Vec<_>>(),
            }],
        }),
    );
    line.insert("JobType".into(), json!(job_type));
    for (name, value, _) in &metrics {
        line.insert((*name).into(), json!(value));
    }
    // Properties, not dimensions: from a metric to the logs and the trace, and
    // where the invocation's time went (behaviour §9).
    line.insert("requestId".into(), json!(request_id));
    if let Some(trace) = l.trace_id {
        line.insert("xrayTraceId".into(), json!(trace));
    }
    line.insert("secretMs".into(), json!(l.timings.secret_ms));
    line.insert("connectMs".into(), json!(l.timings.connect_ms));
    line.insert("dbMs".into(), json!(l.timings.db_ms));
    line.insert("publishMs".into(), json!(l.timings.publish_ms));
    Value::Object(line).to_string()
}

/// Where metric lines go: stdout on Lambda, stderr for the local `invoke`
/// command (whose stdout is the answer), or a buffer in tests.
#[derive(Clone)]
pub enum MetricsSink {
    Stdout,
    Stderr,
    Buffer(Arc<Mutex<Vec<String>>>),
}

impl MetricsSink {
    pub fn emit(&self, line: &str) {
        match self {
            MetricsSink::Stdout => {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{line}");
            }
            MetricsSink::Stderr => {
                let mut out = std::io::stderr().lock();
                let _ = writeln!(out, "{line}");
            }
            MetricsSink::Buffer(lines) => {
                if let Ok(mut l) = lines.lock() {
                    l.push(line.to_owned());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Backlog;

    #[test]
    fn emf_line_follows_the_specification() {
        let counts = Counts {
            confirmed: 2,
            cancelled: 1,
            orders_cancelled: 12,
            ..Counts::default()
        };
        let line = Line {
            job_type: "orchestrate",
            counts: &counts,
            delivery: None,
            duration_ms: 42,
            error: false,
            cold_start: true,
            timings: Timings {
                db_ms: 30,
                ..Timings::default()
            },
            request_id: "r-1",
            trace_id: Some("Root=1-5759e988-bd862e3fe1be46a994272793"),
        };
        let v: Value = serde_json::from_str(&emf_line(&line)).unwrap();
        assert_eq!(v["ColdStart"], 1);
        assert_eq!(v["dbMs"], 30);
        assert_eq!(v["xrayTraceId"], "Root=1-5759e988-bd862e3fe1be46a994272793");
        let with_delivery: Value = serde_json::from_str(&emf_line(&Line {
            delivery: Some(&Delivery {
                backlog: Some(Backlog::default()),
                ..Delivery::default()
            }),
            ..line
        }))
        .unwrap();
        let all: Vec<&str> = with_delivery["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["Name"].as_str().unwrap())
            .collect();
        assert_eq!(
            all, METRIC_NAMES,
            "METRIC_NAMES lists every metric a line can carry"
        );
        // A delivery that did not read the backlog (process-order's) says nothing of it.
        let buyers: Value = serde_json::from_str(&emf_line(&Line {
            delivery: Some(&Delivery {
                published: 1,
                ..Delivery::default()
            }),
            ..line
        }))
        .unwrap();
        assert_eq!(buyers["EventsPublished"], 1);
        assert_eq!(buyers["EventsSetAside"], 0);
        assert!(buyers.get("EventsPending").is_none(), "{buyers}");
        assert!(buyers.get("OldestPendingEventAgeSeconds").is_none());
        let aws = &v["_aws"];
        assert!(aws["Timestamp"].as_i64().unwrap() > 1_700_000_000_000);
        let cwm = &aws["CloudWatchMetrics"][0];
        assert_eq!(cwm["Namespace"], "BatchProcessor");
        assert_eq!(cwm["Dimensions"], json!([["JobType"]]));
        let names: Vec<&str> = cwm["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["Name"].as_str().unwrap())
            .collect();
        for name in &names {
            assert!(v[*name].is_u64(), "{name} has a numeric value");
        }
        assert_eq!(names.len(), 11);
        assert_eq!(v["JobType"], "orchestrate");
        assert_eq!(v["Confirmed"], 2);
        assert_eq!(v["OrdersCancelled"], 12);
        assert_eq!(v["DurationMs"], 42);
        assert_eq!(v["Errors"], 0);
    }
}
